"""The grape's UDP RPCs: kademlia's protocol, made safe for signed records and for dead peers.

Why each override exists (see ``notes/kademlia-2.2.3.md``):

- every ``rpc_*`` handler validates its arguments and never raises: rpcudp sends
  no reply when a handler raises, so one malformed datagram would cost the
  caller a full timeout, and a planted dict would crash everyone's gets;
- ``rpc_store`` stores unconditionally upstream; here it goes through the
  validating storage. ``rpc_put`` is the same store but answers with BEP44's
  error code, so a put can report 301/302 and count majorities, plus the
  node's closest contacts, so the stores themselves crawl (one round trip for
  a fresh key where upstream needs a crawl first, then the stores);
- ``rpc_find_value`` serves only validated bytes and always adds the sender's
  closest nodes, so a lookup can keep crawling past the first holder;
- ``rpc_announce``/``rpc_find_peers`` add one ``host:port`` to a set on the
  storing nodes (BitTorrent's announce_peer) instead of read-merge-write, which
  saves round trips and cannot lose a concurrent announcer;
- ``welcome_if_new`` hashed keys that already are digests (wrong hand-off
  targets) and pushed every key at once (store storms): fixed and bounded;
- upstream adds whatever node id a datagram claims to the routing table, so
  one socket claiming 1,000 ids filled it with contacts that never answer.
  Here a contact enters only after it answered *our* ping at the address it
  claims, as the id it claims; an address holds one id (a few per IP), and a
  new id replaces the one we knew only once the old one stopped answering;
- the RPC timeout follows each contact's measured round trip (``p2p_offers.rtt``,
  RFC 6298, never below ``--rpc-timeout``), and a request that times out is sent
  once more before its contact counts as dead, so neither a WAN round trip nor one
  lost datagram kills a live peer; contacts that timed out are remembered briefly
  so a crawl does not wait for the same dead node again;
- ``find_neighbors`` (run by every handler) ranks all contacts in one pass;
- datagrams are handled synchronously with the C ``msgpack`` (same bytes on
  the wire as rpcudp's pure-Python umsgpack): rpcudp spawns two tasks per
  request, and those plus umsgpack were most of a grape's per-RPC cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import heapq
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable
from rpcudp.exceptions import MalformedMessage

from p2p_offers import records
from p2p_offers.fields import is_seconds
from p2p_offers.grape.metrics import GrapeMetrics
from p2p_offers.grape.storage import TARGET_BYTES, PeerTable, RecordStorage, is_peer_address
from p2p_offers.records import RecordError
from p2p_offers.rtt import RtoTable

log = logging.getLogger(__name__)

OK = 0  # rpc_put's code when the record was stored
DEAD_MEMORY = 30.0  # seconds a contact that timed out is skipped (any message from it clears)
WELCOME_MEMORY = 60.0  # seconds before the same node id is handed keys again
WELCOME_LIMIT = 2000  # items handed to one newcomer at most (republish covers the rest)
WELCOME_PARALLEL = 8  # hand-off stores in flight per newcomer
MAX_PEERS_REPLY = 200  # addresses per find_peers reply, to stay well inside one datagram
RESENDS = 1  # a request goes out at most twice before its contact counts as dead
VERIFY_PARALLEL = 64  # claimed contacts being checked with a ping at once; more wait for later
VERIFY_COOLDOWN = 5.0  # seconds before a claim from the same address is checked again
IDS_PER_IP = 4  # node ids of one (non-loopback) IP address in the routing table
MAX_REQUEST = 8192  # rpcudp's limit on a request body; peers running rpcudp enforce it
REQUEST, RESPONSE = b"\x00", b"\x01"

F = TypeVar("F", bound=Callable[..., Any])


def never_raises(fallback: Any) -> Callable[[F], F]:
    """Answer ``fallback`` instead of raising, whatever the peer sent (even a wrong arity)."""

    def wrap(handler: F) -> F:
        @functools.wraps(handler)
        def safe(self: GrapeProtocol, sender: tuple[str, int], *args: Any) -> Any:
            try:
                return handler(self, sender, *args)
            except Exception as exc:
                log.debug("bad %s from %s: %r", handler.__name__, sender, exc)
                return fallback

        return safe  # type: ignore[return-value]

    return wrap


@dataclass(frozen=True)
class _Sent:
    """A request on the wire: where, the datagram (to send again), when, which attempt."""

    address: tuple[str, int]
    packet: bytes
    sent_at: float = field(default_factory=time.monotonic)
    attempt: int = 0


def is_id(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == TARGET_BYTES


def parse_nodes(value: object, exclude: bytes) -> list[Node]:
    """Contacts from a peer's reply; anything that is not (20-byte id, ip, port) is ignored."""
    if not isinstance(value, list):
        return []
    nodes = []
    for item in value[:64]:
        if (
            isinstance(item, list | tuple)
            and len(item) == 3
            and is_id(item[0])
            and item[0] != exclude
            and isinstance(item[1], str)
            and _is_ip(item[1])
            and type(item[2]) is int
            and 0 < item[2] < 65536
        ):
            nodes.append(Node(item[0], item[1], item[2]))
    return nodes


