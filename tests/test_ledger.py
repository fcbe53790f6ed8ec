"""Ledger feeds: chains verify, every tampered field is caught, forks and gaps are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers.ledger import (
    Feed,
    ForkError,
    LedgerError,
    append,
    entry_hash,
    verify_entry,
    verify_receipt_signature,
)
from p2p_offers.signing import public_hex, sign_doc

MAKER = SigningKey(bytes(range(32)))
TAKER = SigningKey(bytes(range(1, 33)))
OTHER = SigningKey(bytes(range(2, 34)))


def receipt(key: SigningKey, n: int, **changes: Any) -> dict[str, Any]:
    """A fill receipt as the node signs it (the fields are the node's, per SPEC §6)."""
    doc = {
        "fill_id": f"fill-{n}",
        "bid_id": f"bid-{n}",
        "offer_id": f"offer-{n}",
        "amount": 1000 + n,
        "price": 5_000_000 + n,
        "maker": public_hex(key),
        "taker": public_hex(TAKER),
        "remainder": None,
        "ts": 1_700_000_000_000 + n,
    }
    doc.update(changes)
    doc["sig"] = sign_doc(key, "receipt", doc)
    return doc


def chain(key: SigningKey, n: int, first: int = 0) -> list[dict[str, Any]]:
    feed = Feed(public_hex(key))
    return [feed.append(key, receipt(key, first + i), 1_700_000_000_000 + i) for i in range(n)]


CHAIN = chain(MAKER, 5)
CHAIN_8 = chain(MAKER, 8)


def test_chain_links_and_verifies() -> None:
    assert CHAIN[0]["height"] == 1 and CHAIN[0]["prev"] == ""
    for prev, entry in zip([None, *CHAIN], CHAIN, strict=False):
        verify_entry(entry, prev)
        if prev is not None:
            assert entry["prev"] == entry_hash(prev)
            assert entry["height"] == prev["height"] + 1
    feed = Feed(public_hex(MAKER))
    assert (feed.height, feed.head, feed.head_hash) == (0, None, "")
    assert feed.extend(CHAIN) == 5
    assert feed.height == 5 and feed.head == CHAIN[-1]
    assert feed.head_hash == entry_hash(CHAIN[-1]) and len(feed.head_hash) == 64
    assert feed.entries_from(4) == CHAIN[3:]
    assert feed.entries_from(0) == CHAIN
    assert feed.entries_from(6) == []


def test_entry_hash_covers_the_signature() -> None:
    other = dict(CHAIN[0], sig="00" * 64)
    assert entry_hash(other) != entry_hash(CHAIN[0])


TAMPERS = {
    "owner": lambda e: e.update(owner=public_hex(OTHER)),
    "height": lambda e: e.update(height=e["height"] + 1),
    "prev": lambda e: e.update(prev="ab" * 32),
    "ts": lambda e: e.update(ts=e["ts"] + 1),
    "sig": lambda e: e.update(sig=("0" if e["sig"][0] != "0" else "1") + e["sig"][1:]),
    "receipt amount": lambda e: e["receipt"].update(amount=e["receipt"]["amount"] + 1),
    "receipt maker": lambda e: e["receipt"].update(maker=public_hex(OTHER)),
    "receipt dropped field": lambda e: e["receipt"].pop("taker"),
    "extra field": lambda e: e.update(note="hi"),
    "missing field": lambda e: e.pop("ts"),
    "bool height": lambda e: e.update(height=True),
    "float ts": lambda e: e.update(ts=float(e["ts"])),
    "float in receipt": lambda e: e["receipt"].update(amount=1.5),
    "string height": lambda e: e.update(height="3"),
    "uppercase sig": lambda e: e.update(sig=e["sig"].upper()),
    "receipt not a dict": lambda e: e.update(receipt=[1, 2]),
    "negative ts": lambda e: e.update(ts=-1),
}


@pytest.mark.parametrize("name", sorted(TAMPERS))
@pytest.mark.parametrize("at", [0, 2])
def test_every_tampered_field_is_detected(name: str, at: int) -> None:
    entry = copy.deepcopy(CHAIN[at])
    TAMPERS[name](entry)
    prev = CHAIN[at - 1] if at else None
    with pytest.raises(LedgerError):
        verify_entry(entry, prev)
    feed = Feed(public_hex(MAKER))
    feed.extend(CHAIN[:at])
    with pytest.raises(LedgerError):
        feed.extend([entry])
    assert feed.height == at


def test_tampering_an_entry_breaks_the_next_link() -> None:
    forged = copy.deepcopy(CHAIN[1])
    forged["ts"] += 1
    with pytest.raises(LedgerError, match="prev hash"):
        verify_entry(CHAIN[2], forged)


def test_wrong_predecessor_is_refused() -> None:
    with pytest.raises(LedgerError, match="does not follow"):
        verify_entry(CHAIN[3], CHAIN[1])
    with pytest.raises(LedgerError, match="no previous entry"):
        verify_entry(CHAIN[1], None)
    with pytest.raises(LedgerError, match="another owner"):
        verify_entry(CHAIN[1], chain(OTHER, 1)[0])


def test_receipt_signature_is_checked_by_the_hook() -> None:
    bad = receipt(MAKER, 9)
    bad["amount"] += 1  # the maker's feed entry is fine, the receipt it holds is not
    entry = append(MAKER, None, bad, 1)
    with pytest.raises(LedgerError, match="receipt"):
        verify_entry(entry, None)
    verify_entry(entry, None, verify_receipt=None)
    with pytest.raises(LedgerError):
        verify_receipt_signature({"maker": public_hex(MAKER)})

    def picky(receipt: dict[str, Any]) -> None:
        raise ValueError("amount out of range")

    with pytest.raises(LedgerError, match="amount out of range"):
        verify_entry(CHAIN[0], None, verify_receipt=picky)
    with pytest.raises(LedgerError, match="amount out of range"):
        Feed(public_hex(MAKER), verify_receipt=picky).extend(CHAIN[:1])


def test_append_refuses_foreign_receipts_and_heads() -> None:
    with pytest.raises(LedgerError):
        append(MAKER, None, receipt(OTHER, 1), 1)
    with pytest.raises(LedgerError):
        append(MAKER, chain(OTHER, 1)[0], receipt(MAKER, 1), 1)


def test_receipt_maker_must_be_owner_even_if_owner_signed() -> None:
    entry = {
        "owner": public_hex(MAKER),
        "height": 1,
        "prev": "",
        "receipt": receipt(OTHER, 1),
        "ts": 1,
    }
    entry["sig"] = sign_doc(MAKER, "ledger-entry", entry)
    with pytest.raises(LedgerError, match="maker"):
        verify_entry(entry, None, verify_receipt=None)


def test_signature_is_bound_to_the_ledger_kind() -> None:
    entry = {k: v for k, v in CHAIN[0].items() if k != "sig"}
    entry["sig"] = sign_doc(MAKER, "receipt", entry)  # same bytes, other purpose
    with pytest.raises(LedgerError):
        verify_entry(entry, None)


def test_fork_is_refused_with_both_entries_as_evidence() -> None:
    feed = Feed(public_hex(MAKER))
    feed.extend(CHAIN)
    fork = [CHAIN[0], CHAIN[1]]
    for i in range(2, 5):
        fork.append(append(MAKER, fork[-1], receipt(MAKER, 100 + i), 5))
    with pytest.raises(ForkError) as info:
        feed.extend(fork)
    assert info.value.held == CHAIN[2] and info.value.offered == fork[2]
    assert feed.height == 5 and feed.head == CHAIN[-1]
    assert Feed(public_hex(MAKER)).extend(fork) == 5  # on its own, a valid chain


def test_junk_at_a_held_height_is_not_a_fork() -> None:
    feed = Feed(public_hex(MAKER))
    feed.extend(CHAIN[:2])
    junk = dict(CHAIN[1], ts=CHAIN[1]["ts"] + 1)  # not signed by the owner
    with pytest.raises(LedgerError) as info:
        feed.extend([junk])
    assert not isinstance(info.value, ForkError)
    with pytest.raises(LedgerError):
        feed.extend([dict(CHAIN[1], ts=0.5)])


def test_gaps_skips_and_foreign_entries_are_refused_atomically() -> None:
    feed = Feed(public_hex(MAKER))
    feed.extend(CHAIN[:2])
    for batch in ([CHAIN[3]], [CHAIN[2], CHAIN[4]], [CHAIN[2], CHAIN[2]], chain(OTHER, 3)):
        with pytest.raises(LedgerError):
            feed.extend(batch)
        assert feed.height == 2 and feed.head == CHAIN[1]
    with pytest.raises(LedgerError, match="another feed"):
        Feed(public_hex(MAKER)).extend(chain(OTHER, 2))  # valid, but someone else's
    for junk in (["x"], [{"owner": public_hex(MAKER), "height": 0}], [{"height": "1"}]):
        with pytest.raises(LedgerError):
            feed.extend(junk)


def test_overlapping_resends_are_idempotent() -> None:
    feed = Feed(public_hex(MAKER))
    assert feed.extend(CHAIN[:3]) == 3
    assert feed.extend(CHAIN[:3]) == 0
    assert feed.extend(CHAIN[1:]) == 2
    assert feed.extend([]) == 0
    assert feed.entries_from(1) == CHAIN


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), max_size=10),
)
def test_random_deliveries_grow_a_prefix(n: int, slices: list[tuple[int, int]]) -> None:
    """A batch is taken iff it starts at or below the next height; the feed stays a prefix."""
    entries = CHAIN_8[:n]
    feed = Feed(public_hex(MAKER))
    for start, stop in slices:
        batch = entries[start:stop]
        before = feed.height
        if not batch:
            assert feed.extend(batch) == 0
        elif batch[0]["height"] <= before + 1:
            assert feed.extend(batch) == max(before, start + len(batch)) - before
        else:
            with pytest.raises(LedgerError):
                feed.extend(batch)
            assert feed.height == before
        assert feed.entries_from(1) == entries[: feed.height]


