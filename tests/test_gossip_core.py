"""The gossip core's pieces one at a time: wire parsing, seen-cache, mesh, digests, router."""

from __future__ import annotations

import contextlib
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers.gossip import digest, wire
from p2p_offers.gossip.digest import Holdings
from p2p_offers.gossip.mesh import Mesh, MeshParams
from p2p_offers.gossip.router import Router, Verdict
from p2p_offers.gossip.seen import SeenCache
from p2p_offers.gossip.wire import Version, WireError
from p2p_offers.records import Record, RecordError, sign


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


KEY = SigningKey(b"\x01" * 32)
OWNER = bytes(KEY.verify_key).hex()


def version(seq: int = 1, key: str = "offer-1", signer: SigningKey = KEY) -> Version:
    return Version.of(sign(signer, b'{"x":%d}' % seq, seq, key.encode()))


def forged(v: Version) -> Version:
    r = v.record
    bad = Record(v=r.v + b" ", k=r.k, salt=r.salt, seq=r.seq, sig=r.sig)
    return Version.of(bad)


def peer_id(i: int) -> str:
    return f"{i:064x}"


# -- wire ------------------------------------------------------------------------------------


def test_version_round_trips_and_claimed_hash_must_match():
    v = version(3)
    msg = wire.decode(wire.encode(wire.version(v, 2)))
    assert isinstance(msg, wire.VersionMsg)
    assert msg.version == v and msg.hops == 2
    other = version(3, key="offer-2")
    lying = wire.version(v, 2) | {"hash": other.hash}
    with pytest.raises(WireError, match="address"):
        wire.parse(lying)


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"t": "nope"},
        {"t": "graft", "extra": 1},
        {"t": "version", "hash": "00" * 20, "record": {}, "hops": 1},
        {"t": "digest", "start": "", "end": None, "owners": {"ab": "00" * 8}},
        {"t": "digest", "start": "", "end": None, "owners": {OWNER: "zz" * 8}},
        {"t": "digest", "start": "f" * 64, "end": "0" * 64, "owners": {}},
        {"t": "entries", "owners": {OWNER: {"k": True}}, "spans": {}},
        {"t": "entries", "owners": {OWNER: {"k": -1}}, "spans": {}},
        {"t": "entries", "owners": {OWNER: {"": 1}}, "spans": {}},
        {"t": "entries", "owners": {OWNER: {"b": 1}}, "spans": {OWNER: ["c", "d"]}},
        {"t": "want", "items": [[OWNER]]},
        {"t": "want", "items": [[OWNER, "k" * 65]]},
        {"t": "versions", "records": [{"v": "immutable"}]},
    ],
)
def test_parse_refuses_wrong_shapes(bad):
    with pytest.raises(WireError):
        wire.parse(bad)


def test_bounds_are_enforced():
    with pytest.raises(WireError, match="too large"):
        wire.decode(b" " * (wire.MAX_MESSAGE_BYTES + 1))
    v = version()
    with pytest.raises(WireError, match="hops"):
        wire.parse(wire.version(v, wire.MAX_HOPS + 1))
    with pytest.raises(WireError, match="at most"):
        wire.parse(wire.want([(OWNER, "k")] * (wire.MAX_WANT + 1)))
    with pytest.raises(WireError, match="at most"):
        wire.parse(wire.versions([v] * (wire.MAX_VERSIONS + 1)))
    too_many = {OWNER: {f"k{i}": 1 for i in range(wire.MAX_ENTRIES + 1)}}
    with pytest.raises(WireError, match="entries"):
        wire.parse(wire.entries(too_many))


