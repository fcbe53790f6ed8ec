"""The node's gossip shell (``node/network/gossip.py``) in one process: real intakes, indexes,
signatures and envelopes; only the transport is a function call into the other node.

These pin what the real-process test cannot see step by step: that a forged record is
refused and not forwarded, that a neighbour's identity comes from the envelope's signature
and not from what it claims, and that anti-entropy repairs a version gossip missed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fakes import MemoryDht
from nacl.signing import SigningKey
from node_helpers import Clock, foreign_offer

from p2p_offers import offers
from p2p_offers.gossip import wire
from p2p_offers.gossip.mesh import MeshParams
from p2p_offers.node import errors
from p2p_offers.node.network.gossip import GossipNet, envelope
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.intake import Intake
from p2p_offers.node.network.peers import Peer
from p2p_offers.node.network.transport import NotDelivered
from p2p_offers.offers import CANCELLED
from p2p_offers.records import Record
from p2p_offers.signing import public_hex


class Directory:
    """Who is where: what ``Peers.nodes()`` would list after lookups and identifies."""

    def __init__(self) -> None:
        self.nets: dict[str, GossipNet] = {}
        self.down: set[str] = set()

    def peers_of(self, me: str) -> Any:
        directory = self

        class Peers:
            def nodes(self) -> list[Peer]:
                return [Peer(f"addr-{c}", c) for c in directory.nets if c != me]

            def invalidate(self) -> None:
                pass

            def unreachable(self, address: str) -> None:
                pass

        return Peers()

    def client(self) -> Any:
        directory = self

        class Client:
            def gossip(self, address: str, data: bytes) -> Any:
                target = address.removeprefix("addr-")
                if target in directory.down:
                    raise NotDelivered("down")
                env = json.loads(data)
                return directory.nets[target].receive(
                    env["from"], env["to"], env["at"], env["mac"], env["messages"]
                )

        return Client()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


BOOK_CLOCK = Clock(now_ms())  # the books' clock (expiry); envelopes use the real one


def make_net(directory: Directory, params: MeshParams | None = None) -> GossipNet:
    key = SigningKey.generate()
    index = OfferIndex(BOOK_CLOCK)
    intake = Intake(index, MemoryDht(), public_hex(key), BOOK_CLOCK)
    net = GossipNet(
        key,
        directory.peers_of(public_hex(key)),
        directory.client(),
        intake,
        index,
        params=params or MeshParams(d=2, d_low=1, d_high=2),
    )
    directory.nets[net.me] = net
    return net


def settle(nets: list[GossipNet]) -> None:
    """Wait until every outbox is drained (the sends run on the shells' pools)."""
    deadline = time.monotonic() + 10
    while any(n._outbox or n._busy for n in nets):
        assert time.monotonic() < deadline, "outboxes did not drain"
        time.sleep(0.005)


@pytest.fixture
def line():
    """Three nodes in a line a - b - c: a and c are not neighbours."""
    directory = Directory()
    a, b, c = (make_net(directory) for _ in range(3))
    for net, peers in ((a, [b]), (b, [a, c]), (c, [b])):
        for peer in peers:
            net.mesh.graft(peer.me)
    yield directory, a, b, c
    for net in (a, b, c):
        net.stop()


_last_at = [0]


def send(sender: SigningKey, to: GossipNet, *messages: dict) -> int:
    """An envelope as a node sends it: its ``at`` grows with every one."""
    _last_at[0] = at = max(now_ms(), _last_at[0] + 1)
    data = json.loads(envelope(sender, to.me, at, [wire.encode(m) for m in messages]))
    return to.receive(data["from"], data["to"], data["at"], data["mac"], data["messages"])


def version(record: dict, hops: int = 1) -> dict:
    return {"t": "version", "hash": _hash(record), "record": record, "hops": hops}


def _hash(record: dict) -> str:
    return Record.from_json(record).hash


def test_a_version_reaches_a_non_neighbour_by_one_forward(line) -> None:
    _, a, b, c = line
    signed = foreign_offer(SigningKey.generate(), BOOK_CLOCK.now)
    outsider = SigningKey.generate()  # not in b's mesh: gets nothing back
    assert send(outsider, b, version(signed.record.to_json())) == 1
    settle([a, b, c])
    assert b.stats()["forwarded"] == 2  # to a and c
    for net in (a, c):
        assert net.index.get(signed.id) is not None
        assert net.stats()["new"] == 1
    # a and c forward it to their other neighbours: none (b is the sender)
    assert a.stats()["forwarded"] == 0 and c.stats()["forwarded"] == 0
    # the same version again is a duplicate, dropped before any signature check
    send(outsider, b, version(signed.record.to_json()))
    assert b.stats()["duplicates"] == 1 and b.stats()["forwarded"] == 2


def test_forged_record_is_not_forwarded_and_a_genuine_one_is(line) -> None:
    _, a, b, c = line
    owner = SigningKey.generate()
    genuine = foreign_offer(owner, BOOK_CLOCK.now)
    forged = dict(genuine.record.to_json(), seq=genuine.seq + 5)
    send(b.key, a, version(forged))
    settle([a, b, c])
    assert a.stats()["invalid"] == 1 and a.stats()["forwarded"] == 0
    assert a.intake.counters()["gossip"]["forged"] == 1
    assert b.stats()["envelopes_received"] == 0  # nothing went on from a
    # the real version with the same (hash, seq) is not shadowed by the forgery
    send(b.key, a, version(genuine.record.to_json()))
    settle([a, b, c])
    assert a.index.get(genuine.id) is not None
    assert a.stats()["forwarded"] == 0  # its only neighbour is the sender


def test_mesh_control_needs_the_neighbours_key(line) -> None:
    _, a, b, _ = line
    assert b.me in a.mesh
    mallory = SigningKey.generate()
    prune = json.loads(envelope(mallory, a.me, now_ms(), [wire.encode(wire.prune())]))
    with pytest.raises(errors.InvalidSignature):
        a.receive(b.me, a.me, prune["at"], prune["mac"], prune["messages"])  # claims to be b
    assert b.me in a.mesh
    # mallory's own prune only concerns mallory
    a.receive(prune["from"], prune["to"], prune["at"], prune["mac"], prune["messages"])
    assert b.me in a.mesh
    # b's own prune, replayed, is taken once
    real = json.loads(envelope(b.key, a.me, now_ms(), [wire.encode(wire.prune())]))
    args = (real["from"], real["to"], real["at"], real["mac"], real["messages"])
    a.receive(*args)
    assert b.me not in a.mesh
    with pytest.raises(errors.InvalidInput, match="replayed"):
        a.receive(*args)
    old = json.loads(envelope(b.key, a.me, now_ms() - 120_000, []))
    with pytest.raises(errors.InvalidInput, match="ms from ours"):
        a.receive(old["from"], old["to"], old["at"], old["mac"], old["messages"])


def test_anti_entropy_repairs_what_gossip_missed_and_forgets_what_the_book_dropped(line) -> None:
    _, a, b, c = line
    signed = foreign_offer(SigningKey.generate(), BOOK_CLOCK.now, ttl_ms=60_000)
    c.intake.receive_record(signed.record, "test")  # c has it; b and a never heard of it
    for net in (a, b, c):
        net.reconcile()
    assert c.holdings.seq(signed.owner, signed.id) == signed.seq
    c._dispatch(c.router.anti_entropy())  # c's only neighbour is b
    settle([a, b, c])
    assert b.index.get(signed.id) is not None
    assert b.stats()["repaired"] == 1
    assert a.index.get(signed.id) is None  # repairs are not forwarded
    b.reconcile()
    owner = signed.owner
    assert b.holdings.digest(owner) == c.holdings.digest(owner)
    # a record the book dropped (expired) leaves the digests at the next reconcile
    BOOK_CLOCK.now += 61_000
    assert b.index.sweep() == 1
    b.reconcile()
    assert b.holdings.seq(owner, signed.id) is None


def test_a_close_is_repaired_after_the_book_let_it_go(line) -> None:
    """A closed record shrinks to a tombstone after ``closed_keep_s``, which the digests
    still name at its closing seq: a node that missed the close (it lists the offer
    open) asks for it and applies it. (Without tombstones b's digest no longer named the
    offer, c's open version looked newer, b refused it as stale, and c kept it open.)"""
    _, a, b, c = line
    owner = SigningKey.generate()
    opened = foreign_offer(owner, BOOK_CLOCK.now)
    doc = {**opened.offer.to_doc(), "fill": opened.offer.fill, "status": CANCELLED}
    closed = offers.sign(owner, offers.Offer(**doc), opened.seq + 1)
    c.intake.receive_record(opened.record, "test")
    b.intake.receive_record(closed.record, "test")
    BOOK_CLOCK.now += 61_000  # past closed_keep_s (60 s), inside the offer's lifetime
    b.index.sweep()
    assert b.index.get(opened.id) is None  # out of b's book and listings
    for net in (b, c):
        net.reconcile()
    assert b.holdings.seq(opened.owner, opened.id) == closed.seq  # the tombstone
    c._dispatch(c.router.anti_entropy())  # c's only neighbour is b
    settle([a, b, c])
    held = c.index.get(opened.id)
    assert held is not None and held.signed.seq == closed.seq
    assert held.signed.offer.status == CANCELLED
    assert c.stats()["repaired"] == 1


def test_a_neighbour_that_is_down_leaves_the_mesh(line) -> None:
    directory, a, b, _ = line
    directory.down.add(b.me)
    for _ in range(3):
        a._dispatch([(b.me, wire.graft())])
        settle([a])
    assert b.me not in a.mesh
    assert a.stats()["envelopes_failed"] == 3


def test_a_neighbour_back_from_the_dead_is_let_in_by_its_signed_graft(line) -> None:
    """A node dropped after failed sends (and backed off for 60 s) restarts and grafts:
    it is taken back at once, not pruned for a minute (it would gossip with nobody)."""
    directory, a, b, _ = line
    directory.down.add(b.me)
    for _ in range(3):
        a._dispatch([(b.me, wire.graft())])
        settle([a])
    assert b.me not in a.mesh
    directory.down.discard(b.me)
    send(b.key, a, wire.graft())
    settle([a, b])
    assert b.me in a.mesh
    assert a.stats().get("sent_prune", 0) == 0
    # a candidate in backoff is still not picked by a refresh (only a live GRAFT lifts it)
    c = make_net(directory)
    a.mesh.prune(b.me)
    assert b.me not in a.mesh
    a.router.heartbeat([b.me, c.me])
    assert b.me not in a.mesh
    c.stop()