@functools.lru_cache(maxsize=4096)
def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=4096)
def _is_ip(text: str) -> bool:
    """Only IP addresses: a host name from a peer would make us resolve it, or fail to send."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class GrapeRoutingTable(RoutingTable):
    """Upstream's table; ``find_neighbors`` (run by every handler) ranks all contacts in one
    pass instead of walking buckets through a generator and comparing addresses per node."""

    def contacts(self) -> list[Node]:
        return [node for bucket in self.buckets for node in bucket.nodes.values()]

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        """The k contacts closest to ``node`` (never ``node`` itself nor ``exclude``'s address)."""
        self.buckets[self.get_bucket_for(node)].touch_last_updated()  # as upstream: not lonely
        target = node.long_id
        candidates = [
            c
            for c in self.contacts()
            if c.id != node.id and (exclude is None or not c.same_home_as(exclude))
        ]
        return heapq.nsmallest(k or self.ksize, candidates, key=lambda c: c.long_id ^ target)


class GrapeProtocol(KademliaProtocol):
    def __init__(
        self,
        source_node: Node,
        storage: RecordStorage,
        ksize: int,
        peers: PeerTable,
        rpc_timeout: float,
        ids_per_ip: int = IDS_PER_IP,
        metrics: GrapeMetrics | None = None,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = GrapeRoutingTable(self, ksize, source_node)
        self.storage: RecordStorage = storage
        self.peers = peers
        self._wait_timeout = rpc_timeout
        # A contact not yet measured starts at the floor too (RFC 6298 says 1 s): a first
        # reply slower than that costs one spurious resend, while 1 s would make every
        # absent bootstrap node or vanished newcomer cost 3 s instead of 0.75 s.
        self.rto = RtoTable(min_s=rpc_timeout, initial_s=rpc_timeout)
        self._sent: dict[bytes, _Sent] = {}
        self._dead: dict[bytes, float] = {}
        self._welcomed: dict[bytes, float] = {}
        self.ids_per_ip = ids_per_ip
        self.metrics = metrics or GrapeMetrics()
        self._verifying: set[tuple[str, int]] = set()
        self._checked: dict[tuple[str, int], float] = {}  # address -> no new check before
        self.tasks: set[asyncio.Task[None]] = set()

    # -- handlers: the other nodes' requests -------------------------------------------------

    @never_raises(None)
    def rpc_ping(self, sender: tuple[str, int], nodeid: bytes) -> bytes | None:
        self._welcome(sender, nodeid)
        return self.source_node.id

    @never_raises(False)
    def rpc_store(self, sender: tuple[str, int], nodeid: bytes, key: bytes, value: bytes) -> bool:
        """kademlia's plain store (other kademlia nodes, old grapes): validated, no TTL refresh."""
        self._welcome(sender, nodeid)
        return self._store(key, value, None, None) == OK

    @never_raises({"code": records.MALFORMED, "nodes": []})
    def rpc_put(
        self,
        sender: tuple[str, int],
        nodeid: bytes,
        key: bytes,
        value: bytes,
        cas: int | None,
        ttl: float | None,
    ) -> dict[str, Any]:
        """Store a record: OK or the BEP44 code that refused it, and our closest contacts."""
        source = self._welcome(sender, nodeid)
        code = self._store(key, value, cas, ttl)
        return {"code": code, "nodes": self._neighbors(key, source) if is_id(key) else []}

    def _store(self, key: bytes, value: bytes, cas: object, ttl: object) -> int:
        if cas is not None and (not isinstance(cas, int) or isinstance(cas, bool)):
            return records.MALFORMED
        if ttl is not None and not is_seconds(ttl):
            return records.MALFORMED
        try:
            self.storage.accept(key, value, cas, ttl)
        except RecordError as exc:
            return exc.code
        return OK

    @never_raises(None)
    def rpc_find_node(
        self, sender: tuple[str, int], nodeid: bytes, key: bytes
    ) -> list[tuple[Any, ...]] | None:
        source = self._welcome(sender, nodeid)
        if not is_id(key):
            return None
        return self._neighbors(key, source)

    @never_raises(None)
    def rpc_find_value(
        self, sender: tuple[str, int], nodeid: bytes, key: bytes
    ) -> dict[str, Any] | list[tuple[Any, ...]] | None:
        """Closest nodes as upstream, or the validated value plus closest nodes.

        Upstream answers a holder's value alone, so a crawl stops at the first
        holder; with the nodes alongside it can go on to all k closest.
        """
        source = self._welcome(sender, nodeid)
        if not is_id(key):
            return None
        value = self.storage.get(key)
        nodes = self._neighbors(key, source)
        return nodes if value is None else {"value": value, "nodes": nodes}

    @never_raises({"stored": False, "nodes": []})
    def rpc_announce(
        self,
        sender: tuple[str, int],
        nodeid: bytes,
        key: bytes,
        peer: str,
        ttl: float,
        origin: str | None = None,
    ) -> dict[str, Any]:
        """Add ``peer`` to the set at ``key``: whether we did, and our closest contacts.

        ``origin`` is who announced it, as the grape that took the announce saw
        them; only a grape in our routing table (it answered our ping) may name
        one, anybody else is held to the address its datagram came from.
        """
        source = self._welcome(sender, nodeid)
        if not is_id(key):
            return {"stored": False, "nodes": []}
        trusted = isinstance(origin, str) and _is_ip(origin) and self._admitted(source)
        who = origin if trusted else sender[0]
        stored = is_peer_address(peer) and is_seconds(ttl) and self.peers.add(key, peer, ttl, who)
        return {"stored": stored, "nodes": self._neighbors(key, source)}

    @never_raises(None)
    def rpc_find_peers(
        self, sender: tuple[str, int], nodeid: bytes, key: bytes
    ) -> dict[str, Any] | None:
        """The peers at ``key`` (those announced by the hosts themselves first, ``own`` of
        them) and our closest contacts."""
        source = self._welcome(sender, nodeid)
        if not is_id(key):
            return None
        ranked = self.peers.ranked(key)[:MAX_PEERS_REPLY]
        return {
            "peers": [peer for peer, _ in ranked],
            "own": sum(1 for _, own in ranked if own),
            "nodes": self._neighbors(key, source),
        }

    def _welcome(self, sender: tuple[str, int], nodeid: object) -> Node:
        if not is_id(nodeid):
            raise ValueError("node id must be 20 bytes")
        source = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(source)
        return source

    def _neighbors(self, key: bytes, source: Node) -> list[tuple[Any, ...]]:
        return [tuple(n) for n in self.router.find_neighbors(Node(key), exclude=source)]

    # -- calls: our requests to other nodes --------------------------------------------------

    def request(self, address: tuple[str, int], name: str, *args: Any) -> asyncio.Future[Any]:
        """Send ``rpc_<name>(*args)`` to ``address``; resolves to (True, answer) or (False, None).

        rpcudp's ``__getattr__`` call with the C msgpack; its wire format unchanged.
        """
        msg_id = hashlib.sha1(os.urandom(32)).digest()
        body = msgpack.packb([name, args])
        if len(body) > MAX_REQUEST:
            raise MalformedMessage("request over 8 KiB")
        future = asyncio.get_running_loop().create_future()
        packet = REQUEST + msg_id + body
        try:
            self.transport.sendto(packet, address)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # closed, bad address
            log.debug("cannot send to %s: %r", address, exc)
            future.set_result((False, None))
            return future
        self._outstanding[msg_id] = (future, self._arm(msg_id, _Sent(address, packet)))
        loop = asyncio.get_running_loop()
        started, metrics = loop.time(), self.metrics

        def count(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                metrics.sent(name, bool(done.result()[0]), loop.time() - started)

        future.add_done_callback(count)
        return future

    def _arm(self, msg_id: bytes, sent: _Sent) -> asyncio.TimerHandle:
        """The timer of one send: the contact's current RTO."""
        self._sent[msg_id] = sent
        timeout = self.rto.timeout(sent.address)
        return asyncio.get_running_loop().call_later(timeout, self._timeout, msg_id)

    async def _call(self, node: Node, name: str, *args: Any) -> tuple[bool, Any]:
        result = await self.request((node.ip, node.port), name, self.source_node.id, *args)
        return self.handle_call_response(result, node)

    async def call_ping(self, node_to_ask: Node) -> tuple[bool, Any]:
        """A ping's answer is the one proof of who listens at an address: admit that id."""
        address = (node_to_ask.ip, node_to_ask.port)
        ok, answer = await self.request(address, "ping", self.source_node.id)
        if not ok:
            return self.handle_call_response((False, None), node_to_ask)
        if is_id(answer):
            self.admit_answer(address, answer)
        return ok, answer

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_node", node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_value", node_to_find.id)

    async def call_find_peers(self, node_to_ask: Node, node_to_find: Node) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "find_peers", node_to_find.id)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> tuple[bool, Any]:
        return await self._call(node_to_ask, "store", key, value)

    async def call_put(
        self, node: Node, key: bytes, value: bytes, cas: int | None, ttl: float
    ) -> tuple[bool, Any]:
        return await self._call(node, "put", key, value, cas, ttl)

    async def call_announce(
        self, node: Node, key: bytes, peer: str, ttl: float, origin: str | None
    ) -> tuple[bool, Any]:
        return await self._call(node, "announce", key, peer, ttl, origin)

    def handle_call_response(self, result: tuple[bool, Any], node: Node) -> tuple[bool, Any]:
        """As upstream, plus: remember who timed out, so crawls skip them for a while."""
        if not result[0]:
            self.mark_dead(node.id)
            self.router.remove_contact(node)
            return result
        self.welcome_if_new(node)
        return result

    def mark_dead(self, node_id: bytes) -> None:
        now = time.monotonic()
        if len(self._dead) > 10_000:
            self._dead = {k: t for k, t in self._dead.items() if t > now}
        self._dead[node_id] = now + DEAD_MEMORY

    def is_dead(self, node_id: bytes) -> bool:
        until = self._dead.get(node_id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._dead[node_id]
            return False
        return True

    def _timeout(self, msg_id: bytes) -> None:
        """Back off and send again once; then the call fails (no ERROR log: that is routine)."""
        sent = self._sent.pop(msg_id, None)
        entry = self._outstanding.get(msg_id)
        if sent is not None and entry is not None and not entry[0].done():
            self.rto.timed_out(sent.address)
            if sent.attempt < RESENDS:
                with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                    self.transport.sendto(sent.packet, sent.address)
                    again = _Sent(sent.address, sent.packet, time.monotonic(), sent.attempt + 1)
                    self._outstanding[msg_id] = (entry[0], self._arm(msg_id, again))
                    return
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result((False, None))

    def _sample(self, msg_id: bytes, addr: tuple[str, int]) -> None:
        """A reply's round trip feeds its contact's RTO (not one from another address)."""
        sent = self._sent.get(msg_id)
        if sent is not None and sent.address == addr and msg_id in self._outstanding:
            del self._sent[msg_id]
            self.rto.sample(addr, time.monotonic() - sent.sent_at, sent.attempt > 0)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Answer requests right here (every handler is synchronous); drop anything malformed."""
        try:
            if len(data) < 22:
                return
            kind, msg_id, body = data[:1], data[1:21], msgpack.unpackb(data[21:])
            if kind == RESPONSE:
                self._sample(msg_id, addr)
                self._accept_response(msg_id, body, addr)
            elif kind == REQUEST and isinstance(body, list) and len(body) == 2:
                name, args = body
                handler = getattr(self, f"rpc_{name}", None) if isinstance(name, str) else None
                self.metrics.received(name if handler is not None else "other")
                if handler is not None and isinstance(args, list):
                    answer = msgpack.packb(handler(addr, *args))
                    self.transport.sendto(RESPONSE + msg_id + answer, addr)
        except Exception as exc:
            log.debug("dropped datagram from %s: %r", addr, exc)

    def fail_outstanding(self) -> None:
        """On shutdown: every call still waiting gets its timeout answer now."""
        self._sent.clear()
        for msg_id, (future, timer) in list(self._outstanding.items()):
            timer.cancel()
            if not future.done():
                future.set_result((False, None))
            del self._outstanding[msg_id]

    # -- hand-off to newcomers ---------------------------------------------------------------

    def welcome_if_new(self, node: Node) -> None:
        """``node`` claims its id at its address (a request from it, or an answer to ours).

        A contact we hold at that very address is refreshed; anything else is only
        a claim, checked with a ping of our own (``_verify``): a datagram's id and
        source are whatever its sender chose.
        """
        if node.id == self.source_node.id:
            return
        if self._admitted(node):
            self._dead.pop(node.id, None)
            self.router.add_contact(node)  # moves it to its bucket's tail: recently seen
            return
        self._verify(node)

    def _admitted(self, node: Node) -> bool:
        bucket = self.router.buckets[self.router.get_bucket_for(node)]
        known = bucket.nodes.get(node.id)
        return known is not None and (known.ip, known.port) == (node.ip, node.port)

    def _all_contacts(self) -> list[Node]:
        """Contacts and replacement contacts (upstream promotes the latter unasked)."""
        return [
            node
            for bucket in self.router.buckets
            for nodes in (bucket.nodes, bucket.replacement_nodes)
            for node in nodes.values()
        ]

    def _verify(self, node: Node) -> None:
        """Ping the claimed address in the background; one check per address at a time,
        none again for ``VERIFY_COOLDOWN``, at most ``VERIFY_PARALLEL`` in flight: a flood
        of claims costs us a bounded number of pings and never reaches the table."""
        address = (node.ip, node.port)
        now = time.monotonic()
        if (
            address in self._verifying
            or len(self._verifying) >= VERIFY_PARALLEL
            or self._checked.get(address, 0.0) > now
        ):
            return
        self._verifying.add(address)
        if len(self._checked) > 10_000:
            self._checked = {a: t for a, t in self._checked.items() if t > now}
        self._checked[address] = now + VERIFY_COOLDOWN
        if not self._background(self._check(address)):
            self._verifying.discard(address)

    def _background(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` as a task of ours; without a running loop (handlers called directly
        in unit tests) there is nobody to talk to, and it is dropped."""
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:
            work.close()
            return False
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _check(self, address: tuple[str, int]) -> None:
        try:
            ok, answer = await self.request(address, "ping", self.source_node.id)
        finally:
            self._verifying.discard(address)
        if ok and is_id(answer):
            self.metrics.checked("admitted" if self.admit_answer(address, answer) else "refused")
        else:
            self.metrics.checked("silent")

    def admit_answer(self, address: tuple[str, int], node_id: bytes) -> bool:
        """``address`` answered our ping as ``node_id``: that is who lives there now.

        - another id we held at this address no longer answers there: it goes;
        - the same id held at another address keeps its place while it answers
          there (checked with a ping); only if it does not is it moved here;
        - a non-loopback IP holds at most ``ids_per_ip`` ids (loopback is this
          machine's own processes, as in tests and ``start-all``).

        True if it is (or may yet be, once a moved id's old address was asked) admitted.
        """
        if node_id == self.source_node.id:
            return False
        node = Node(node_id, address[0], address[1])
        moved: Node | None = None
        same_ip = 0
        for other in self._all_contacts():
            here = (other.ip, other.port) == address
            if here and other.id != node_id:
                self.router.remove_contact(other)
            elif other.id == node_id and not here:
                moved = other
            elif other.ip == address[0] and not here:
                same_ip += 1
        if moved is not None:
            return self._background(self._move(moved, node))  # decided once the old one answers
        if same_ip >= self.ids_per_ip and not _is_loopback(address[0]):
            return False
        self._admit(node)
        return True

    async def _move(self, old: Node, new: Node) -> None:
        ok, answer = await self.request((old.ip, old.port), "ping", self.source_node.id)
        if ok and answer == old.id:
            return  # the id still answers where we knew it: the newcomer is an impostor
        self.router.remove_contact(old)
        self.admit_answer((new.ip, new.port), new.id)

    def _admit(self, node: Node) -> None:
        """Add a verified contact; hand a newcomer the items it is now responsible for.

        Upstream built ``Node(digest(key))`` for keys that already are digests, so
        it handed the wrong keys to the wrong nodes, and it pushed them all at once.
        Here the target is the key itself, a node id is welcomed at most once per
        ``WELCOME_MEMORY``, and the hand-off is one bounded background task.
        """
        self._dead.pop(node.id, None)
        new = self.router.is_new_node(node)
        self.router.add_contact(node)
        if not new:
            return
        now = time.monotonic()
        if self._welcomed.get(node.id, 0.0) > now or not (len(self.storage) or len(self.peers)):
            return
        if len(self._welcomed) > 10_000:
            self._welcomed = {k: t for k, t in self._welcomed.items() if t > now}
        self._welcomed[node.id] = now + WELCOME_MEMORY
        self._background(self._hand_off(node))

    def _newcomer_is_close(self, node: Node, key: bytes, others: list[int]) -> bool:
        """Section 2.5 of the paper: the newcomer is among the k closest and we are the closest.

        ``others`` are the long ids of our other contacts; one pass over plain ints
        per key, because a newcomer may be handed thousands of keys.
        """
        target = int.from_bytes(key, "big")
        ours, theirs = self.source_node.long_id ^ target, node.long_id ^ target
        closer_than_newcomer = 0
        for other in others:
            distance = other ^ target
            if distance < ours:
                return False
            closer_than_newcomer += distance < theirs
        return closer_than_newcomer < self.router.ksize

    async def _hand_off(self, node: Node) -> None:
        """Send the newcomer its items a few at a time; stop at the first timeout (it left)."""
        gate = asyncio.Semaphore(WELCOME_PARALLEL)
        state = {"gone": False, "sent": 0}

        async def send(call: Callable[..., Any], *args: Any) -> None:
            async with gate:
                if not state["gone"]:
                    ok, _ = await call(node, *args)
                    state["gone"] = not ok

        items: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
            (self.call_put, (key, value, None, left)) for key, value, left in self.storage.items()
        ]
        items += [(self.call_announce, item) for item in self.peers.items()]
        others = [c.long_id for c in self.router.contacts() if c.id != node.id]
        sends = []
        for index, (call, args) in enumerate(items):
            if index % 256 == 255:
                await asyncio.sleep(0)  # thousands of keys must not stall the loop
            if state["sent"] < WELCOME_LIMIT and self._newcomer_is_close(node, args[0], others):
                state["sent"] += 1
                sends.append(send(call, *args))
        await asyncio.gather(*sends)