def test_largest_messages_fit_the_body_limit():
    for fill in (b"\\", b"\x01", "\u00e9".encode()):
        big = Version.of(sign(KEY, fill * (996 // len(fill)), 2**63 - 1, b"k" * 64))
        router = Node(1, [2]).router
        for _peer, msg in router._versions(peer_id(2), [big] * 40):
            assert len(wire.encode(msg)) < wire.MAX_MESSAGE_BYTES
            assert len(wire.parse(msg).versions) <= wire.MAX_VERSIONS  # type: ignore[union-attr]
        assert len(wire.encode(wire.version(big, wire.MAX_HOPS))) < wire.MAX_MESSAGE_BYTES
    owners = {f"{i:064x}": "0" * 16 for i in range(wire.MAX_DIGEST_OWNERS)}
    assert len(wire.encode(wire.digest("", None, owners))) < wire.MAX_MESSAGE_BYTES
    entries = {f"{i:064x}": {f"{j:036d}": 2**63 - 1 for j in range(8)} for i in range(64)}
    assert len(wire.encode(wire.entries(entries))) < wire.MAX_MESSAGE_BYTES
    items = [(OWNER, "k" * 64)] * wire.MAX_WANT
    assert len(wire.encode(wire.want(items))) < wire.MAX_MESSAGE_BYTES


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
SHAPES = st.sampled_from(["version", "graft", "digest", "entries", "want", "versions", "x"])


@settings(max_examples=150, deadline=None)
@given(kind=SHAPES, body=st.dictionaries(st.sampled_from(list("abcdefg")), JSON, max_size=4))
def test_parse_never_raises_anything_but_wire_error(kind, body):
    fields = {"version": ["hash", "record", "hops"], "digest": ["start", "end", "owners"]}
    obj = {"t": kind, **{f: body.get(f[0]) for f in fields.get(kind, [])}, **body}
    for candidate in (obj, {"t": kind, **{f: body.get(f[0]) for f in fields.get(kind, [])}}):
        with contextlib.suppress(WireError):
            wire.parse(candidate)
        with contextlib.suppress(WireError):
            wire.decode(json.dumps(candidate).encode())


# -- seen ------------------------------------------------------------------------------------


def test_seen_expires_and_stays_bounded():
    clock = Clock()
    seen = SeenCache(ttl_s=10, capacity=3, clock=clock)
    assert seen.add(("a", 1)) and not seen.add(("a", 1))
    assert ("a", 1) in seen and ("a", 2) not in seen
    clock.t = 10.0
    assert ("a", 1) not in seen and len(seen) == 0
    assert seen.add(("a", 1))
    for i in range(5):
        seen.add(("b", i))
    assert len(seen) == 3 and seen.evicted == 3
    assert ("b", 4) in seen and ("a", 1) not in seen


# -- mesh ------------------------------------------------------------------------------------


def test_mesh_fills_to_d_within_bounds_and_is_deterministic():
    clock = Clock()
    candidates = [peer_id(i) for i in range(50)]

    def fresh() -> Mesh:
        return Mesh(peer_id(999), MeshParams(), random.Random(7), clock)

    a, b = fresh(), fresh()
    added, _ = a.refresh(candidates)
    assert len(a) == 6 == len(added) and added == b.refresh(reversed(candidates))[0]
    assert a.refresh(candidates) == ([], [])  # at or above d_low: left alone
    for i in range(100, 110):
        a.graft(peer_id(i))
    assert len(a) == 8  # grafts stop at d_high
    assert not a.graft(peer_id(200))
    assert not a.graft(a.me)


def test_mesh_drops_unresponsive_peers_and_backs_off():
    clock = Clock()
    mesh = Mesh(peer_id(0), MeshParams(d=2, d_low=2, d_high=3), random.Random(1), clock)
    mesh.refresh([peer_id(1), peer_id(2)])
    assert not mesh.failed(peer_id(1)) and not mesh.failed(peer_id(1))
    mesh.succeeded(peer_id(1))  # a success resets the count
    assert not mesh.failed(peer_id(1)) and not mesh.failed(peer_id(1))
    assert mesh.failed(peer_id(1))
    assert mesh.members() == [peer_id(2)]
    assert mesh.refresh([peer_id(1)]) == ([], [])  # backing off
    assert not mesh.graft(peer_id(1))
    clock.t = 61
    assert mesh.refresh([peer_id(1)])[0] == [peer_id(1)]


def test_an_undersized_mesh_retries_peers_dropped_for_failures_but_not_prunes():
    """A partition empties a mesh by failed sends; after the heal the halves must find each
    other again within seconds, not when the 60 s backoff ends (issue 8.4)."""
    clock = Clock()
    params = MeshParams(d=3, d_low=3, d_high=4)
    mesh = Mesh(peer_id(0), params, random.Random(1), clock)
    far, pruner = [peer_id(1), peer_id(2)], peer_id(3)
    mesh.refresh([*far, pruner])
    for peer in far:
        for _ in range(params.max_failures):
            mesh.failed(peer)
    mesh.prune(pruner)
    assert mesh.members() == []
    clock.t = params.retry_s / 2
    assert mesh.refresh([*far, pruner]) == ([], [])  # too soon
    clock.t = params.retry_s
    added, _ = mesh.refresh([*far, pruner])
    assert sorted(added) == far and mesh.members() == far  # the pruner still backs off
    full = Mesh(peer_id(0), MeshParams(d=1, d_low=1, d_high=2), random.Random(1), clock)
    full.refresh([peer_id(1)])
    for _ in range(3):
        full.failed(peer_id(1))
    full.refresh([peer_id(2)])
    clock.t += 10
    assert full.refresh([peer_id(1)]) == ([], [])  # a mesh in bounds does not retry


# -- digest ----------------------------------------------------------------------------------


def test_digest_is_order_independent_and_comparisons_say_what_to_move():
    assert digest.owner_digest({"a": 1, "b": 2}) == digest.owner_digest({"b": 2, "a": 1})
    assert digest.owner_digest({"a": 1}) != digest.owner_digest({"a": 2})
    assert digest.compare({"a": 1, "b": 5}, {"a": 2, "c": 1}) == (["a", "c"], ["b"])
    mine, theirs = Holdings(), Holdings()
    for h in (mine, theirs):
        h.update("o1", "a", 1)
    mine.update("o2", "a", 1)
    theirs.update("o3", "a", 1)
    digests, end, nxt = theirs.page("", 10)
    assert end is None and nxt is None
    assert digest.differing(mine, "", end, digests) == ["o2", "o3"]
    assert not mine.update("o1", "a", 1) and mine.update("o1", "a", 2)
    assert digest.differing(mine, "", None, digests) == ["o1", "o2", "o3"]
    mine.forget("o2", "a")
    assert mine.owners() == ["o1"] and mine.digest("zz") == digest.EMPTY


def test_pages_cover_every_owner_once():
    h = Holdings()
    owners = [f"{i:064x}" for i in range(25)]
    for o in owners:
        h.update(o, "k", 1)
    seen: list[str] = []
    start: str | None = ""
    while start is not None:
        digests, _end, start = h.page(start, 10)
        seen.extend(digests)
    assert seen == owners


# -- router ----------------------------------------------------------------------------------


class Node:
    """A router over a dict store, with a real signature check as the validator."""

    def __init__(self, i: int, peers: list[int]) -> None:
        self.id = peer_id(i)
        self.clock = Clock()
        self.store: dict[tuple[str, str], Version] = {}
        self.validated = 0
        rng = random.Random(i)
        mesh = Mesh(self.id, MeshParams(), rng, self.clock)
        mesh.refresh([peer_id(p) for p in peers])
        self.router = Router(
            self.id,
            mesh,
            SeenCache(60, 1000, self.clock),
            Holdings(),
            self.validate,
            lambda o, k: self.store.get((o, k)),
            rng,
        )

    def validate(self, v: Version, sender: str | None) -> Verdict:
        self.validated += 1
        try:
            v.record.verify()
        except RecordError:
            return Verdict.INVALID
        held = self.store.get((v.owner, v.key))
        if held is not None and held.seq >= v.seq:
            return Verdict.KNOWN
        self.store[(v.owner, v.key)] = v
        return Verdict.NEW


def deliver(nodes: dict[str, Node], sender: str, sends, log=None) -> None:
    """Breadth-first delivery of everything sent, to a fixed point."""
    queue = [(sender, p, m) for p, m in sends]
    while queue:
        src, dst, msg = queue.pop(0)
        if log is not None:
            log.append((src, dst, msg))
        if dst in nodes:
            out = nodes[dst].router.handle(src, wire.encode(msg))
            queue.extend((dst, p, m) for p, m in out)


def test_owner_sends_to_its_mesh_only_and_each_node_forwards_once():
    ring = {peer_id(i): Node(i, [(i + j) % 30 for j in (1, 2, 3, 5, 8, 13)]) for i in range(30)}
    owner = ring[peer_id(0)]
    v = version(1)
    sends = owner.router.publish(v)
    assert len(sends) == len(owner.router.mesh) <= 8
    log: list = []
    deliver(ring, owner.id, sends, log)
    assert all(n.store.get((v.owner, v.key)) == v for n in ring.values() if n is not owner)
    versions = [(s, d, m) for s, d, m in log if m["t"] == "version"]
    forwarders: dict[str, set] = {}
    for src, _dst, _msg in versions:
        forwarders.setdefault(src, set()).add(_dst)
    # One forward per node: each sent at most one version per neighbour.
    assert len(versions) == sum(len(d) for d in forwarders.values())
    assert all(n.router.stats["new"] <= 1 for n in ring.values())
    assert all(n.validated <= 1 for n in ring.values())  # repeats stopped at the seen-cache
    assert all(msg["hops"] <= wire.MAX_HOPS for _, _, msg in versions)
    # The ring's meshes were one-sided (i -> i+1, i+2, ...): each receiver took its sender
    # in or pruned it, so every link a version crossed is two-sided or gone.
    for src, dst, _msg in versions:
        pruned = (dst, src, wire.prune()) in log
        assert (src in ring[dst].router.mesh) != pruned
        assert (dst in ring[src].router.mesh) != pruned


def test_a_version_from_outside_the_mesh_mends_the_one_sided_link() -> None:
    """A version comes only from a peer that has us in its mesh. With room we take it in;
    full, we PRUNE it, so it stops counting on us (a lost PRUNE left a node at 50 hosts
    whose neighbours had all dropped it getting nothing but anti-entropy repairs)."""
    full = Node(1, list(range(2, 10)))
    for i in range(20, 30):
        full.router.handle(peer_id(i), wire.encode(wire.graft()))
    assert len(full.router.mesh) == 8  # d_high
    message = wire.encode(wire.version(version(1), 1))
    assert (peer_id(40), wire.prune()) in full.router.handle(peer_id(40), message)
    assert peer_id(40) not in full.router.mesh
    assert full.router.handle(peer_id(41), message) == [(peer_id(41), wire.prune())]  # a repeat
    room = Node(2, [3])
    room.router.handle(peer_id(50), message)
    assert peer_id(50) in room.router.mesh
    assert room.router.stats["reciprocated"] == 1


def test_forged_and_replayed_versions_are_not_forwarded_and_do_not_shadow():
    a = Node(1, [2, 3, 4])
    v1, v2 = version(1), version(2)
    assert a.router.handle(peer_id(2), wire.encode(wire.version(forged(v2), 1))) == []
    assert a.router.stats["invalid"] == 1 and forged(v2).id not in a.router.seen
    out = a.router.handle(peer_id(2), wire.encode(wire.version(v2, 1)))  # the real one
    assert sorted(p for p, _ in out) == [peer_id(3), peer_id(4)]  # not back to the sender
    assert a.router.handle(peer_id(3), wire.encode(wire.version(v1, 1))) == []  # replay
    assert a.router.stats["known"] == 1
    assert a.router.handle(peer_id(3), b"{not json") == []
    assert a.router.stats["malformed"] == 1


def test_graft_beyond_d_high_is_answered_with_prune():
    a = Node(1, list(range(2, 10)))
    for i in range(20, 30):
        a.router.handle(peer_id(i), wire.encode(wire.graft()))
    assert len(a.router.mesh) == 8
    assert a.router.handle(peer_id(40), wire.encode(wire.graft())) == [(peer_id(40), wire.prune())]


def test_one_anti_entropy_exchange_repairs_both_sides():
    a, b = Node(1, [2]), Node(2, [1])
    other = SigningKey(b"\x02" * 32)
    only_a = [version(1, key=f"a{i}") for i in range(5)] + [version(3, key="shared")]
    only_b = [version(1, key="b", signer=other), version(1, key="shared")]
    for node, vs in ((a, only_a), (b, only_b)):
        for v in vs:
            node.store[(v.owner, v.key)] = v
            node.router.holdings.update(v.owner, v.key, v.seq)
    nodes = {a.id: a, b.id: b}
    deliver(nodes, a.id, a.router.anti_entropy())
    assert a.store == b.store and len(a.store) == 7
    assert a.store[(OWNER, "shared")].seq == 3
    # In step: the next round is a single digest message and nothing else.
    log: list = []
    deliver(nodes, b.id, b.router.anti_entropy(), log)
    assert [m["t"] for _, _, m in log] == ["digest"]


def test_an_owner_larger_than_one_message_is_repaired_over_rounds():
    a, b = Node(1, [2]), Node(2, [1])
    for i in range(wire.MAX_ENTRIES * 2 + 10):
        r = Record(v=b"x", k=KEY.verify_key.encode(), salt=b"k%04d" % i, seq=1, sig=b"\0" * 64)
        v = Version.of(r)
        b.store[(v.owner, v.key)] = v
        b.router.holdings.update(v.owner, v.key, 1)
    a.validate = b.validate = lambda v, s: Verdict.NEW  # type: ignore[method-assign]
    a.router.validate = lambda v, s: Verdict.NEW
    nodes = {a.id: a, b.id: b}
    for _ in range(40):
        a.clock.t += 5
        b.clock.t += 5
        deliver(nodes, a.id, a.router.anti_entropy())
        if len(a.router.holdings) == len(b.router.holdings):
            break
    assert len(a.router.holdings) == len(b.router.holdings)


def test_digests_and_wants_are_answered_once_per_interval_per_peer():
    a, b = Node(1, [2]), Node(2, [1])
    for i in range(3):
        v = version(1, key=f"k{i}")
        b.store[(v.owner, v.key)] = v
        b.router.holdings.update(v.owner, v.key, 1)
    ask = wire.encode(wire.digest("", None, {}))
    assert [m["t"] for _, m in b.router.handle(a.id, ask)] == ["entries"]
    assert b.router.handle(a.id, ask) == []  # again at once: refused
    want = wire.encode(wire.want([(OWNER, "k0")]))
    assert [m["t"] for _, m in b.router.handle(a.id, want)] == ["versions"]
    assert b.router.handle(a.id, want) == []
    assert b.router.stats["refused_digest"] == b.router.stats["refused_want"] == 1
    assert b.router.handle(peer_id(7), ask) != []  # another peer is another budget
    b.clock.t = 1.0
    assert b.router.handle(a.id, ask) != [] and b.router.handle(a.id, want) != []
