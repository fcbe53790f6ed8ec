"""Bids and fill receipts (SPEC §6): the two signed messages of a trade.

A taker's node signs a ``Bid`` and sends it to the offer's owner; the owner
fills and answers with a ``Receipt`` it signs. Each is signed under its own
``kind`` (see ``signing``) so neither can be passed off as the other.

The bid names the ``maker`` it is meant for. The spec's field list does not
require it, but without it an owner who copied another owner's offer id could
forward a bid it received to that other owner and have it filled there.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, ClassVar

from nacl.signing import SigningKey

from p2p_offers import fields
from p2p_offers.fields import DocError
from p2p_offers.signing import public_hex, sign_doc, verify_doc

MAX_SEQ = 2**63 - 1
# An owner fills a bid only while its ``ts`` is within this of the owner's clock, either way:
# a bid cannot be held back and replayed later (nor dated ahead), and what an owner must
# remember of the bids it refused is bounded in time (``node/storage/refusals``).
BID_WINDOW_MS = 60_000
MAX_BID_BATCH = 64  # bids in one request to an owner: ~350 bytes each, well under 64 KiB


def in_window(ts: int, now_ms: int) -> bool:
    """``ts`` (a bid's) is close enough to ``now_ms`` to be filled."""
    return abs(ts - now_ms) <= BID_WINDOW_MS


class _SignedDoc:
    """Shared wire handling: a flat JSON object of the document's fields plus ``sig``."""

    __slots__ = ()
    KIND: ClassVar[str]
    signer_field: ClassVar[str]
    sig: str

    def doc(self) -> dict[str, Any]:
        """The signed fields (everything but ``sig``); all are flat, so no deep copy needed."""
        return {name: getattr(self, name) for name in _doc_keys(type(self))}

    def to_wire(self) -> dict[str, Any]:
        return {**self.doc(), "sig": self.sig}

    def verify(self) -> None:
        """Raise ``SignatureError`` unless the signer's key signed exactly these fields."""
        verify_doc(getattr(self, self.signer_field), self.KIND, self.doc(), self.sig)


_WIRE_KEYS: dict[type, frozenset[str]] = {}
_DOC_KEYS: dict[type, tuple[str, ...]] = {}


def _wire_keys(cls: type) -> frozenset[str]:
    keys = _WIRE_KEYS.get(cls)
    if keys is None:
        keys = _WIRE_KEYS[cls] = frozenset(f.name for f in dataclass_fields(cls))
    return keys


def _doc_keys(cls: type) -> tuple[str, ...]:
    keys = _DOC_KEYS.get(cls)
    if keys is None:
        keys = _DOC_KEYS[cls] = tuple(f.name for f in dataclass_fields(cls) if f.name != "sig")
    return keys


@dataclass(frozen=True, slots=True)
class Bid(_SignedDoc):
    KIND: ClassVar[str] = "bid"
    signer_field: ClassVar[str] = "taker"

    bid_id: str
    offer_id: str  # the record the taker saw; the owner may fill its live remainder
    offer_seq: int  # the version whose terms the taker accepted
    maker: str
    amount: int  # satoshis
    price: int  # cents per BTC the taker accepted
    taker: str
    ts: int
    sig: str

    @classmethod
    def from_wire(cls, data: object) -> Bid:
        d = fields.exact_keys(data, _wire_keys(cls))
        return cls(
            bid_id=fields.uuid4(d, "bid_id"),
            offer_id=fields.uuid4(d, "offer_id"),
            offer_seq=fields.integer(d, "offer_seq", 0, MAX_SEQ),
            maker=fields.public_key(d, "maker"),
            amount=fields.amount(d),
            price=fields.price(d),
            taker=fields.public_key(d, "taker"),
            ts=fields.millis(d, "ts"),
            sig=fields.signature(d),
        )


@dataclass(frozen=True, slots=True)
class Receipt(_SignedDoc):
    KIND: ClassVar[str] = "receipt"
    signer_field: ClassVar[str] = "maker"

    fill_id: str
    bid_id: str
    offer_id: str  # the record actually filled (may be a remainder of the one bid on)
    amount: int
    price: int
    maker: str
    taker: str
    remainder: str | None  # the open record left after this fill, None if none
    ts: int
    sig: str

    @classmethod
    def from_wire(cls, data: object) -> Receipt:
        d = fields.exact_keys(data, _wire_keys(cls))
        return cls(
            fill_id=fields.uuid4(d, "fill_id"),
            bid_id=fields.uuid4(d, "bid_id"),
            offer_id=fields.uuid4(d, "offer_id"),
            amount=fields.amount(d),
            price=fields.price(d),
            maker=fields.public_key(d, "maker"),
            taker=fields.public_key(d, "taker"),
            remainder=fields.uuid4(d, "remainder", nullable=True),
            ts=fields.millis(d, "ts"),
            sig=fields.signature(d),
        )

    def check_answers(self, bid: Bid, part: bool = False) -> None:
        """A receipt must settle exactly the bid sent: same bid, parties, amount and price.

        With ``part`` (a bid its owner held pending, whose accept may take less) the
        amount may be smaller than the bid's, never larger.
        """
        for name in ("bid_id", "maker", "taker", "price") if part else _ANSWERS:
            if getattr(self, name) != getattr(bid, name):
                raise DocError(f"receipt {name} does not match the bid")
        if part and self.amount > bid.amount:
            raise DocError("receipt amount is more than the bid's")


_ANSWERS = ("bid_id", "maker", "taker", "amount", "price")


def make_bid(
    key: SigningKey,
    *,
    offer_id: str,
    offer_seq: int,
    maker: str,
    amount: int,
    price: int,
    now_ms: int,
    bid_id: str | None = None,
) -> Bid:
    doc: dict[str, Any] = {
        "bid_id": bid_id or fields.new_id(),
        "offer_id": offer_id,
        "offer_seq": offer_seq,
        "maker": maker,
        "amount": amount,
        "price": price,
        "taker": public_hex(key),
        "ts": now_ms,
    }
    return Bid(**doc, sig=sign_doc(key, Bid.KIND, doc))


def make_receipt(
    key: SigningKey,
    bid: Bid,
    *,
    offer_id: str,
    remainder: str | None,
    now_ms: int,
    fill_id: str | None = None,
    amount: int | None = None,
) -> Receipt:
    """The maker's signed word that ``bid`` was filled on record ``offer_id`` at bid's terms.

    ``amount``: a manual accept for part of the bid (the taker takes a receipt for less
    only for a bid the owner held pending; see ``Receipt.check_answers``).
    """
    doc: dict[str, Any] = {
        "fill_id": fill_id or fields.new_id(),
        "bid_id": bid.bid_id,
        "offer_id": offer_id,
        "amount": bid.amount if amount is None else amount,
        "price": bid.price,
        "maker": public_hex(key),
        "taker": bid.taker,
        "remainder": remainder,
        "ts": now_ms,
    }
    return Receipt(**doc, sig=sign_doc(key, Receipt.KIND, doc))
