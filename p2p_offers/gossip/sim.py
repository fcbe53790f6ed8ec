"""A discrete-event simulation of the gossip layer: N nodes, one process, a simulated clock.

Every node runs the real core (``Router``, ``Mesh``, ``SeenCache``,
``Holdings``). Every message is encoded to bytes and parsed again by
``wire.decode`` on arrival, and every record is a real Ed25519-signed BEP44
record that each node verifies before believing it. Only the network and the
clock are simulated:

* per-message one-way latency is half of ``rtt_ms ± jitter_ms`` (uniform);
* a message is lost with probability ``loss``. A lost message, or one to a dead
  node, is reported to its sender as a failed send after ``timeout_s``, as the
  RPC transport would report a timeout. On the real transport TCP turns most
  loss into delay, so counting it as outright loss is the pessimistic choice;
* churn: ``kill`` and ``restart`` at any simulated time. A dead node answers
  nothing. A restarted node keeps its own records (they are durable) but,
  by default, none of the book it had (that is in memory), so anti-entropy has
  to bring it all back. A dead node stays in DHT lookups for
  ``announce_ttl_s`` (the grape's ``--dpa``), so meshes have to drop it.

Each node has a heartbeat (mesh upkeep from a fresh lookup of ``lookup_k``
announced nodes) and an anti-entropy round, each at its own random phase.
Everything is driven by one seeded RNG per node plus one for the network, so
a run replays exactly.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.gossip import wire
from p2p_offers.gossip.digest import Holdings
from p2p_offers.gossip.mesh import Mesh, MeshParams
from p2p_offers.gossip.router import Router, Send, Verdict
from p2p_offers.gossip.seen import SeenCache
from p2p_offers.gossip.wire import Version
from p2p_offers.records import RecordError, sign

VersionId = tuple[str, int]


@dataclass(frozen=True, slots=True)
class NetParams:
    rtt_ms: float = 80.0
    jitter_ms: float = 10.0
    loss: float = 0.01
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SimParams:
    n: int
    seed: int = 1
    net: NetParams = field(default_factory=NetParams)
    mesh: MeshParams = field(default_factory=MeshParams)
    heartbeat_s: float = 1.0
    anti_entropy_s: float = 5.0
    lookup_k: int = 20
    announce_ttl_s: float = 120.0
    seen_ttl_s: float = 120.0
    seen_capacity: int = 100_000
    restart_keeps_book: bool = False
    verify: bool = True


@dataclass(slots=True)
class Receipt:
    at: float
    hops: int | None  # None: it came by anti-entropy


@dataclass(slots=True)
class Published:
    id: VersionId
    owner: int
    key: str
    seq: int
    at: float
    alive: frozenset[int]  # the other nodes alive when it was published


class SimNode:
    def __init__(self, sim: Simulation, index: int) -> None:
        self.sim = sim
        self.index = index
        seed = hashlib.sha256(b"sim-key %d %d" % (sim.params.seed, index)).digest()
        self.key = SigningKey(seed)
        self.id = bytes(self.key.verify_key).hex()
        self.alive = True
        self.died_at = -1e18
        self.store: dict[tuple[str, str], Version] = {}
        self.holdings = Holdings()
        self.receipts: dict[VersionId, Receipt] = {}
        self._hops: int | None = None  # of the message being handled
        self._boots = 0
        self.router = self._new_router()

    def _new_router(self) -> Router:
        self._boots += 1
        rng = random.Random(f"{self.sim.params.seed}:{self.index}:{self._boots}")
        clock = self.sim.now
        p = self.sim.params
        return Router(
            self.id,
            Mesh(self.id, p.mesh, rng, clock),
            SeenCache(p.seen_ttl_s, p.seen_capacity, clock),
            self.holdings,
            self.validate,
            lambda owner, key: self.store.get((owner, key)),
            rng,
        )

    def validate(self, v: Version, sender: str | None) -> Verdict:
        """What the node's Intake does, in short: signature, then seq against what is held."""
        if self.sim.params.verify:
            try:
                v.record.verify()
            except RecordError:
                return Verdict.INVALID
        held = self.store.get((v.owner, v.key))
        if held is not None and held.seq >= v.seq:
            return Verdict.KNOWN
        self.store[(v.owner, v.key)] = v
        if v.id not in self.receipts:
            self.receipts[v.id] = Receipt(self.sim.t, self._hops)
        return Verdict.NEW

    def restart(self) -> None:
        if not self.sim.params.restart_keeps_book:
            own = {k: v for k, v in self.store.items() if v.owner == self.id}
            self.store = own
            self.holdings = Holdings()
            for v in own.values():
                self.holdings.update(v.owner, v.key, v.seq)
        self.router = self._new_router()
        self.alive = True


