"""Iterative lookups that reach every one of the k closest nodes, and wait for no dead one twice.

kademlia's ``ValueSpiderCrawl`` stops at the first round that returns a value,
picks ``Counter(values).most_common``, and writes that winner back on a node that
lacked it: a stale majority wins and gets copied. Its rounds of alpha queries
each wait for their slowest RPC, so every dead contact costs a whole timeout.

``Crawl`` instead keeps a query in flight to each of the k closest candidates
as soon as it learns of them, collects every reply (the caller picks the newest
record with ``records.newest``; nothing is written back), and ends when the k
closest live candidates have answered. A candidate that has not answered
``grace`` seconds after it was asked is treated as a straggler once enough of the
others have answered: its RPC still runs to its timeout in the background (which
evicts it from the routing table), but the lookup does not wait for it.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from typing import Any

from kademlia.node import Node

from p2p_offers.grape.protocol import GrapeProtocol
from p2p_offers.grape.routing import parse_nodes

Call = Callable[[Node, Node], Awaitable[tuple[bool, Any]]]


class Crawl:
    """One lookup of ``target``; ``run()`` gives [(node, reply)] of the k closest that answered."""

    def __init__(
        self,
        protocol: GrapeProtocol,
        target: bytes,
        call: Call,
        seeds: list[Node],
        ksize: int,
        grace: float,
        expand: bool = True,
    ) -> None:
        self.protocol = protocol
        self.target = Node(target)
        self.call = call
        self.ksize = ksize
        self.grace = grace
        self.expand = expand
        self._candidates: dict[bytes, Node] = {}
        self._failed: set[bytes] = set()
        self._replies: dict[bytes, Any] = {}
        self._asked: dict[bytes, float] = {}
        self._add(seeds)

    async def run(self) -> list[tuple[Node, Any]]:
        loop = asyncio.get_running_loop()
        inflight: dict[asyncio.Future[tuple[bool, Any]], Node] = {}
        while True:
            closest = self._closest()
            for node in closest:
                if node.id not in self._asked:
                    self._asked[node.id] = loop.time()
                    inflight[asyncio.ensure_future(self.call(node, self.target))] = node
            waiting = [n for n in closest if n.id not in self._replies]
            if not waiting:
                break
            timeout = None
            if 2 * (len(closest) - len(waiting)) >= len(closest):
                # enough answers: wait for the others only until they turn stragglers
                timeout = max(self._asked[n.id] for n in waiting) + self.grace - loop.time()
                if timeout <= 0:
                    break
            done, _ = await asyncio.wait(
                list(inflight), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for future in done:
                node = inflight.pop(future)
                failed = future.exception() is not None  # a send we could not even make
                self._settle(node, (False, None) if failed else future.result())
        return [(n, self._replies[n.id]) for n in self._closest() if n.id in self._replies]

    def _settle(self, node: Node, result: tuple[bool, Any]) -> None:
        ok, reply = result
        if not ok:
            self._failed.add(node.id)
            return
        self._replies[node.id] = reply
        if self.expand:
            nodes = reply.get("nodes") if isinstance(reply, dict) else reply
            self._add(parse_nodes(nodes, self.protocol.source_node.id))

    def _add(self, nodes: list[Node]) -> None:
        for node in nodes:
            if (
                node.id not in self._candidates
                and node.id != self.protocol.source_node.id
                and not self.protocol.is_dead(node.id)
            ):
                self._candidates[node.id] = node

    def _closest(self) -> list[Node]:
        live = (n for n in self._candidates.values() if n.id not in self._failed)
        return heapq.nsmallest(self.ksize, live, key=self.target.distance_to)
