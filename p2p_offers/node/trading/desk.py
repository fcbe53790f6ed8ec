"""The FIFO of this node's taker work: orders and uncrossing tasks, one at a time, on one worker.

An order is durable from the moment its id is given out and after every fill,
so a restarted node still lists it (an order cut short by a crash is closed
with the fills it recorded; its rest is not posted). The fill that completes
an order is written together with its final state, one durable write rather
than two: nothing but closing it runs between them (no rest, no more bids).
Uncrossing tasks join the same queue, so everything this node does as a taker
is serialized.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import Tif
from p2p_offers.fields import new_id
from p2p_offers.node import errors
from p2p_offers.node.offers.maker import OfferService
from p2p_offers.node.offers.stp import Stp
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.orders import Orders
from p2p_offers.node.trading.order import Order, OrderStatus
from p2p_offers.node.trading.sweeper import Sweeper

log = logging.getLogger(__name__)

Task = Callable[[], object]


class OrderDesk:
    """The FIFO of this node's taker work: orders and uncrossing tasks, one at a time.

    ``submit`` queues an order and waits (bounded) for the worker. Only a
    bounded number of request threads may wait at once: a node whose every
    server thread sits waiting for its own worker could not answer the bids
    that other nodes' workers send it, and two such nodes would stall each
    other until timeouts. Requests beyond the bound get the order back at once,
    still pending, to poll with ``GET /orders/<id>``.
    """

    def __init__(
        self,
        orders: Orders,
        service: OfferService,
        sweeper: Sweeper,
        clock: Callable[[], int],
        max_waiting: int = 8,
        wait_s: float = 30.0,
    ) -> None:
        self.orders = orders
        self.service = service
        self.sweeper = sweeper
        self.clock = clock
        self.wait_s = wait_s
        self._waiting = threading.BoundedSemaphore(max_waiting)
        self._queue: queue.SimpleQueue[Order | Task | None] = queue.SimpleQueue()
        self._active: dict[str, Order] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._busy = False  # the worker is running an item (for /health: is this node quiet?)
        self.rested: Signal[[]] = Signal("order rest posted")
        self.counts: Counter[str] = Counter()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        for order in self.orders.pending():  # cut short by a crash: close with what it got
            order.close()
            self.orders.save(order)
        self._thread = threading.Thread(target=self._work, name="orders", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- intake ----------------------------------------------------------------------------

    def submit(
        self, side: str, price: int, amount: int, tif: Tif = Tif.GTC, stp: Stp | None = None
    ) -> Order:
        """Queue an order; return it done, or still pending if the wait was not allowed/long.

        A GTC order whose limit crosses our own resting offers could rest crossing
        them: without ``stp`` it is refused ``SelfCross`` here, before it trades
        (an IOC never rests, so it is never refused); with ``CANCEL_RESTING``
        those offers are cancelled before its rest is posted.

        An order is written to disk once its id is given out: at its first
        fill (unless that fill completes it), when it is done, or here if it
        is handed back still pending.
        One that a crash cuts short before any of these was never acknowledged;
        a fill's receipt is committed by the taker just before, so a crash in
        that moment leaves the trade in the node's trades but not in any order
        (a window that closing the order in the completing fill's write merely
        keeps open through ``close``, nothing slower).
        """
        if tif == Tif.GTC and stp is None and (crossing := self.service.self_crossing(side, price)):
            raise errors.SelfCross.of(side, price, crossing)
        order = Order(new_id(), side, price, amount, tif, self.clock(), stp=stp)
        with self._lock:
            self._active[order.id] = order
        self._queue.put(order)
        if self._waiting.acquire(blocking=False):
            try:
                order.done.wait(self.wait_s)
            finally:
                self._waiting.release()
        if not order.done.is_set():
            self.orders.save(order)  # snapshots the order inside the write: never older
        return order

    def enqueue(self, task: Task) -> None:
        """Run ``task`` on the worker, after everything queued before it."""
        self._queue.put(task)

    def get(self, order_id: str) -> Order | None:
        with self._lock:
            order = self._active.get(order_id)
        return order if order is not None else self.orders.get(order_id)

    def latest(self, limit: int) -> list[Order]:
        """Newest first: the stored ones, with the live object for any still being worked."""
        merged = {o.id: o for o in self.orders.latest(limit)}
        with self._lock:
            merged.update(self._active)
        return sorted(merged.values(), key=lambda o: (o.created, o.id), reverse=True)[:limit]

    # -- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._busy = True
            try:
                if isinstance(item, Order):
                    self._run(item)
                else:
                    item()
            except Exception:
                log.exception("order worker task failed")
                if isinstance(item, Order) and not item.done.is_set():
                    item.close()  # a rest already posted is live: the order says so
                    self._finish(item)
            finally:
                self._busy = False

    def _run(self, order: Order) -> None:
        def fill(receipt: Receipt) -> None:
            order.fills.append(receipt)
            if order.filled < order.amount:  # the fill that completes it is saved with the close
                self.orders.save(order)

        def doubt(bid: Bid) -> None:
            order.in_doubt.append(bid)
            self.orders.save(order)

        _, left = self.sweeper.take(
            order.side, order.price, order.amount, on_fill=fill, on_doubt=doubt
        )
        if left and order.tif == Tif.GTC:
            try:
                rest = self.service.place(order.side, order.price, left, stp=order.stp)
            except errors.SelfCross:  # an own offer placed while this order waited
                with self._lock:
                    self.counts["rest_self_cross"] += 1
            else:
                order.offer_id = rest.id
                self.rested.emit()
        order.close()
        self._finish(order)

    def doubt_resolved(self, bid: Bid, receipt: Receipt | None) -> None:
        """A bid in doubt was settled: update its order, on the worker (after that order ran)."""
        self.enqueue(lambda: self._settle_doubt(bid, receipt))

    def _settle_doubt(self, bid: Bid, receipt: Receipt | None) -> None:
        for order in self.orders.holding(bid.bid_id):
            order.in_doubt = [b for b in order.in_doubt if b.bid_id != bid.bid_id]
            if receipt is not None:
                order.fills.append(receipt)
            if order.status != OrderStatus.PENDING:
                order.close()
            self.orders.save(order)
            with self._lock:
                self.counts["doubt_filled" if receipt else "doubt_unfilled"] += 1

    def _finish(self, order: Order) -> None:
        self.orders.save(order)
        with self._lock:
            self._active.pop(order.id, None)
            self.counts[order.status] += 1
        order.done.set()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"queued": self._queue.qsize(), "busy": int(self._busy), **dict(self.counts)}