class Simulation:
    def __init__(self, params: SimParams) -> None:
        self.params = params
        self.t = 0.0
        self.rng = random.Random(params.seed)
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._tick = 0
        self.nodes = [SimNode(self, i) for i in range(params.n)]
        self.by_id = {n.id: n for n in self.nodes}
        self.published: list[Published] = []
        self.truth: dict[tuple[str, str], int] = {}  # newest seq published per record
        self.sent: Counter[str] = Counter()  # messages by type
        self.bytes: Counter[str] = Counter()
        self.version_msgs: Counter[VersionId] = Counter()  # every version message, by version
        self.owner_msgs: Counter[VersionId] = Counter()  # those its owner sent
        self.failed_sends = 0
        for node in self.nodes:
            self.at(self.rng.uniform(0, params.heartbeat_s), self._heartbeat, node)
            self.at(self.rng.uniform(0, params.anti_entropy_s), self._anti_entropy, node)

    # -- the event loop ------------------------------------------------------------------

    def now(self) -> float:
        return self.t

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._tick += 1
        heapq.heappush(self._events, (t, self._tick, fn, args))

    def run_until(self, t: float) -> None:
        while self._events and self._events[0][0] <= t:
            self.t, _, fn, args = heapq.heappop(self._events)
            fn(*args)
        self.t = t

    # -- the network ---------------------------------------------------------------------

    def _send(self, src: SimNode, sends: list[Send]) -> None:
        encoded: dict[int, bytes] = {}  # one forward sends the same dict to every neighbour
        net = self.params.net
        for peer, message in sends:
            data = encoded.get(id(message))
            if data is None:
                data = encoded[id(message)] = wire.encode(message)
            kind = message["t"]
            self.sent[kind] += 1
            self.bytes[kind] += len(data)
            if kind == "version":
                vid = (message["hash"], message["record"]["seq"])
                self.version_msgs[vid] += 1
                if message["hops"] == 1:
                    self.owner_msgs[vid] += 1
            dst = self.by_id.get(peer)
            if dst is None or not dst.alive or self.rng.random() < net.loss:
                self.at(self.t + net.timeout_s, self._failed, src, peer)
                continue
            rtt = net.rtt_ms + self.rng.uniform(-net.jitter_ms, net.jitter_ms)
            self.at(self.t + rtt / 2000, self._arrive, src, dst, message, data)

    def _arrive(self, src: SimNode, dst: SimNode, message: dict[str, Any], data: bytes) -> None:
        if not dst.alive:
            self.at(self.t + self.params.net.timeout_s, self._failed, src, dst.id)
            return
        dst._hops = message["hops"] if message["t"] == "version" else None
        out = dst.router.handle(src.id, data)
        if src.alive:
            src.router.delivered(dst.id)
        self._send(dst, out)

    def _failed(self, src: SimNode, peer: str) -> None:
        self.failed_sends += 1
        if src.alive:
            src.router.send_failed(peer)

    # -- the nodes' timers ---------------------------------------------------------------

    def _heartbeat(self, node: SimNode) -> None:
        if node.alive:
            self._send(node, node.router.heartbeat(self.lookup(node)))
        self.at(self.t + self.params.heartbeat_s, self._heartbeat, node)

    def _anti_entropy(self, node: SimNode) -> None:
        if node.alive:
            self._send(node, node.router.anti_entropy())
        self.at(self.t + self.params.anti_entropy_s, self._anti_entropy, node)

    def lookup(self, node: SimNode) -> Iterator[str]:
        """What ``lookup("p2p_offers:node")`` answers: up to ``lookup_k`` announced nodes,
        dead ones included until their announcement expires. Lazy: the mesh reads it
        only when it needs peers."""
        ttl = self.params.announce_ttl_s
        pool = [
            n.id
            for n in self.rng.sample(self.nodes, min(len(self.nodes), 3 * self.params.lookup_k))
            if n is not node and (n.alive or self.t - n.died_at < ttl)
        ]
        yield from pool[: self.params.lookup_k]

    # -- what happens to the nodes -------------------------------------------------------

    def publish(self, index: int, key: str | None = None) -> Published:
        """Node ``index`` signs a new version: a new record, or the next seq of ``key``."""
        node = self.nodes[index]
        if key is None:
            key = f"{self.rng.getrandbits(128):032x}"
        seq = self.truth.get((node.id, key), 0) + 1
        doc = {"id": key, "amount": self.rng.randrange(1, 10**8), "price": 5_000_000, "seq": seq}
        record = sign(node.key, json.dumps(doc, sort_keys=True).encode(), seq, key.encode())
        v = Version.of(record)
        node.store[(v.owner, key)] = v
        self.truth[(v.owner, key)] = seq
        alive = frozenset(n.index for n in self.nodes if n.alive and n is not node)
        info = Published(v.id, index, key, seq, self.t, alive)
        self.published.append(info)
        self._send(node, node.router.publish(v))
        return info

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        node.alive = False
        node.died_at = self.t

    def restart(self, index: int) -> None:
        """Back up: rejoins the mesh at once and starts an anti-entropy round, as a node
        does at start (its sync)."""
        node = self.nodes[index]
        node.restart()
        self._send(node, node.router.heartbeat(self.lookup(node)))
        self._send(node, node.router.anti_entropy())

    # -- what we measure -----------------------------------------------------------------

    def missing(self) -> int:
        """(alive node, record) pairs where the node lacks the newest published seq."""
        gaps = 0
        for node in self.nodes:
            if not node.alive:
                continue
            for (owner, key), seq in self.truth.items():
                held = node.store.get((owner, key))
                if held is None or held.seq < seq:
                    gaps += 1
        return gaps

    def delivery(self) -> float:
        """Share of (alive node, published version) pairs where the node holds that
        version or a newer one."""
        alive = [n for n in self.nodes if n.alive]
        total = ok = 0
        for p in self.published:
            owner = self.nodes[p.owner].id
            for node in alive:
                if node.index == p.owner:
                    continue
                total += 1
                held = node.store.get((owner, p.key))
                ok += held is not None and held.seq >= p.seq
        return 100.0 * ok / total if total else 100.0

    def gossip_receipts(self) -> list[tuple[Published, list[Receipt]]]:
        """Per version, the receipts that came by gossip (with a hop count)."""
        out = []
        for p in self.published:
            got = [r for n in self.nodes if (r := n.receipts.get(p.id)) and r.hops is not None]
            out.append((p, got))
        return out
