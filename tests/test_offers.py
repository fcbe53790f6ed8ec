"""The offer document and its lifecycle: pure, so checked exhaustively here."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers import offers, records
from p2p_offers.codec import canonical_json
from p2p_offers.fields import DocError, is_uuid4, new_id
from p2p_offers.offers import FILLED, OPEN, SignedOffer, TransitionError
from p2p_offers.records import Record, RecordError

NOW = 1_700_000_000_000
TTL = 600_000
TAKER = "ab" * 32
KEY = SigningKey(b"\x01" * 32)


def an_offer(**changes: object) -> offers.Offer:
    offer = offers.create("sell", 3_000_000, 100_000_000, NOW, TTL)
    return offers.Offer(**{**offer.to_doc(), "fill": None, **changes})  # type: ignore[arg-type]


def test_create_is_open_with_placement_priority() -> None:
    offer = offers.create("buy", 123_45, 5_000, NOW, TTL)
    assert (offer.status, offer.priority, offer.created, offer.expires) == (
        OPEN,
        NOW,
        NOW,
        NOW + TTL,
    )
    assert offer.parent is None and offer.fill is None
    assert offers.parse(offer.to_json()) == offer


@pytest.mark.parametrize(
    ("side", "price", "amount", "ttl"),
    [("hold", 1, 1, 1), ("buy", 0, 1, 1), ("buy", 1, 0, 1), ("buy", 1, 1, 0), ("buy", -5, 1, 1)],
)
def test_create_rejects_bad_terms(side: str, price: int, amount: int, ttl: int) -> None:
    with pytest.raises(TransitionError):
        offers.create(side, price, amount, NOW, ttl)


def test_full_fill_closes_the_offer() -> None:
    offer = an_offer()
    filled, rest = offer.fill_with(new_id(), offer.amount, TAKER, NOW + 1, new_id())
    assert rest is None
    assert filled.status == FILLED and filled.fill is not None
    assert filled.fill.remainder is None and filled.fill.amount == offer.amount
    assert offers.parse(filled.to_json()) == filled


def test_partial_fill_opens_a_remainder_that_keeps_priority_and_expiry() -> None:
    offer = an_offer()
    rid = new_id()
    filled, rest = offer.fill_with(new_id(), 30, TAKER, NOW + 5, rid)
    assert rest is not None and filled.fill is not None
    assert filled.fill.remainder == rid == rest.id
    assert (rest.parent, rest.priority, rest.expires) == (offer.id, offer.priority, offer.expires)
    assert rest.amount == offer.amount - 30 and rest.status == OPEN and rest.created == NOW + 5
    assert offers.parse(rest.to_json()) == rest


@pytest.mark.parametrize("amount", [0, -1, 100_000_001])
def test_fill_rejects_amounts_outside_the_offer(amount: int) -> None:
    with pytest.raises(TransitionError) as exc:
        an_offer().fill_with(new_id(), amount, TAKER, NOW, new_id())
    assert exc.value.code == "insufficient_amount"


def test_closed_offers_accept_no_transition() -> None:
    for closed in (an_offer().cancel(), an_offer().fill_with(new_id(), 1, TAKER, NOW, new_id())[0]):
        for change in (
            closed.cancel,
            lambda c=closed: c.refresh(NOW, TTL),
            lambda c=closed: c.update(NOW, price=1),
            lambda c=closed: c.fill_with(new_id(), 1, TAKER, NOW, new_id()),
        ):
            with pytest.raises(TransitionError) as exc:
                change()
            assert exc.value.code == "offer_not_open"


def test_update_priority_rules() -> None:
    offer = an_offer()
    later = NOW + 10
    assert offer.update(later, amount=offer.amount - 1).priority == offer.priority
    assert offer.update(later, amount=offer.amount + 1).priority == later
    assert offer.update(later, price=offer.price + 1).priority == later
    with pytest.raises(TransitionError):
        offer.update(later, price=0)


def test_refresh_only_extends() -> None:
    offer = an_offer()
    assert offer.refresh(NOW + 300_000, TTL).expires == NOW + 900_000
    assert offer.refresh(NOW - 10**9, TTL).expires == offer.expires


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_fill_chain_conserves_amount_and_priority(bids: list[int]) -> None:
    """Whatever the sequence of partial fills, filled + open == offered, never more."""
    total = 400
    live: offers.Offer | None = an_offer(amount=total)
    filled_sum = 0
    for i, want in enumerate(bids):
        if live is None:
            break
        if want > live.amount:
            with pytest.raises(TransitionError):
                live.fill_with(new_id(), want, TAKER, NOW + i, new_id())
            continue
        filled, rest = live.fill_with(new_id(), want, TAKER, NOW + i, new_id())
        assert filled.fill is not None
        filled_sum += filled.fill.amount
        if rest is not None:
            assert rest.priority == NOW and rest.parent == filled.id
            assert filled.fill.amount + rest.amount == filled.amount
        live = rest
    assert filled_sum + (live.amount if live else 0) == total


# -- parsing untrusted documents ------------------------------------------------------------


def mutate(doc: dict[str, object], **changes: object) -> bytes:
    return canonical_json({**doc, **changes})


GOOD = an_offer().to_doc()
FILLED_DOC = an_offer().fill_with(new_id(), 10, TAKER, NOW, new_id())[0].to_doc()


@pytest.mark.parametrize(
    "v",
    [
        b"",
        b"[]",
        b'{"id":1}',
        json.dumps(GOOD).encode(),  # not canonical (spaces)
        mutate(GOOD, pair="ETH/USD"),
        mutate(GOOD, side="hold"),
        mutate(GOOD, price=True),
        mutate(GOOD, price=0),
        mutate(GOOD, amount=-1),
        mutate(GOOD, amount=21_000_000 * 10**8 + 1),
        mutate(GOOD, id="not-a-uuid"),
        mutate(GOOD, id=GOOD["id"].upper()),  # type: ignore[attr-defined]
        mutate(GOOD, id="00000000-0000-1000-8000-000000000000"),  # uuid1
        mutate(GOOD, parent=GOOD["id"]),
        mutate(GOOD, status="done"),
        mutate(GOOD, status="filled"),  # filled without a fill
        mutate(GOOD, expires=GOOD["created"]),
        mutate(GOOD, extra=1),
        mutate({k: v for k, v in GOOD.items() if k != "side"}),
        mutate(FILLED_DOC, status="open"),
        mutate(FILLED_DOC, fill={**FILLED_DOC["fill"], "amount": 10**9}),  # type: ignore[dict-item]
        mutate(FILLED_DOC, fill={**FILLED_DOC["fill"], "remainder": None}),  # type: ignore[dict-item]
        mutate(FILLED_DOC, fill={**FILLED_DOC["fill"], "taker": "XY" * 32}),  # type: ignore[dict-item]
        mutate(FILLED_DOC, fill={**FILLED_DOC["fill"], "x": 1}),  # type: ignore[dict-item]
        b'{"amount":1.5}',
    ],
)
def test_parse_rejects_malformed(v: bytes) -> None:
    with pytest.raises(DocError):
        offers.parse(v)


@given(st.dictionaries(st.sampled_from(sorted(GOOD)), st.none() | st.integers() | st.text()))
def test_parse_never_crashes_on_junk(changes: dict[str, object]) -> None:
    with contextlib.suppress(DocError):
        offers.parse(mutate(GOOD, **changes))


# -- signed versions ----------------------------------------------------------------------


def test_signed_offer_roundtrip_and_checks() -> None:
    offer = an_offer()
    signed = offers.sign(KEY, offer, 3)
    again = SignedOffer.from_record(Record.from_json(signed.record.to_json()))
    assert again == signed
    assert again.owner == bytes(KEY.verify_key).hex() and again.seq == 3 and again.id == offer.id

    other = records.sign(KEY, offer.to_json(), 3, new_id().encode())  # salt is not the id
    with pytest.raises(DocError):
        SignedOffer.from_record(other)

    forged = Record(signed.record.v, signed.record.k, signed.record.salt, 4, signed.record.sig)
    with pytest.raises(RecordError):
        SignedOffer.from_record(forged)

    with pytest.raises(DocError):
        SignedOffer.from_record(Record(v=offer.to_json()))


@given(
    st.sampled_from(["buy", "sell"]),
    st.integers(1, 10**12),
    st.integers(1, 21 * 10**14),
    st.booleans(),
)
def test_offer_encoding_is_the_codecs_canonical_json(side, price, amount, filled) -> None:
    offer = offers.create(side, price, amount, NOW, TTL)
    if filled:
        offer = offer.fill_with(new_id(), max(1, amount // 3), TAKER, NOW, new_id())[0]
    assert offer.to_json() == canonical_json(offer.to_doc())
    assert offers.parse(offer.to_json()) == offer


@given(st.uuids())
def test_uuid4_pattern_agrees_with_the_uuid_module(value) -> None:
    text = str(value)
    assert is_uuid4(text) == (value.version == 4)
    assert not is_uuid4(text.upper()) or text == text.upper()


def test_which_records_end_their_chain() -> None:
    offer = an_offer()
    partial, rest = offer.fill_with(new_id(), 1, TAKER, NOW, new_id())
    full, _ = offer.fill_with(new_id(), offer.amount, TAKER, NOW, new_id())
    assert not offer.ends_chain and not partial.ends_chain and rest is not None
    assert full.ends_chain and offer.cancel().ends_chain


# -- #9.1 accept and min_amount -------------------------------------------------------------


def test_old_records_without_accept_or_min_parse_as_auto_with_no_minimum() -> None:
    offer = offers.create("sell", 3_000_000, 100_000_000, NOW, TTL)
    v = offer.to_json()
    assert b"accept" not in v and b"min_amount" not in v  # byte-identical to before #9.1
    parsed = offers.parse(v)
    assert parsed.accept == offers.Accept.AUTO and parsed.min_amount is None
    assert parsed.smallest_take == 1


def test_manual_and_min_are_signed_and_survive_a_round_trip() -> None:
    offer = offers.create(
        "buy", 3_000_000, 100_000_000, NOW, TTL, accept="manual", min_amount=10_000_000
    )
    signed = offers.sign(KEY, offer, 1)
    again = SignedOffer.from_record(signed.record)
    assert again.offer.manual and again.offer.min_amount == 10_000_000


@pytest.mark.parametrize(
    "extra",
    [
        {"accept": "auto"},  # the default has one spelling: left out
        {"accept": "sometimes"},
        {"min_amount": 0},
        {"min_amount": -5},
        {"min_amount": "1"},
        {"min_amount": None},
        {"min_amount": True},
    ],
)
def test_parse_is_strict_about_accept_and_min(extra: dict[str, object]) -> None:
    doc = {**offers.create("sell", 3_000_000, 100_000_000, NOW, TTL).to_doc(), **extra}
    with pytest.raises(DocError):
        offers.parse(canonical_json(doc))


def test_create_refuses_bad_accept_or_min() -> None:
    with pytest.raises(TransitionError):
        offers.create("sell", 3_000_000, 100, NOW, TTL, accept="sometimes")
    with pytest.raises(TransitionError):
        offers.create("sell", 3_000_000, 100, NOW, TTL, min_amount=0)


def test_a_remainder_inherits_accept_and_min_and_below_it_goes_only_whole() -> None:
    offer = offers.create("sell", 3_000_000, 100, NOW, TTL, accept="manual", min_amount=40)
    assert offer.smallest_take == 40
    _, rest = offer.fill_with(new_id(), 70, TAKER, NOW + 1, new_id())
    assert rest is not None and rest.manual and rest.min_amount == 40
    assert rest.amount == 30 and rest.smallest_take == 30  # min(min_amount, amount)
