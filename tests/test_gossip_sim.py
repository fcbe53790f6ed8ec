"""The gossip core's invariants, on single routers (hypothesis) and on simulated networks."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers.gossip import wire
from p2p_offers.gossip.digest import Holdings
from p2p_offers.gossip.mesh import Mesh, MeshParams
from p2p_offers.gossip.router import Router, Verdict
from p2p_offers.gossip.seen import SeenCache
from p2p_offers.gossip.sim import NetParams, SimParams, Simulation
from p2p_offers.gossip.wire import Version
from p2p_offers.records import Record, RecordError, sign

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(3)]
VERSIONS = [
    Version.of(sign(k, b'{"n":%d}' % s, s, b"offer-%d" % o))
    for k in KEYS
    for o in range(2)
    for s in (1, 2, 3)
]


def forge(v: Version) -> Version:
    r = v.record
    return Version.of(Record(v=r.v + b"!", k=r.k, salt=r.salt, seq=r.seq, sig=r.sig))


def peer(i: int) -> str:
    return f"{i:064x}"


def make_router(clock: list[float], store: dict) -> Router:
    def validate(v: Version, sender: str | None) -> Verdict:
        try:
            v.record.verify()
        except RecordError:
            return Verdict.INVALID
        held = store.get((v.owner, v.key))
        if held is not None and held.seq >= v.seq:
            return Verdict.KNOWN
        store[(v.owner, v.key)] = v
        return Verdict.NEW

    me = peer(0)
    rng = random.Random(0)
    mesh = Mesh(me, MeshParams(), rng, lambda: clock[0])
    mesh.refresh([peer(i) for i in range(1, 30)])
    return Router(
        me,
        mesh,
        SeenCache(30, 8, lambda: clock[0]),  # small on purpose: expiry and eviction happen
        Holdings(),
        validate,
        lambda o, k: store.get((o, k)),
        rng,
    )


EVENT = st.tuples(
    st.sampled_from(["version", "forged", "graft", "prune", "fail", "tick", "junk"]),
    st.integers(0, len(VERSIONS) - 1),
    st.integers(1, 40),  # the peer it comes from
)


@settings(max_examples=100, deadline=None)
@given(events=st.lists(EVENT, max_size=120))
def test_a_router_forwards_each_version_at_most_once_and_never_a_forgery(events):
    clock = [0.0]
    store: dict = {}
    router = make_router(clock, store)
    forwarded: Counter[tuple[str, int]] = Counter()
    for kind, vi, src in events:
        v, sender = VERSIONS[vi], peer(src)
        if kind == "tick":
            clock[0] += 17  # past the seen TTL every other tick
            out = router.heartbeat([peer(i) for i in range(1, 60)])
            assert all(m["t"] in ("graft", "prune") for _, m in out)
            continue
        if kind == "graft":
            out = router.handle(sender, wire.encode(wire.graft()))
        elif kind == "prune":
            out = router.handle(sender, wire.encode(wire.prune()))
        elif kind == "fail":
            router.send_failed(sender)
            out = []
        elif kind == "junk":
            out = router.handle(sender, b'{"t":"version","hash":1}')
        else:
            sent = forge(v) if kind == "forged" else v
            out = router.handle(sender, wire.encode(wire.version(sent, 3)))
        assert len(router.mesh) <= router.mesh.params.d_high
        versions = [m for _, m in out if m["t"] == "version"]
        if versions:
            assert kind == "version"  # a forgery is never forwarded
            forwarded[v.id] += 1
            peers = [p for p, m in out if m["t"] == "version"]
            assert len(peers) == len(set(peers)) <= router.mesh.params.d_high
            assert sender not in peers and v.owner not in peers
            assert all(m["hops"] == 4 for m in versions)
    assert all(n == 1 for n in forwarded.values())
    # A forgery is refused by the validator, or dropped unexamined as a repeat when the
    # real (hash, seq) came first; either way nothing forged is held.
    assert router.stats["invalid"] <= sum(1 for k, _, _ in events if k == "forged")
    for v in store.values():
        v.record.verify()


@settings(max_examples=50, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from("gpfr"), st.integers(1, 30)), max_size=80))
def test_an_owner_sends_to_at_most_d_high_whatever_happened_to_its_mesh(ops):
    clock = [0.0]
    router = make_router(clock, {})
    for op, i in ops:
        if op == "g":
            router.mesh.graft(peer(i))
        elif op == "p":
            router.mesh.prune(peer(i))
        elif op == "f":
            router.mesh.failed(peer(i))
        else:
            clock[0] += 70
            router.heartbeat([peer(j) for j in range(1, 100)])
    v = Version.of(sign(KEYS[0], b"{}", 99, b"mine"))
    sends = router.publish(v)
    assert len(sends) == len(router.mesh) <= router.mesh.params.d_high
    assert len({p for p, _ in sends}) == len(sends)


class Recording(Simulation):
    """A simulation that also remembers who sent which version to whom."""

    def __init__(self, params: SimParams) -> None:
        self.links: Counter[tuple[str, str, tuple[str, int]]] = Counter()
        self.batches: Counter[tuple[str, tuple[str, int]]] = Counter()
        super().__init__(params)

    def _send(self, src, sends):
        vids = set()
        for p, m in sends:
            if m["t"] == "version":
                vid = (m["hash"], m["record"]["seq"])
                self.links[(src.id, p, vid)] += 1
                vids.add(vid)
        for vid in vids:
            self.batches[(src.id, vid)] += 1
        super()._send(src, sends)


def test_200_nodes_with_loss_and_churn_reach_every_node():
    n = 200
    sim = Recording(SimParams(n=n, seed=11, net=NetParams(loss=0.01)))
    sim.run_until(5)
    rng = random.Random(5)
    down = rng.sample(range(n), n // 10)
    for i in down:
        sim.at(rng.uniform(5, 15), sim.kill, i)
        sim.at(rng.uniform(16, 25), sim.restart, i)
    published = []
    while sim.t < 20:
        owner = rng.randrange(n)
        if sim.nodes[owner].alive:
            mine = [p.key for p in published if p.owner == owner]
            update = rng.choice(mine) if mine and rng.random() < 0.3 else None
            published.append(sim.publish(owner, update))
        sim.run_until(sim.t + 1.0)
    sim.run_until(26)
    before = sim.delivery()
    rounds = 0
    while sim.missing() and rounds < 10:
        sim.run_until(sim.t + sim.params.anti_entropy_s)
        rounds += 1
    assert sim.missing() == 0 and sim.delivery() == 100.0, (before, rounds)
    assert all(count == 1 for count in sim.links.values())  # never the same version twice
    assert all(count == 1 for count in sim.batches.values())  # each node forwards once
    d_high = sim.params.mesh.d_high
    assert all(c <= d_high for c in sim.owner_msgs.values())
    assert all(c <= d_high * n for c in sim.version_msgs.values())
    assert all(len(node.router.mesh) <= d_high for node in sim.nodes)


def test_forged_and_replayed_records_do_not_spread_and_do_not_shadow_the_real_one():
    sim = Simulation(SimParams(n=60, seed=2, net=NetParams(loss=0.0)))
    sim.run_until(5)
    owner = sim.nodes[0]
    first = sim.publish(0)
    sim.run_until(8)
    real_v1 = owner.store[(owner.id, first.key)]
    # The attacker has the owner's next record's address and seq, not its key.
    real_v2 = Version.of(sign(owner.key, b'{"real":2}', 2, first.key.encode()))
    fake_v2 = forge(real_v2)
    attacker, victims = sim.nodes[59], [n.id for n in sim.nodes[1:11]]
    sim._send(attacker, [(v, wire.version(fake_v2, 1)) for v in victims])
    sim.run_until(10)
    assert sim.version_msgs[fake_v2.id] == len(victims)  # nobody passed it on
    assert all(n.store[(owner.id, first.key)] == real_v1 for n in sim.nodes)
    # Now the owner publishes the real seq 2: every node takes it, the victims too.
    owner.store[(owner.id, first.key)] = real_v2
    sim.truth[(owner.id, first.key)] = 2
    sim._send(owner, owner.router.publish(real_v2))
    sim.run_until(13)
    assert all(n.store[(owner.id, first.key)] == real_v2 for n in sim.nodes)
    # A replay of seq 1 goes nowhere either.
    before = sim.version_msgs[real_v1.id]
    sim._send(attacker, [(v, wire.version(real_v1, 1)) for v in victims])
    sim.run_until(16)
    assert sim.version_msgs[real_v1.id] == before + len(victims)
    assert all(n.store[(owner.id, first.key)] == real_v2 for n in sim.nodes)


def test_a_node_back_with_an_empty_book_is_repaired_by_anti_entropy_alone():
    sim = Simulation(SimParams(n=40, seed=4, net=NetParams(loss=0.0)))
    sim.run_until(5)
    for i in range(10):
        sim.publish(i)
    sim.run_until(8)
    sim.kill(30)
    sim.restart(30)  # comes back holding nothing but its own records (none)
    assert len(sim.nodes[30].store) == 0
    sim.run_until(8 + 2 * sim.params.anti_entropy_s)
    assert sim.missing() == 0
    assert sim.sent["want"] > 0 and sim.nodes[30].router.stats["repaired"] == 10
