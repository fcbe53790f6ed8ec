"""The grape's DHT node: a kademlia ``Server`` whose operations answer the Grape API.

The process around it (HTTP API, signals, event loop) is ``process``.

Why not kademlia's own ``get``/``set``: ``get`` returns a local copy without
asking anyone and trusts the most common value; ``set`` reports success even when
every peer refused. ``GrapeServer`` keeps kademlia's routing table, node ids and
UDP transport, and replaces the operations:

- ``get_digest``: look a record up by its target (kademlia can only hash a key),
  ask all k closest nodes, verify every copy, return the highest seq;
- ``put``: store on the k closest nodes and count their answers: a mutable put
  wins only if a majority of the nodes that answered accepted it, otherwise the
  dominant BEP44 refusal (301 for the loser of a cas race) is raised;
- ``announce``/``lookup``: one ``host:port`` added to a set, per-entry expiry;
- the k closest nodes found for a key are reused for ``closest_cache_ttl``
  seconds, so repeated puts, announces and gets skip the crawl;
- bootstrap is retried while the routing table is empty, because the grapes
  of ``start-all`` start in any order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

from kademlia.network import Server
from kademlia.node import Node

from p2p_offers import records
from p2p_offers.grape.config import GrapeConfig
from p2p_offers.grape.crawling import Call, Crawl
from p2p_offers.grape.metrics import GrapeMetrics
from p2p_offers.grape.protocol import MAX_PEERS_REPLY, OK, GrapeProtocol
from p2p_offers.grape.routing import is_id
from p2p_offers.grape.storage import PeerTable, RecordStorage, is_peer_address
from p2p_offers.records import Record, RecordError

log = logging.getLogger(__name__)

Send = Callable[[Node], Awaitable[tuple[bool, Any]]]  # one store RPC to one node

CACHE_LIMIT = 10_000  # keys whose closest nodes are remembered
REPUBLISH_PARALLEL = 4  # keys republished at once: background work, no bursts
RECEIVE_BUFFER = 1 << 20  # bytes; the kernel caps it at net.core.rmem_max


class NoPeersError(RuntimeError):
    """No DHT node could be reached (or none answered): the grape cannot serve the request."""


class GrapeServer(Server):
    protocol_class = GrapeProtocol
    protocol: GrapeProtocol

    def __init__(self, config: GrapeConfig, node_id: bytes | None = None) -> None:
        super().__init__(ksize=config.ksize, alpha=config.alpha, node_id=node_id)
        # not passed to super(): it takes ``storage or ForgetfulStorage()``, and empty is falsy
        self.storage = RecordStorage(ttl=config.record_ttl)
        self.config = config
        self.peers = PeerTable(ttl=config.announce_ttl_ms / 1000)
        self._closest: dict[bytes, tuple[float, list[Node]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.metrics = GrapeMetrics()
        self.metrics.watch("records", lambda: len(self.storage))
        self.metrics.watch("announcements", lambda: len(self.peers))
        self.metrics.watch("contacts", lambda: len(self.contacts()) if self.protocol else 0)

    def _create_protocol(self) -> GrapeProtocol:
        return GrapeProtocol(
            self.node,
            self.storage,
            self.ksize,
            self.peers,
            self.config.rpc_timeout,
            self.config.ids_per_ip,
            self.metrics,
        )

    def refresh_table(self, interval: int = 3600) -> None:
        """Upstream's hourly refresh republishes via ``set_digest``; ``_maintain`` replaces it."""

    # -- life cycle --------------------------------------------------------------------------

    async def listen(self, port: int, interface: str = "0.0.0.0") -> None:
        """As upstream, with a larger receive buffer: bursts of replies to parallel queries
        overflow the default one, and every dropped reply costs a full RPC timeout."""
        await super().listen(port, interface)
        with contextlib.suppress(OSError, AttributeError):
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    async def start(self, wait_bootstrap: bool = False) -> None:
        """Listen, then bootstrap and maintain in the background (or bootstrap once first)."""
        await self.listen(self.config.dht_port, self.config.host)
        if wait_bootstrap:
            await self.bootstrap(list(self.config.bootstrap))
        self._spawn(self._keep_connected())
        self._spawn(self._maintain())

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self.protocol is not None:
            for task in list(self.protocol.tasks):
                task.cancel()
            self.protocol.fail_outstanding()
        super().stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def contacts(self) -> list[Node]:
        return self.protocol.router.contacts()

    @property
    def isolated(self) -> bool:
        """Told of other grapes but in touch with none: a local answer would be a wrong answer."""
        return bool(self.config.bootstrap) and not self.contacts()

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Node]:
        """Ping the addresses (host names allowed) we are not in touch with, then crawl.

        Upstream's bootstrap takes IP addresses only and runs once; a grape whose
        bootstrap nodes are not up yet would stay alone, so ``_keep_connected``
        calls this again until they answer.
        """
        resolved = await asyncio.gather(*(_resolve(host, port) for host, port in addrs))
        known = {(n.ip, n.port) for n in self.contacts()}
        missing = [addr for addr in resolved if addr and addr not in known]
        answers = await asyncio.gather(
            *(self.protocol.request(a, "ping", self.node.id) for a in missing)
        )
        joined = False
        for addr, (ok, node_id) in zip(missing, answers, strict=True):
            if ok and is_id(node_id) and node_id != self.node.id:
                self.protocol.admit_checked(addr, node_id)
                joined = True
        if not joined:
            return []
        replies = await self._crawl(self.node.id, self.protocol.call_find_node, cache=False)
        return [node for node, _ in replies]

    async def _keep_connected(self) -> None:
        """Retry the bootstrap nodes we are not in touch with: often while alone, rarely after."""
        while self.config.bootstrap:
            with _logged("bootstrap"):
                await self.bootstrap(list(self.config.bootstrap))
            await asyncio.sleep(5.0 if self.contacts() else 0.5)

    async def _maintain(self) -> None:
        """Expire items every few seconds; refresh buckets and republish once an interval."""
        last_republish = time.monotonic()
        while True:
            await asyncio.sleep(5.0)
            self.storage.cull()
            self.peers.cull()
            now = time.monotonic()
            self._closest = {k: v for k, v in self._closest.items() if v[0] > now}
            if now - last_republish >= self.config.republish_interval:
                last_republish = now
                with _logged("refresh and republish"):
                    for node_id in self.protocol.get_refresh_ids():
                        await self._crawl(node_id, self.protocol.call_find_node, cache=False)
                    await self.republish(self.config.republish_interval)

    async def republish(self, older_than: float = 0.0) -> int:
        """Re-store items nobody stored for ``older_than`` s, with the lifetime they have left.

        Passing the remaining lifetime means a republish never keeps an item
        alive, and a holder of a stale version is refused (302) by every node
        that has the newer one, so a republish cannot roll a record back.
        """
        gate = asyncio.Semaphore(REPUBLISH_PARALLEL)

        async def one(key: bytes, value: bytes, left: float) -> int:
            async with gate:
                answers = await self._replicate(
                    key, lambda node: self.protocol.call_put(node, key, value, None, left)
                )
                return sum(1 for answer in answers if _code(answer) == OK)

        return sum(await asyncio.gather(*(one(*item) for item in self.storage.items(older_than))))

    # -- finding the closest nodes -----------------------------------------------------------

    async def _crawl(
        self, key: bytes, call: Call, cache: bool = True, grace: float | None = None
    ) -> list[tuple[Node, Any]]:
        """Ask the k closest nodes of ``key``; with a fresh cache entry, ask just those."""
        cached = self._cached(key) if cache else None
        seeds = cached or self.protocol.router.find_neighbors(Node(key), self.ksize)
        grace = self.config.lookup_grace if grace is None else grace
        crawl = Crawl(self.protocol, key, call, seeds, self.ksize, grace, cached is None)
        replies = await crawl.run()
        if cache and cached is None and replies:
            self._remember(key, [node for node, _ in replies])
        return replies

    def _cached(self, key: bytes) -> list[Node] | None:
        entry = self._closest.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        alive = [n for n in entry[1] if not self.protocol.is_dead(n.id)]
        return alive if 2 * len(alive) >= len(entry[1]) and alive else None

    def _remember(self, key: bytes, nodes: list[Node]) -> None:
        if len(self._closest) >= CACHE_LIMIT:
            self._closest.pop(next(iter(self._closest)))
        self._closest[key] = (time.monotonic() + self.config.closest_cache_ttl, nodes)

    async def _replicate(self, key: bytes, send: Send) -> list[Any]:
        """``send`` to the k closest nodes of ``key``; the answers of those that replied.

        The stores are the crawl: each answer names the node's closest contacts,
        and nodes closer than those already asked get the store too. In a small
        or settled network a fresh put costs one round trip and no extra
        messages; any copies left on nodes that end up outside the k closest are
        harmless (they expire with their TTL). No early end for stragglers here:
        a put's outcome is a majority of all the answers.
        """
        replies = await self._crawl(key, lambda node, _: send(node), grace=self.config.rpc_timeout)
        return [answer for _, answer in replies]

    def _seems_close(self, key: bytes) -> bool:
        """Whether this node is among the storing nodes of ``key``, as far as our table knows.

        Decided before any network traffic, so that of two puts racing through the
        same grape the first one also wins the local store.
        """
        target = Node(key)
        nodes = self._cached(key) or self.protocol.router.find_neighbors(target, self.ksize)
        if len(nodes) < self.ksize:
            return True
        return self.node.distance_to(target) < max(n.distance_to(target) for n in nodes)

    def _check_connected(self) -> None:
        if self.isolated:
            raise NoPeersError("no DHT peers reachable")

    # -- records -----------------------------------------------------------------------------

    async def put(self, record: Record, cas: int | None = None) -> int:
        """Store ``record`` on its closest nodes; the number that stored it, or raise.

        Raises RecordError (BEP44 code) when the record is invalid or most nodes
        that answered refused it, NoPeersError when nobody answered at all.
        """
        record.verify()
        self._check_connected()
        key, value, ttl = record.target, record.encode(), self.config.record_ttl
        local = self._store_locally(record, value, cas, ttl) if self._seems_close(key) else None
        answers = await self._replicate(
            key, lambda node: self.protocol.call_put(node, key, value, cas, ttl)
        )
        codes = [code for code in map(_code, answers) if code is not None]
        return _majority(codes if local is None else [local, *codes])

    def _store_locally(self, record: Record, value: bytes, cas: int | None, ttl: float) -> int:
        try:
            self.storage.admit(record, value, cas, ttl)
        except RecordError as exc:
            return exc.code
        return OK

    async def get_digest(self, target: bytes) -> tuple[Record, bytes] | None:
        """The newest valid record at ``target`` among all k closest nodes, and who served it.

        Every copy is verified here (signature and target): a node that serves
        junk is simply ignored. Nothing is written back.
        """
        self._check_connected()
        local = self.storage.record(target)
        if local is not None and not local.mutable:
            return local, self.node.id  # an immutable record cannot be stale: it is its hash
        replies = await self._crawl(target, self.protocol.call_find_value)
        copies = [(self.storage.get(target), self.node.id)]
        copies += [(r.get("value"), n.id) for n, r in replies if isinstance(r, dict)]
        verdicts: dict[bytes, Record | None] = {}  # each distinct copy is verified once
        served_by: dict[Record, bytes] = {}
        found: list[Record] = []
        for value, node_id in copies:
            if not isinstance(value, bytes):
                continue
            if value not in verdicts:
                verdicts[value] = _verified(value, target)
            record = verdicts[value]
            if record is not None:
                found.append(record)
                served_by.setdefault(record, node_id)
        winner = records.newest(found)
        return None if winner is None else (winner, served_by[winner])

    # -- announcements -----------------------------------------------------------------------

    async def announce(self, key: bytes, peer: str, origin: str | None = None) -> int:
        """Add ``peer`` to the set at ``key`` on the closest nodes; how many stored it.

        ``origin`` is the announcer's address as we saw it: what each storing node
        bounds per announcer and uses to tell a host's own entry from a third party's.
        """
        self._check_connected()
        ttl = self.config.announce_ttl_ms / 1000
        stored = 0
        if self._seems_close(key) and self.peers.add(key, peer, ttl, origin):
            stored += 1
        answers = await self._replicate(
            key, lambda node: self.protocol.call_announce(node, key, peer, ttl, origin)
        )
        stored += sum(1 for a in answers if isinstance(a, dict) and a.get("stored") is True)
        if not stored:
            raise NoPeersError("no DHT node stored the announcement")
        return stored

    async def lookup(self, key: bytes) -> list[str]:
        """Every unexpired ``host:port`` announced at ``key``, as the k closest nodes hold them:
        those their hosts announced themselves first, then third-party ones."""
        self._check_connected()
        replies = await self._crawl(key, self.protocol.call_find_peers)
        own: dict[str, None] = {}
        others: dict[str, None] = {}
        for peer, is_own in self.peers.ranked(key):
            (own if is_own else others)[peer] = None
        for _, reply in replies:
            peers = reply.get("peers") if isinstance(reply, dict) else None
            if not isinstance(peers, list):
                continue
            count = reply.get("own")
            count = count if type(count) is int else 0  # an older grape: all count as third-party
            for index, peer in enumerate(peers[:MAX_PEERS_REPLY]):
                if is_peer_address(peer):
                    (own if index < count else others)[peer] = None
        return list(own) + [peer for peer in others if peer not in own]


