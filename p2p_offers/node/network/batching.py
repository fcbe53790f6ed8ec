"""Bids sent to one owner at the same time share one request: ``BidBatcher``.

On a hot offer a taker node has many bids in flight to one owner, and each
request costs both ends more CPU in framing, parsing and thread hand-offs
than the bid itself. So a bid joins its owner address's queue; at most
``in_flight`` requests per address are out at once, and whoever sends takes
everything queued (up to ``max_batch``), like group commit: a lone bid goes at
once and alone, a burst goes in a few requests. The owner settles a batch's
bids in order, all queued on their chains before any settles
(``Settler.accept_many``), and answers each as it would have answered it alone.

Every bid still gets exactly its own outcome: its reply, its own error from
the owner, or the request's failure (``MaybeDelivered`` for all of a batch
whose answer was lost: each of them is in doubt, as a lone bid would be). A
batch waits at most the shortest time left to any of its bids.

Leading: a bid that finds fewer than ``in_flight`` senders for its address
sends (it *leads*); the others wait. A leader sends batches until its own bid
is answered, then hands its place to the oldest bid still waiting, or gives it
up if none is. So no bid waits for more than the requests ahead of it, and no
thread sends for others for longer than its own bid takes.
"""

from __future__ import annotations

import copy
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from p2p_offers.bids import Bid
from p2p_offers.node.network.transport import BadReply, NotDelivered

# (address, bids, timeout_s) -> per bid, in order: its reply, or the exception it gets
SendBatch = Callable[[str, list[Bid], float], list[Any]]


class _Waiting:
    __slots__ = ("bid", "deadline", "done", "error", "finished", "lead", "reply", "wake")

    def __init__(self, bid: Bid, deadline: float) -> None:
        self.bid = bid
        self.deadline = deadline
        self.lead = False  # it sends (from the start, or handed a leader's place)
        self.done = False
        self.reply: Any = None
        self.error: BaseException | None = None
        self.wake = threading.Event()  # answered, or made a leader
        self.finished = threading.Event()

    def answer(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply, self.error, self.done = reply, error, True
        self.finished.set()
        self.wake.set()


class BidBatcher:
    def __init__(
        self,
        send: SendBatch,
        clock: Callable[[], float],
        max_batch: int = 64,
        in_flight: int = 2,
    ) -> None:
        self._send = send
        self._clock = clock
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._lock = threading.Lock()
        self._queues: dict[str, deque[_Waiting]] = {}
        self._leaders: dict[str, int] = {}  # address -> requests out (leaders sending)

    def busy(self) -> int:
        """Addresses with bids queued or out (0 once every bid has its answer)."""
        with self._lock:
            return len(self._queues)

    def send(self, address: str, bid: Bid, timeout_s: float) -> Any:
        """``bid``'s reply from the owner at ``address``, or its error raised."""
        me = _Waiting(bid, self._clock() + timeout_s)
        with self._lock:
            self._queues.setdefault(address, deque()).append(me)
            if self._leaders.get(address, 0) < self.in_flight:
                self._leaders[address] = self._leaders.get(address, 0) + 1
                me.lead = True
        if not me.lead:
            me.wake.wait()
        if me.lead:
            self._lead(address, me)
        me.finished.wait()
        if me.error is not None:
            raise copy.copy(me.error)  # one instance per raising thread
        return me.reply

    def _lead(self, address: str, me: _Waiting) -> None:
        while True:
            with self._lock:
                queue = self._queues[address]
                if me.done or not queue:  # answered, or in another leader's batch
                    self._step_down(address, queue)
                    return
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            self._run(address, batch)

    def _step_down(self, address: str, queue: deque[_Waiting]) -> None:
        """Hand our place to the oldest bid waiting (not already handed one), or give it up
        (caller holds the lock)."""
        heir = next((w for w in queue if not w.lead), None)
        if heir is not None:
            heir.lead = True
            heir.wake.set()
            return
        self._leaders[address] -= 1
        if not self._leaders[address] and not queue:
            del self._leaders[address], self._queues[address]

    def _run(self, address: str, batch: list[_Waiting]) -> None:
        now = self._clock()
        live = []
        for waiting in batch:
            if waiting.deadline - now > 0.01:
                live.append(waiting)
            else:  # its time ran out in the queue: it was never sent
                waiting.answer(error=NotDelivered(f"bid to {address}: no time left to send it"))
        if not live:
            return
        timeout = min(w.deadline for w in live) - now
        try:
            outcomes = self._send(address, [w.bid for w in live], timeout)
        except Exception as exc:  # the request failed: every bid of it shares that fate
            outcomes = [exc] * len(live)
        if len(outcomes) != len(live):
            outcomes = [BadReply(f"bids to {address}: {len(outcomes)} answers")] * len(live)
        for waiting, outcome in zip(live, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                waiting.answer(error=outcome)
            else:
                waiting.answer(reply=outcome)
