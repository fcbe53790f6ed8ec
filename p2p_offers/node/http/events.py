"""What happens on this node, as events for ``GET /events`` (served by ``event_stream``).

Three kinds of event, each an SSE ``event:`` with an ``id:`` and one line of
JSON ``data:`` (the shapes are the REST API's, docs/events.md):

- ``book``: an offer entered, changed in or left this node's book of the
  network, its own or another's (``{"change": "open"|"closed"|"expired", "offer"}``);
- ``fill``: a fill of ours, as the maker (a bid on one of our offers) or the
  taker (our bid): ``{"role", "fill"}``, the signed receipt;
- ``trade``: a ledger entry this node stored, in its own feed or a replicated
  one: ``{"owner", "height", "trade"}``;
- ``bid``: a bid on a manual offer received, sent, or decided (accepted,
  rejected, expired) on this node: ``{"bid"}``, as ``GET /bids/<bid_id>`` shows it.

Three control events carry no id (so a browser's ``lastEventId`` is left alone):
``hello`` first, ``reset`` when the events since the client's ``Last-Event-ID``
are no longer known (refetch what you show), ``dropped`` before the node ends
the stream of a client that fell behind (reconnect; the ring replays).

Why it is shaped this way:

- The node never waits for a client. ``EventHub.publish`` runs on the thread
  that made the change (under the index's lock for book changes, so events
  come in the order the changes happened): it appends to a bounded ring and
  puts into each client's bounded queue without blocking; a full queue drops
  that client. Rendering the JSON happens later, once per event, on the
  streaming threads, so a node with no client pays an object per change.
- A stream holds one of waitress's threads: how streams are bounded and a
  slow client dropped is in ``event_stream``.
- Ids are integers increasing by one, seeded from the wall clock in
  microseconds at start, so they also increase across restarts and an id from
  before a restart is recognised as older than anything in the ring (``reset``)
  rather than mistaken for a recent one.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from p2p_offers.bids import Receipt
from p2p_offers.ledger import LedgerEntry
from p2p_offers.node import errors
from p2p_offers.node.http.views import manual_bid_view, offer_view, receipt_view
from p2p_offers.node.network.index import DROPPED
from p2p_offers.node.storage.database import Tx
from p2p_offers.node.storage.pending import ManualBid
from p2p_offers.node.storage.receipts import StoredFill
from p2p_offers.offers import OPEN, SignedOffer

log = logging.getLogger(__name__)

BOOK, FILL, TRADE, BID = "book", "fill", "trade", "bid"
TYPES = (BOOK, FILL, TRADE, BID)
RING = 1024  # events kept for resuming with Last-Event-ID
QUEUE = 256  # events waiting for one client before it is dropped as slow

Render = Callable[[], Mapping[str, Any]]


class Event:
    """One event; its frame (the bytes sent) is rendered on first use and kept."""

    __slots__ = ("_frame", "_render", "id", "type")

    def __init__(self, event_id: int, type_: str, render: Render) -> None:
        self.id = event_id
        self.type = type_
        self._render = render
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:  # two threads may both render it: the same bytes, harmless
            data = json.dumps(self._render(), separators=(",", ":"))
            frame = self._frame = f"id: {self.id}\nevent: {self.type}\ndata: {data}\n\n".encode()
        return frame


def control(type_: str, data: Mapping[str, Any]) -> bytes:
    """A control event: no id, so it neither moves nor is replayed by ``Last-Event-ID``."""
    return f"event: {type_}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Subscription:
    """One client: its bounded queue (None in it means the node is stopping)."""

    __slots__ = ("dropped", "queue", "released", "types")

    def __init__(self, types: frozenset[str] | None, size: int) -> None:
        self.types = types
        self.queue: queue.Queue[Event | None] = queue.Queue(size)
        self.dropped: str | None = None  # why the hub stopped feeding it
        self.released = False

    def wants(self, type_: str) -> bool:
        return self.types is None or type_ in self.types


class EventHub:
    """The node's events: a ring for resuming and the clients' queues. Thread-safe."""

    def __init__(
        self,
        max_clients: int,
        ring: int = RING,
        queue_size: int = QUEUE,
        first_id: int | None = None,
    ) -> None:
        self.max_clients = max_clients
        self._queue_size = queue_size
        self._lock = threading.Lock()
        start = first_id if first_id is not None else time.time_ns() // 1000
        self._last = start - 1  # the id of the newest event
        self._ring: deque[Event] = deque(maxlen=ring)
        self._subs: list[Subscription] = []
        self._slots = 0  # open streams, counted until their thread lets go
        self._closed = False
        self._counts: Counter[str] = Counter()

    # -- the node's side --------------------------------------------------------------------

    def publish(self, type_: str, render: Render) -> None:
        """Record an event and hand it to every client that wants it; never blocks or raises."""
        try:
            with self._lock:
                self._last += 1
                event = Event(self._last, type_, render)
                self._ring.append(event)
                self._counts[type_] += 1
                for sub in list(self._subs):
                    if sub.wants(type_):
                        try:
                            sub.queue.put_nowait(event)
                        except queue.Full:
                            self._drop(sub, "slow")
        except Exception:  # a listener must never fail the change that emitted it
            log.exception("publishing a %s event failed", type_)

    def on_book(self, signed: SignedOffer, what: str) -> None:
        """``OfferIndex.changed``: a version applied, or an offer dropped as expired."""
        is_open = signed.offer.status == OPEN
        if what == DROPPED:
            if not is_open:
                return  # a closed record ageing out: it left the book when it closed
            change = "expired"
        else:
            change = "open" if is_open else "closed"
        self.publish(BOOK, partial(_book_data, change, signed))

    def on_maker_fills(self, tx: Tx, fills: list[StoredFill]) -> None:
        """``OfferService.recording_fills`` (inside the fill's transaction): told once durable."""
        tx.after_commit(lambda: self._fills(fills))

    def on_taker_fill(self, fill: StoredFill) -> None:
        self._fills([fill])

    def _fills(self, fills: list[StoredFill]) -> None:
        for fill in fills:
            self.publish(FILL, partial(_fill_data, fill))

    def on_bid(self, row: ManualBid) -> None:
        """``ManualBids.changed``: a bid on a manual offer written or decided (committed)."""
        self.publish(BID, partial(_bid_data, row))

    def on_entries(self, entries: list[LedgerEntry]) -> None:
        """Ledger entries stored (ours after their commit, or another maker's, verified)."""
        for entry in entries:
            self.publish(TRADE, partial(_trade_data, entry))

    def close(self) -> None:
        """The node stops: every stream ends after what it has queued."""
        with self._lock:
            self._closed = True
            for sub in self._subs:
                try:
                    sub.queue.put_nowait(None)
                except queue.Full:
                    sub.dropped = "stopping"
            self._subs.clear()

    # -- the streams' side --------------------------------------------------------------------

    def subscribe(
        self, after: int | None, types: frozenset[str] | None
    ) -> tuple[Subscription, list[Event], str | None, int]:
        """A new client: (its subscription, events to replay, why it must reset, newest id).

        Taken under the lock, so nothing falls between the replay and the live
        events. ``after`` is the client's Last-Event-ID: the events after it
        are replayed if the ring still holds them all; otherwise the reason is
        ``gap`` (older than the ring, or from before a restart) or
        ``unknown_id`` (newer than any event here: another node's id).
        """
        with self._lock:
            if self._closed:
                raise errors.TooManyClients("the node is stopping", {"max_clients": 0})
            if self._slots >= self.max_clients:
                self._counts["refused"] += 1
                raise errors.TooManyClients(
                    f"this node serves at most {self.max_clients} event streams at once; "
                    "try again later",
                    {"max_clients": self.max_clients},
                )
            self._slots += 1
            self._counts["connected"] += 1
            sub = Subscription(types, self._queue_size)
            backlog: list[Event] = []
            reset: str | None = None
            if after is not None and after != self._last:
                oldest = self._ring[0].id if self._ring else self._last + 1
                if after > self._last:
                    reset = "unknown_id"
                elif after < oldest - 1:
                    reset = "gap"
                else:
                    backlog = [e for e in self._ring if e.id > after and sub.wants(e.type)]
            if reset is not None:
                self._counts["reset"] += 1
            self._subs.append(sub)
            return sub, backlog, reset, self._last

    def drop(self, sub: Subscription, why: str) -> None:
        with self._lock:
            self._drop(sub, why)

    def _drop(self, sub: Subscription, why: str) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            sub.dropped = why
            self._counts[f"dropped_{why}"] += 1

    def release(self, sub: Subscription) -> None:
        """The stream's thread is done with it (idempotent): its slot is free again."""
        with self._lock:
            if sub.released:
                return
            sub.released = True
            if sub in self._subs:
                self._subs.remove(sub)
            self._slots -= 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = {"connected": 0, "refused": 0, "reset": 0, "dropped_slow": 0}
            counts.update(self._counts)
            return {
                "clients": self._slots,
                "max_clients": self.max_clients,
                "last_id": self._last,
                **{k: counts.pop(k) for k in TYPES if k in counts},
                **counts,
            }


def _book_data(change: str, signed: SignedOffer) -> dict[str, Any]:
    return {"change": change, "offer": offer_view(signed)}


def _fill_data(fill: StoredFill) -> dict[str, Any]:
    return {"role": str(fill.role), "fill": receipt_view(fill.receipt)}


def _bid_data(row: ManualBid) -> dict[str, Any]:
    return {"bid": manual_bid_view(row)}


def _trade_data(entry: LedgerEntry) -> dict[str, Any]:
    receipt = Receipt.from_wire(entry["receipt"])  # verified before it was stored
    return {"owner": entry["owner"], "height": entry["height"], "trade": receipt_view(receipt)}
