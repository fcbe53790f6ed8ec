"""Finding other nodes through the DHT: who is out there, and where an offer's owner listens.

Each node announces its Grenache RPC port as ``p2p_offers:node`` and
``p2p_offers:owner:<client_id>`` (what users and Grenache programs look up), and
its REST port, where the peer endpoints (``/peer/*``) are, as
``p2p_offers:rest:node`` (so peers can push announcements and sync from it) and
``p2p_offers:rest:owner:<client_id>`` (so a taker's node can find the owner of
an offer). Peers look up the names of the transport their client speaks:
``GrenacheTransport`` (the default) dials RPC ports, ``HttpTransport`` REST ones.
Lookups are cached for a couple of seconds: a hot path (every publication, every
bid) must not cost a DHT round trip, and a node that appears is still found within
the cache lifetime.

A lookup returns addresses, not identities; each new address is asked once for
its ``client_id``, which it must prove with a signature over our challenge and
that address (``PeerClient.identify``, ``identity.py``); this is how a node leaves itself
out of its own peer list whatever address the grape saw it under. What is
known of each address is read and written under ``_lock`` only: pushes forget
addresses from their threads while a refresh probes and reads them.

Anybody can announce anything under ``p2p_offers:node``. An address that does
not answer as a p2p-offers node (no answer, or no valid ``client_id``) is not
asked again for a while (``SHUN_S``, doubling per failure up to ``SHUN_MAX_S``),
and a refresh waits for its probes at most ``PROBE_WAIT_S``: the probes
still running finish in the background and count from the next refresh on.
So 200 junk entries cost one round of probes, not a delay on every refresh.

An address that *did* answer as a node once and then went silent (down, or cut
off by a partition) is probed again every ``REPROBE_S`` instead, without
doubling: it is the likeliest to come back. With the doubling, a 30 s partition
left each side shunning the other's nodes for 20 to 40 s more after the heal
(``tests/test_testbed_partition.py``), so the halves took 10 anti-entropy
rounds to find each other. Bounded: at most ``MAX_REMEMBERED`` such addresses.

How often the list is looked up adapts (``maintain``): every ``REFRESH_MIN_S`` while
it changes, then, each time a lookup finds the same nodes all identified, twice as
long apart, up to ``REFRESH_MAX_S``. A lookup asks the k closest grapes and each
answers with every node, so at one lookup a second per node 50 hosts spent ~1,000
DHT RPCs/s (most of every idle grape's CPU) re-learning a list that had not changed.
Nothing waits on the slow period: a change is found through events, which reset it
(``invalidate``: gossip from an unknown node, a joining node syncing from us, a send
that failed), and a listed node that went silent keeps it fast (it is reprobed every
``REPROBE_S``), so a partition heals and a restarted node is found as before.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from p2p_offers.link import GrapeError
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.dht import Dht
from p2p_offers.node.network.transport import REST_SERVICES, RPC_SERVICES

log = logging.getLogger(__name__)

NODE_SERVICE = RPC_SERVICES[0]  # "p2p_offers:node": Grenache RPC
REST_NODE_SERVICE = REST_SERVICES[0]  # "p2p_offers:rest:node": the REST port
SHUN_S = 5.0  # an address that did not answer as a node is not probed again for this long
SHUN_MAX_S = 600.0  # ... doubling with each further failure, up to this
REPROBE_S = 2.0  # an address that answered as a node before is probed again this soon
MAX_REMEMBERED = 10_000
PROBE_WAIT_S = 1.0  # a refresh waits this long for its probes; slower ones finish later
REFRESH_MIN_S = 1.0  # the node list is looked up this often while it changes ...
REFRESH_MAX_S = 16.0  # ... doubling per unchanged lookup up to this (module docstring)


def owner_service(client_id: str) -> str:
    return RPC_SERVICES[1] + client_id


def rest_owner_service(client_id: str) -> str:
    return REST_SERVICES[1] + client_id


@dataclass(frozen=True, slots=True)
class Peer:
    address: str  # host:port as announced
    client_id: str


class Rotation:
    """A few peers per round, every peer within a cycle: what a periodic repair asks.

    Asking every peer every round costs N² requests per round over a network; a
    random few alone may skip one peer for long. This takes the next ``per_round``
    of a shuffled cycle through the peers present (each peer once per cycle, a
    fresh order each cycle, so pairings vary across the network): any 2·N /
    ``per_round`` rounds in a row ask every peer. Peers gone are dropped, peers
    new join the next cycle. For one thread (the loop that repairs).
    """

    def __init__(self, per_round: int, rng: random.Random | None = None) -> None:
        self.per_round = per_round
        self.rng = rng or random.Random()
        self._due: list[str] = []  # client ids still to ask in this cycle

    def take(self, present: list[Peer]) -> list[Peer]:
        by_id = {p.client_id: p for p in present}
        due = [c for c in self._due if c in by_id]
        while len(due) < min(self.per_round, len(by_id)):
            cycle = [c for c in by_id if c not in due]
            self.rng.shuffle(cycle)
            due += cycle
        self._due = due[self.per_round :]
        return [by_id[c] for c in due[: self.per_round]]


class Peers:
    def __init__(
        self,
        dht: Dht,
        client: PeerClient,
        my_id: str,
        ttl_s: float = 2.0,
        probe_wait_s: float = PROBE_WAIT_S,
        services: tuple[str, str] = REST_SERVICES,
    ) -> None:
        self.dht = dht
        self.probe_wait_s = probe_wait_s  # how long a refresh waits for its probes
        self.node_service, self.owner_prefix = services  # what the client's transport dials
        self.client = client
        self.my_id = my_id
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()
        self._identities: dict[str, str] = {}  # address -> client_id
        self._shunned: dict[str, tuple[float, int]] = {}  # address -> (probe again at, failures)
        self._were_nodes: set[str] = set()  # addresses that once answered as nodes
        self._probing: set[str] = set()
        self._lookup_failing = False
        self._nodes: list[Peer] | None = None
        self._nodes_at = 0.0
        self.refresh_s = REFRESH_MIN_S  # the background lookup's period now (maintain)
        self.lookups = 0
        self._owners: dict[str, tuple[float, list[str]]] = {}
        self._probe_pool = ThreadPoolExecutor(8, thread_name_prefix="peer-probe")

    # -- the node list -------------------------------------------------------------------

    def nodes(self) -> list[Peer]:
        """Every other node, as of a lookup young enough (``_fresh``).

        ``maintain()`` (called by the node's sweeper) refreshes the list in the
        background before it goes stale, so in steady state this never waits;
        it looks up itself only when the list is missing or too old.
        """
        with self._lock:
            cached, fresh = self._nodes, self._fresh()
        if cached is not None and fresh:
            return cached
        with self._refreshing:  # one lookup at a time; waiters get its result
            with self._lock:
                if self._nodes is not None and self._fresh():
                    return self._nodes
            return self._refresh()

    def _fresh(self) -> bool:
        """(Under ``_lock``.) Young enough to serve without looking up: ``ttl_s``, or twice
        the background period once it has slowed down (the sweeper refreshes before)."""
        return time.monotonic() - self._nodes_at < max(self.ttl_s, 2 * self.refresh_s)

    def maintain(self) -> None:
        """Refresh in the background once the list is ``refresh_s`` old."""
        with self._lock:
            due = time.monotonic() - self._nodes_at >= self.refresh_s
        if due:
            self._refresh_soon()

    def _refresh_soon(self) -> None:
        if self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, daemon=True).start()

    def _refresh_in_background(self) -> None:
        try:
            self._refresh()
        finally:
            self._refreshing.release()

    def _refresh(self) -> list[Peer]:
        try:
            addresses = self.dht.lookup(self.node_service)
        except GrapeError as exc:
            with self._lock:
                first, self._lookup_failing = not self._lookup_failing, True
            if first:  # once per change, not once a second while the DHT is away
                log.warning(
                    "lookup %s failing (keeping the last peer list): %s", self.node_service, exc
                )
            with self._lock:
                return self._nodes or []
        with self._lock:
            recovered, self._lookup_failing = self._lookup_failing, False
        if recovered:
            log.info("lookup %s works again", NODE_SERVICE)
        now = time.monotonic()
        with self._lock:
            unknown = [
                a
                for a in dict.fromkeys(addresses)
                if a not in self._identities
                and a not in self._probing
                and self._shunned.get(a, (0.0, 0))[0] <= now
            ]
            self._probing.update(unknown)
        # probed outside the lock: nobody waits for a slow probe, and we wait for one round only
        try:
            probes = [self._probe_pool.submit(self._probe, a) for a in unknown]
        except RuntimeError:  # closing
            probes = []
        futures.wait(probes, timeout=self.probe_wait_s)
        with self._lock:
            known = {a: self._identities.get(a) for a in dict.fromkeys(addresses)}
            peers = [Peer(a, c) for a, c in known.items() if c is not None and c != self.my_id]
            # settled: the same nodes as last time, and no node that answered before is
            # listed but silent or still being probed (junk that never answered is shunned)
            settled = (
                self._nodes is not None
                and set(peers) == set(self._nodes)
                and not any(
                    a in self._probing or (c is None and a in self._were_nodes)
                    for a, c in known.items()
                )
            )
            self.refresh_s = min(2 * self.refresh_s, REFRESH_MAX_S) if settled else REFRESH_MIN_S
            self._nodes, self._nodes_at = peers, time.monotonic()
            self.lookups += 1
        return peers

    def _probe(self, address: str) -> None:
        client_id = self.client.identify(address)
        with self._lock:
            self._probing.discard(address)
            if client_id is not None:
                self._identities[address] = client_id
                self._shunned.pop(address, None)
                if len(self._were_nodes) < MAX_REMEMBERED:
                    self._were_nodes.add(address)
                return
            failures = self._shunned.get(address, (0.0, 0))[1] + 1
            now = time.monotonic()
            if len(self._shunned) > 10_000:
                self._shunned = {a: v for a, v in self._shunned.items() if v[0] > now}
            if address in self._were_nodes:
                wait = REPROBE_S
            else:
                wait = min(SHUN_S * 2 ** (failures - 1), SHUN_MAX_S)
            self._shunned[address] = (now + wait, failures)

    def shunned_count(self) -> int:
        """Listed addresses not probed for now, as they did not answer as nodes."""
        now = time.monotonic()
        with self._lock:
            return sum(1 for until, _ in self._shunned.values() if until > now)

    def known_count(self) -> int:
        """Peers as of the last lookup, without looking up (safe to call from /health)."""
        with self._lock:
            return len(self._nodes or [])

    def invalidate(self) -> None:
        """Look up again now, and often for a while (a node we have not seen yet may be
        talking to us, or one we knew failed)."""
        with self._lock:
            self._nodes_at = 0.0
            self.refresh_s = REFRESH_MIN_S
        self._refresh_soon()

    def unreachable(self, address: str) -> None:
        """Forget who lives at an address that failed: it may come back as someone else."""
        with self._lock:
            self._identities.pop(address, None)
        self.invalidate()

    # -- owners --------------------------------------------------------------------------

    def owner(self, client_id: str) -> list[str]:
        """Addresses announcing ``client_id``'s owner name. Raises GrapeError if the DHT fails."""
        now = time.monotonic()
        with self._lock:
            cached = self._owners.get(client_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        addresses = self.dht.lookup(self.owner_prefix + client_id)
        with self._lock:
            self._owners[client_id] = (now, addresses)
            if len(self._owners) > 10_000:  # owners come and go: keep the fresh ones
                self._owners = {k: v for k, v in self._owners.items() if now - v[0] < self.ttl_s}
        return addresses

    def forget_owner(self, client_id: str) -> None:
        with self._lock:
            self._owners.pop(client_id, None)

    def close(self) -> None:
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
