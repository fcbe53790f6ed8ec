"""Limit orders on one's own node: a FIFO queue, one worker, and the one way we take liquidity.

``Sweeper.take`` is the only place this node trades as a taker on its own
initiative. It plans over the node's book with ``matching.plan`` (best price,
then time, never our own offers), bids on each maker at the maker's price
through ``Taker.bid`` (the very path of ``POST /offers/<id>/bids``), and when a
bid loses a race (409) or the owner cannot be reached (502) it moves on and
re-plans what is left against the book as it is by then. Orders use it, and so
does uncrossing (``uncross``), with a filter that admits only older makers.

``OrderDesk`` runs orders strictly one at a time, in arrival order, on one
worker thread; uncrossing tasks join the same queue, so everything this node
does as a taker is serialized. An order is durable from the moment its id is
given out and after every fill, so a restarted node still lists it (an order
cut short by a crash is closed with the fills it recorded; its rest is not
posted).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import Book, Entry
from p2p_offers.fields import new_id
from p2p_offers.book import plan
from p2p_offers.node import errors
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.service import OfferService
from p2p_offers.node.store import Store
from p2p_offers.node.taker import BidInDoubt, Taker

log = logging.getLogger(__name__)

GTC, IOC = "gtc", "ioc"
PENDING, FILLED, PARTIAL = "pending", "filled", "partial"
RESTING, CANCELLED = "resting", "cancelled"
MAX_ROUNDS = 64  # re-plans per sweep; each one either fills or rules out a maker

SCHEMA = """CREATE TABLE IF NOT EXISTS orders (
    id      TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    doc     TEXT NOT NULL  -- Order.to_doc(): amounts in integers, fills as signed receipts
)"""


# -- taking liquidity ------------------------------------------------------------------------


class Cooldowns:
    """Makers and owners that just failed us, skipped for a while that doubles on each failure.

    Without it, uncrossing against an owner that is down would reserve, bid,
    fail and restore on every scan until that owner's offers expire.
    """

    def __init__(self, base_s: float = 0.5, max_s: float = 8.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._lock = threading.Lock()
        self._until: dict[str, tuple[float, float]] = {}  # key -> (until, last delay)

    def fail(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            _, last = self._until.get(key, (0.0, 0.0))
            delay = min(self.max_s, last * 2 if last else self.base_s)
            self._until[key] = (now + delay, delay)
            if len(self._until) > 10_000:  # offers come and go: forget long-expired ones
                self._until = {k: v for k, v in self._until.items() if v[0] + self.max_s > now}

    def clear(self, key: str) -> None:
        with self._lock:
            self._until.pop(key, None)

    def cooling(self, key: str) -> bool:
        with self._lock:
            hit = self._until.get(key)
        return hit is not None and hit[0] > time.monotonic()


@dataclass
class _Avoid:
    """What one sweep has ruled out: offers that refused us, owners that did not answer."""

    ids: set[str] = field(default_factory=set)
    owners: set[str] = field(default_factory=set)


class Sweeper:
    def __init__(self, me: str, index: OfferIndex, taker: Taker) -> None:
        self.me = me
        self.index = index
        self.taker = taker
        self.cooldowns = Cooldowns()
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def usable(self, entry: Entry) -> bool:
        """Not an offer or owner that failed us a moment ago."""
        return not (self.cooldowns.cooling(entry.id) or self.cooldowns.cooling(entry.owner))

    def plan(
        self,
        book: Book,
        side: str,
        limit: int,
        amount: int,
        eligible: Callable[[Entry], bool] | None = None,
    ) -> list[tuple[Entry, int]]:
        """Best-first ``(maker, take)`` for ``amount``, over makers ``eligible`` admits.

        ``matching.plan`` already leaves out our own offers; makers the filter
        rejects are skipped, not stopped at, so the plan asks for more until
        it has ``amount`` or the crossing part of the book is exhausted.
        """
        want = amount
        while True:
            steps: list[tuple[Entry, int]] = []
            need, seen = amount, 0
            for entry, take in plan(book, side, limit, want, self.me):
                seen += take
                if eligible is not None and not eligible(entry):
                    continue
                got = min(entry.amount, need)
                steps.append((entry, got))
                need -= got
                if not need:
                    return steps
            if seen < want:
                return steps
            want *= 2

    def take(
        self,
        side: str,
        limit: int,
        amount: int,
        eligible: Callable[[Entry], bool] | None = None,
        on_fill: Callable[[Receipt], None] | None = None,
        on_doubt: Callable[[Bid], None] | None = None,
    ) -> tuple[list[Receipt], int]:
        """Fill up to ``amount`` as a ``side`` taker at ``limit`` or better; (receipts, left).

        Every maker is bid at its own price (price improvement goes to the
        taker). Whatever fails is ruled out for the rest of this sweep and the
        remainder is re-planned, so a lost race costs one round trip, not the
        order. A bid left in doubt (it may have filled) is told to ``on_doubt``
        and its amount is not in ``left``: it is never planned, rested or given
        back a second time.
        """
        avoid = _Avoid()

        def ok(entry: Entry) -> bool:
            if entry.id in avoid.ids or entry.owner in avoid.owners or not self.usable(entry):
                return False
            return eligible is None or eligible(entry)

        receipts: list[Receipt] = []
        left = amount

        def plan_for(need: int) -> list[tuple[Entry, int]]:
            return self.index.read_book(lambda book: self.plan(book, side, limit, need, ok))

        for _ in range(MAX_ROUNDS):
            steps = plan_for(left)
            if not steps:
                break
            for entry, want in steps:
                receipt = self._bid(entry, want, avoid)
                if receipt is None:
                    continue
                if isinstance(receipt, BidInDoubt):
                    left -= receipt.bid.amount
                    if on_doubt is not None:
                        on_doubt(receipt.bid)
                    continue
                receipts.append(receipt)
                left -= receipt.amount
                if on_fill is not None:
                    on_fill(receipt)
            if not left:
                break
        return receipts, left

    def _bid(self, entry: Entry, amount: int, avoid: _Avoid) -> Receipt | BidInDoubt | None:
        """One bid through ``Taker.bid``; on a lost race, one retry with what is left there.

        A maker whose chain we used up is ruled out too, in this sweep and (by a
        cooldown) in the next ones: our book hears of it only when the maker's new
        versions arrive, and an uncrossing scan right after an order would
        otherwise reserve from the order's rest to bid on it again.
        """
        emptied = amount >= entry.amount
        for _ in range(2):
            try:
                receipt = self.taker.bid(entry.id, amount)
            except BidInDoubt as exc:
                self._count("in_doubt")
                avoid.owners.add(entry.owner)
                self.cooldowns.fail(entry.owner)
                return exc
            except errors.ApiError as exc:
                self._count(f"{exc.status}_{exc.code}")
                available = (exc.details or {}).get("available") if exc.status == 409 else None
                if exc.code == "insufficient_amount" and isinstance(available, int) and available:
                    emptied = amount >= available
                    amount = min(amount, available)
                    continue
                if exc.status in (502, 503):  # the owner (or the DHT) is not answering
                    avoid.owners.add(entry.owner)
                    self.cooldowns.fail(entry.owner)
                else:
                    avoid.ids.add(entry.id)
                    self.cooldowns.fail(entry.id)
                return None
            self._count("filled")
            self.cooldowns.clear(entry.owner)
            if emptied or receipt.remainder is None:
                avoid.ids.add(entry.id)
                for closed in {entry.id, receipt.offer_id}:
                    self.cooldowns.fail(closed)
            return receipt
        avoid.ids.add(entry.id)
        return None

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


# -- orders ----------------------------------------------------------------------------------


@dataclass
class Order:
    id: str
    side: str
    price: int  # cents per BTC: the limit
    amount: int  # satoshis
    tif: str
    created: int
    status: str = PENDING
    fills: list[Receipt] = field(default_factory=list)
    offer_id: str | None = None  # the resting offer a GTC rest was posted as
    in_doubt: list[Bid] = field(default_factory=list)  # sent, unanswered: they may have filled
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def filled(self) -> int:
        return sum(r.amount for r in self.fills)

    def close(self, rested: bool) -> None:
        if self.filled == self.amount:
            self.status = FILLED
        elif self.fills:
            self.status = PARTIAL
        else:
            self.status = RESTING if rested else CANCELLED

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "side": self.side,
            "price": self.price,
            "amount": self.amount,
            "tif": self.tif,
            "created": self.created,
            "status": self.status,
            "fills": [r.to_wire() for r in self.fills],
            "offer_id": self.offer_id,
            "in_doubt": [b.to_wire() for b in self.in_doubt],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Order:
        fills = [Receipt.from_wire(r) for r in doc["fills"]]
        order = cls(
            doc["id"],
            doc["side"],
            doc["price"],
            doc["amount"],
            doc["tif"],
            doc["created"],
            doc["status"],
            fills,
            doc["offer_id"],
            [Bid.from_wire(b) for b in doc.get("in_doubt", [])],
        )
        if order.status != PENDING:
            order.done.set()
        return order


class OrderStore:
    """Orders in the node's database (see ``OrderDesk.submit`` for when they are written)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.transaction() as db:
            db.execute(SCHEMA)

    def save(self, order: Order) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO orders (id, created, doc) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
                (order.id, order.created, json.dumps(order.to_doc())),
            )

    def get(self, order_id: str) -> Order | None:
        rows = self.store.query("SELECT doc FROM orders WHERE id = ?", (order_id,))
        return Order.from_doc(json.loads(rows[0][0])) if rows else None

    def latest(self, limit: int) -> list[Order]:
        rows = self.store.query(
            "SELECT doc FROM orders ORDER BY created DESC, id DESC LIMIT ?", (limit,)
        )
        return [Order.from_doc(json.loads(r[0])) for r in rows]

    def holding(self, bid_id: str) -> list[Order]:
        """Orders that list ``bid_id`` among their bids in doubt."""
        rows = self.store.query("SELECT doc FROM orders WHERE instr(doc, ?) > 0", (bid_id,))
        orders = (Order.from_doc(json.loads(r[0])) for r in rows)
        return [o for o in orders if any(b.bid_id == bid_id for b in o.in_doubt)]

    def pending(self) -> list[Order]:
        rows = self.store.query("SELECT doc FROM orders ORDER BY created")
        return [o for o in (Order.from_doc(json.loads(r[0])) for r in rows) if o.status == PENDING]