def _verified(value: bytes, target: bytes) -> Record | None:
    """The record in a node's answer if it is valid and lives at ``target``, else None."""
    try:
        record = Record.decode(value)
        record.verify()
    except RecordError:
        return None
    return record if record.target == target else None


def _code(answer: object) -> int | None:
    """The BEP44 code in a node's answer to a put, None if the answer is junk."""
    code = answer.get("code") if isinstance(answer, dict) else None
    return code if type(code) is int else None


def _majority(codes: list[int]) -> int:
    """How many stored it, if most nodes that answered did; else their dominant refusal."""
    if not codes:
        raise NoPeersError("no DHT node answered the put")
    stored = codes.count(OK)
    if 2 * stored > len(codes):
        return stored
    refusals = collections.Counter(code for code in codes if code != OK)
    raise RecordError(refusals.most_common(1)[0][0], "refused by most storing nodes")


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    """Background work logs its failure and goes on: the next round may well succeed."""
    try:
        yield
    except Exception:
        log.exception("%s failed", what)


async def _resolve(host: str, port: int) -> tuple[str, int] | None:
    """kademlia wants IP addresses; docker-compose gives service names, maybe not resolvable yet."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM
        )
    except OSError:
        return None
    return (str(infos[0][4][0]), port) if infos else None


async def start_dht(config: GrapeConfig, node_id: bytes | None = None) -> GrapeServer:
    """A DHT node without HTTP, for benchmarks and tests that run many nodes in one process."""
    server = GrapeServer(config, node_id)
    await server.start(wait_bootstrap=True)
    return server
