"""What the publisher queues for a hot chain: a remainder born and filled before any of
its versions left the queues is never published; everything that may be out still is."""

from __future__ import annotations

from nacl.signing import SigningKey

from p2p_offers import offers
from p2p_offers.fields import new_id
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.offers import SignedOffer

KEY = SigningKey.generate()
TAKER = "ab" * 32


def _publisher(marked: list[tuple[str, int]]) -> Publisher:
    # never started: publish() only queues, which is what is looked at here
    return Publisher(None, None, None, marked.extend)  # type: ignore[arg-type]


def _fill(head: SignedOffer, amount: int) -> tuple[SignedOffer, SignedOffer | None]:
    filled, rest = head.offer.fill_with(new_id(), amount, TAKER, 1_000, new_id())
    closed = offers.sign(KEY, filled, head.seq + 1)
    return closed, offers.sign(KEY, rest, offers.FIRST_SEQ) if rest else None


def _chain(bids: int) -> list[SignedOffer]:
    """A root offer of ``bids`` sats filled 1 sat at a time: each step's versions, in order."""
    head = offers.sign(KEY, offers.create("sell", 3_000_000, bids, 1_000, 60_000), 1)
    versions = [head]
    for _ in range(bids):
        closed, rest = _fill(head, 1)
        versions.append(closed)
        if rest is None:
            break
        versions.append(rest)
        head = rest
    return versions


def test_remainders_born_and_filled_while_queued_are_not_published() -> None:
    marked: list[tuple[str, int]] = []
    publisher = _publisher(marked)
    versions = _chain(5)
    root = versions[0]
    publisher.publish([root])
    publisher._take(publisher._to_put)  # the root's first version is out
    publisher._take(publisher._to_push)
    for i in range(1, len(versions), 2):  # each fill: the closed record, then its remainder
        publisher.publish(versions[i : i + 2])
    queued = {s.id: s.seq for s in publisher._to_put.values()}
    assert queued == {root.id: 2}  # the root's close; the last remainder was filled too
    assert {s.id: s.seq for s in publisher._to_push.values()} == queued
    # the 4 remainders never went out: their closes are marked published by the put loop
    assert sorted(marked + publisher._unsent) == sorted((v.id, v.seq) for v in versions[3::2])


def test_records_that_may_be_out_are_always_published() -> None:
    publisher = _publisher([])
    versions = _chain(3)
    root, first_close, first_rest, second_close = versions[:4]
    publisher.published(first_rest.id, 0)  # seeded after a restart: it may be out
    publisher.publish([root, first_close, first_rest, second_close])
    # the root never left the queues: dropped; the seeded remainder's close is sent
    assert {s.id: s.seq for s in publisher._to_put.values()} == {first_rest.id: 2}
    assert {s.id: s.seq for s in publisher._to_push.values()} == {first_rest.id: 2}
    # only in one queue (the push took it): the other queue still sends its close
    later = _chain(2)
    publisher.publish([later[0]])
    publisher._take(publisher._to_push)
    publisher.publish([later[1]])
    assert publisher._to_put[later[0].id].seq == 2
    assert publisher._to_push[later[0].id].seq == 2
