"""Who gets into the grape's routing table, and what a newcomer is handed.

Upstream adds whatever node id a datagram claims, so one socket claiming 1,000
ids filled the table with contacts that never answer. Here a contact enters
only after it answered *our* ping at the address it claims, as the id it
claims; an address holds one id (a few per IP), and a new id replaces the one
we knew only once the old one stopped answering. Upstream also hashed keys
that already are digests when handing items to a newcomer (wrong targets) and
pushed them all at once; here the hand-off is bounded and aimed right.

``ContactAdmission`` is a mixin of ``GrapeProtocol``: it shares the protocol's
state (router, storage, request) and only groups the admission rules in one file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from kademlia.node import Node

from p2p_offers.grape.routing import is_id, is_loopback

if TYPE_CHECKING:
    from p2p_offers.grape.metrics import GrapeMetrics
    from p2p_offers.grape.routing import GrapeRoutingTable
    from p2p_offers.grape.storage import PeerTable, RecordStorage

WELCOME_MEMORY = 60.0  # seconds before the same node id is handed keys again
WELCOME_LIMIT = 2000  # items handed to one newcomer at most (republish covers the rest)
WELCOME_PARALLEL = 8  # hand-off stores in flight per newcomer
VERIFY_PARALLEL = 64  # claimed contacts being checked with a ping at once; more wait for later
VERIFY_COOLDOWN = 5.0  # seconds before a claim from the same address is checked again
IDS_PER_IP = 4  # node ids of one (non-loopback) IP address in the routing table


class ContactAdmission:
    """The admission rules of ``GrapeProtocol`` (see the module docstring)."""

    source_node: Node
    router: GrapeRoutingTable
    storage: RecordStorage
    peers: PeerTable
    metrics: GrapeMetrics
    ids_per_ip: int
    tasks: set[asyncio.Task[None]]
    _dead: dict[bytes, float]
    _welcomed: dict[bytes, float]
    _verifying: set[tuple[str, int]]
    _checked: dict[tuple[str, int], float]

    if TYPE_CHECKING:  # provided by GrapeProtocol

        def request(
            self, address: tuple[str, int], name: str, *args: Any
        ) -> asyncio.Future[Any]: ...

        async def call_put(
            self, node: Node, key: bytes, value: bytes, cas: int | None, ttl: float
        ) -> tuple[bool, Any]: ...

        async def call_announce(
            self, node: Node, key: bytes, peer: str, ttl: float, origin: str | None
        ) -> tuple[bool, Any]: ...

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
            self.admit_checked(address, answer)
        else:
            self.metrics.checked("silent")

    def admit_checked(self, address: tuple[str, int], node_id: bytes) -> bool:
        """``admit_answer`` for an answer to a ping of ours, counted in the metrics (the
        bootstrap's pings and the background checks are the two ways in)."""
        admitted = self.admit_answer(address, node_id)
        self.metrics.checked("admitted" if admitted else "refused")
        return admitted

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
        if same_ip >= self.ids_per_ip and not is_loopback(address[0]):
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