paths = st.sampled_from(
    [("owner",), ("height",), ("prev",), ("ts",), ("sig",)]
    + [("receipt", k) for k in ("fill_id", "amount", "price", "maker", "taker", "ts", "sig")]
)
values = st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=70), st.none(), st.booleans())


# how a feed is checked: the audit (every signature), and replication (the batch's last
# entry's signature and the hash chain; no receipt hook, so the chain alone must catch it)
MODES = {"audit": {}, "batch": {"verify_receipt": None, "every_signature": False}}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 7), paths, values, st.sampled_from(sorted(MODES)))
def test_random_tampering_never_verifies(
    at: int, path: tuple[str, ...], value: Any, mode: str
) -> None:
    entry = copy.deepcopy(CHAIN_8[at])
    target = entry
    for key in path[:-1]:
        target = target[key]
    if target[path[-1]] == value and type(target[path[-1]]) is type(value):
        return  # not a change
    target[path[-1]] = value
    feed = Feed(public_hex(MAKER), **MODES[mode])
    feed.extend(CHAIN_8[:at])
    with pytest.raises(LedgerError):
        feed.extend([entry, *CHAIN_8[at + 1 :]])
    assert feed.height == at


def owner_signed_chain_with_a_bad_signature_at(at: int) -> list[dict[str, Any]]:
    """What only the owner can make: entry ``at`` carries a junk signature, and the owner
    signed every later entry over its hash."""
    entries = copy.deepcopy(CHAIN[: at + 1])
    entries[at]["sig"] = "0" * 128
    for _ in range(len(CHAIN) - at - 1):
        entries.append(append(MAKER, entries[-1], receipt(MAKER, len(entries)), 1))
    return entries


