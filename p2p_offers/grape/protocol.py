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
- who enters the routing table, and what a newcomer is handed, is decided in
  ``contacts`` (upstream believed any id a datagram claimed);
- the RPC timeout follows each contact's measured round trip (``p2p_offers.rtt``,
  RFC 6298, never below ``--rpc-timeout``), and a request that times out is sent
  once more before its contact counts as dead, so neither a WAN round trip nor one
  lost datagram kills a live peer; contacts that timed out are remembered briefly
  so a crawl does not wait for the same dead node again;
- ``find_neighbors`` (run by every handler) ranks all contacts in one pass (``routing``);
- datagrams are handled synchronously with the C ``msgpack`` (same bytes on
  the wire as rpcudp's pure-Python umsgpack): rpcudp spawns two tasks per
  request, and those plus umsgpack were most of a grape's per-RPC cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from rpcudp.exceptions import MalformedMessage

from p2p_offers import records
from p2p_offers.fields import is_seconds
from p2p_offers.grape.contacts import IDS_PER_IP, ContactAdmission
from p2p_offers.grape.metrics import GrapeMetrics
from p2p_offers.grape.routing import GrapeRoutingTable, is_id, is_ip
from p2p_offers.grape.storage import PeerTable, RecordStorage, is_peer_address
from p2p_offers.records import RecordError
from p2p_offers.rtt import RtoTable

log = logging.getLogger(__name__)

OK = 0  # rpc_put's code when the record was stored
DEAD_MEMORY = 30.0  # seconds a contact that timed out is skipped (any message from it clears)
MAX_PEERS_REPLY = 200  # addresses per find_peers reply, to stay well inside one datagram
RESENDS = 1  # a request goes out at most twice before its contact counts as dead
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


class GrapeProtocol(ContactAdmission, KademliaProtocol):
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
        trusted = isinstance(origin, str) and is_ip(origin) and self._admitted(source)
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
            self.admit_checked(address, answer)
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