Task = Callable[[], None]


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
        store: Store,
        service: OfferService,
        sweeper: Sweeper,
        clock: Callable[[], int],
        max_waiting: int = 8,
        wait_s: float = 30.0,
    ) -> None:
        self.orders = OrderStore(store)
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
        self.rested: list[Callable[[], None]] = []  # told when a GTC rest was posted
        self.counts: Counter[str] = Counter()
        sweeper.taker.on_resolved.append(self._doubt_resolved)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        for order in self.orders.pending():  # cut short by a crash: close with what it got
            order.close(rested=False)
            self.orders.save(order)
        self._thread = threading.Thread(target=self._work, name="orders", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- intake ----------------------------------------------------------------------------

    def submit(self, side: str, price: int, amount: int, tif: str = GTC) -> Order:
        """Queue an order; return it done, or still pending if the wait was not allowed/long.

        An order is written to disk once its id is given out: at its first
        fill, when it is done, or here if it is handed back still pending.
        One that a crash cuts short before any of these never traded and was
        never acknowledged.
        """
        order = Order(new_id(), side, price, amount, tif, self.clock())
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
                    item.close(rested=False)
                    self._finish(item)
            finally:
                self._busy = False

    def _run(self, order: Order) -> None:
        def fill(receipt: Receipt) -> None:
            order.fills.append(receipt)
            self.orders.save(order)

        def doubt(bid: Bid) -> None:
            order.in_doubt.append(bid)
            self.orders.save(order)

        _, left = self.sweeper.take(
            order.side, order.price, order.amount, on_fill=fill, on_doubt=doubt
        )
        if left and order.tif == GTC:
            order.offer_id = self.service.create(order.side, order.price, left).id
            for listener in self.rested:
                listener()
        order.close(rested=order.offer_id is not None)
        self._finish(order)

    def _doubt_resolved(self, bid: Bid, receipt: Receipt | None) -> None:
        """A bid in doubt was settled: update its order, on the worker (after that order ran)."""
        self.enqueue(lambda: self._settle_doubt(bid, receipt))

    def _settle_doubt(self, bid: Bid, receipt: Receipt | None) -> None:
        for order in self.orders.holding(bid.bid_id):
            order.in_doubt = [b for b in order.in_doubt if b.bid_id != bid.bid_id]
            if receipt is not None:
                order.fills.append(receipt)
            if order.status != PENDING:
                order.close(rested=order.offer_id is not None)
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
