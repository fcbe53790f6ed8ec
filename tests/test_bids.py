"""Bids and receipts: signed, strictly parsed, bound to their kind and their parties."""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from p2p_offers import bids
from p2p_offers.fields import DocError, new_id
from p2p_offers.signing import SignatureError, public_hex, sign_doc

TAKER = SigningKey(b"\x02" * 32)
MAKER = SigningKey(b"\x03" * 32)


def a_bid(**kw: object) -> bids.Bid:
    args = {
        "offer_id": new_id(),
        "offer_seq": 1,
        "maker": public_hex(MAKER),
        "amount": 5_000,
        "price": 3_000_000,
        "now_ms": 1_700_000_000_000,
    }
    return bids.make_bid(TAKER, **{**args, **kw})  # type: ignore[arg-type]


def test_bid_roundtrip_and_verify() -> None:
    bid = a_bid()
    again = bids.Bid.from_wire(bid.to_wire())
    assert again == bid
    again.verify()
    assert bid.taker == public_hex(TAKER)


def test_tampered_bid_fails_verification() -> None:
    wire = a_bid().to_wire()
    wire["amount"] += 1
    with pytest.raises(SignatureError):
        bids.Bid.from_wire(wire).verify()


def test_bid_signature_cannot_pass_as_a_receipt() -> None:
    """Domain separation: the same fields signed as a bid do not verify as a receipt."""
    bid = a_bid()
    receipt = bids.make_receipt(MAKER, bid, offer_id=bid.offer_id, remainder=None, now_ms=1)
    doc = receipt.doc()
    forged = bids.Receipt(**doc, sig=sign_doc(MAKER, "bid", doc))
    with pytest.raises(SignatureError):
        forged.verify()


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": 0},
        {"amount": True},
        {"price": "1"},
        {"offer_seq": -1},
        {"bid_id": "x"},
        {"maker": "zz"},
        {"sig": "00"},
        {"extra": 1},
    ],
)
def test_bid_parse_rejects_malformed(changes: dict[str, object]) -> None:
    with pytest.raises(DocError):
        bids.Bid.from_wire({**a_bid().to_wire(), **changes})


def test_bid_parse_rejects_missing_fields_and_non_objects() -> None:
    wire = a_bid().to_wire()
    del wire["ts"]
    for junk in (wire, [], "bid", None):
        with pytest.raises(DocError):
            bids.Bid.from_wire(junk)


def test_receipt_roundtrip_verify_and_match() -> None:
    bid = a_bid()
    rem = new_id()
    receipt = bids.make_receipt(MAKER, bid, offer_id=new_id(), remainder=rem, now_ms=7)
    again = bids.Receipt.from_wire(receipt.to_wire())
    assert again == receipt
    again.verify()
    again.check_answers(bid)
    assert (again.maker, again.taker, again.remainder) == (public_hex(MAKER), bid.taker, rem)

    other = a_bid(amount=1)
    with pytest.raises(DocError):
        again.check_answers(other)


def test_receipt_signed_by_someone_else_fails() -> None:
    bid = a_bid()
    receipt = bids.make_receipt(TAKER, bid, offer_id=bid.offer_id, remainder=None, now_ms=1)
    lying = bids.Receipt(**{**receipt.doc(), "maker": public_hex(MAKER)}, sig=receipt.sig)
    with pytest.raises(SignatureError):
        lying.verify()