def test_a_batch_is_authenticated_by_its_last_signature() -> None:
    """Replication checks one signature per batch: the last one, which vouches for every hash
    below it. The audit checks each one, so what only a cheating owner can build (a junk
    signature under its own later ones) is taken by replication and failed by the audit."""
    batch = {"verify_receipt": None, "every_signature": False}
    assert Feed(public_hex(MAKER), **batch).extend(CHAIN) == 5
    odd = owner_signed_chain_with_a_bad_signature_at(2)
    assert Feed(public_hex(MAKER), **batch).extend(odd) == 5
    with pytest.raises(LedgerError, match="height 3"):
        Feed(public_hex(MAKER)).extend(odd)
    last = copy.deepcopy(CHAIN)
    last[-1]["sig"] = last[-2]["sig"]  # a well-formed signature, not this entry's
    for mode in MODES.values():
        feed = Feed(public_hex(MAKER), **mode)
        with pytest.raises(LedgerError, match="height 5"):
            feed.extend(last)
        assert feed.height == 0
    split = Feed(public_hex(MAKER), **batch)  # a batch that ends on the junk signature
    with pytest.raises(LedgerError, match="height 3"):
        split.extend(odd[:3])
    assert split.extend(odd[:2]) == 2 and split.extend(odd[2:]) == 3
