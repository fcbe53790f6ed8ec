"""Per-chain locks and bid queues, held only while a chain is live or in use.

An offer and the remainders split off it form a *chain*, keyed by the root
id; every change of one of its records happens under the chain's lock. A
chain's entry is created on first use and dropped once nobody holds it and
the chain has no open record any more, so a node that has placed a million
offers over its life keeps locks only for the ones still open.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from p2p_offers.node import errors

if TYPE_CHECKING:
    from p2p_offers.bids import Bid, Receipt
    from p2p_offers.node.storage.pending import ManualBid


class Chain:
    """One chain's lock, the bids waiting for whoever holds it, and how many use it."""

    __slots__ = ("lock", "queue", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[Slot] = []
        self.users = 0


class Chains:
    def __init__(self, guard: threading.Lock, live: Callable[[str], bool]) -> None:
        self._guard = guard  # the service's guard: also protects what ``live`` reads
        self._live = live
        self._chains: dict[str, Chain] = {}

    @contextmanager
    def using(self, root: str) -> Iterator[Chain]:
        """The chain of ``root``, kept while the caller uses it (its lock is not taken)."""
        with self._guard:
            chain = self._chains.get(root)
            if chain is None:
                chain = self._chains[root] = Chain()
            chain.users += 1
        try:
            yield chain
        finally:
            with self._guard:
                chain.users -= 1
                if not chain.users and not self._live(root):
                    self._chains.pop(root, None)

    @contextmanager
    def locked(self, root: str) -> Iterator[Chain]:
        with self.using(root) as chain, chain.lock:
            yield chain

    def __len__(self) -> int:
        with self._guard:
            return len(self._chains)


class Slot:
    """A bid waiting in its chain's queue, and what became of it."""

    __slots__ = ("bid", "done", "error", "held", "receipt")

    def __init__(self, bid: Bid) -> None:
        self.bid = bid
        self.reset()

    def reset(self) -> None:
        self.done = False
        self.receipt: Receipt | None = None
        self.held: ManualBid | None = None  # a bid on a manual offer, pending
        self.error: Exception | None = None

    def outcome(self) -> Receipt | ManualBid:
        if self.error is not None:
            raise self.error
        if self.held is not None:
            return self.held
        if self.receipt is None:  # never expected: settled without an outcome
            raise errors.Internal(f"bid {self.bid.bid_id} was not settled")
        return self.receipt
