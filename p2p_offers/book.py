"""The order book of OPEN offers: price levels with FIFO queues, in price-time priority.

Every node keeps one of these for the whole network, and the matching engine
runs on the same structure, so it is built for the engine's hot path:

* Each side keeps a ``dict`` of price levels plus a ``SortedList`` of the level
  keys. The sorted list is touched only when a level appears or disappears;
  adding to an existing level is a dict lookup and a deque append.
* Level keys sort best-first on both sides: asks use the price, bids the
  negated price. One comparison (``key <= limit_key``) then says "crosses"
  for either side, and ``keys[0]`` is always the best level.
* Inside a level, offers queue by ``(priority, id)``. Priorities almost always
  arrive in order, so inserting is an append; the rare out-of-order insert (a
  remainder keeping its parent's priority) bisects.
* Cancelling is lazy: the record is marked dead (amount 0, which no live offer
  can have) and left in its queue, so a cancel in the middle of a long level is
  O(1). Dead records are dropped when they reach the front. The invariant that
  keeps ``best``, ``len`` and ``depth`` exact is: **the front record of every
  level is live**, and a level exists only while it has a live record.

Internally an offer is a small mutable list (``_Rec``) rather than an ``Entry``:
the engine fills makers partially all the time, and rebuilding a frozen
dataclass per fill would cost more than the rest of the fill. ``Entry`` objects
are built on demand and cached until the record changes.

The book is single-threaded and, like a dict, must not be modified while one
of its iterators (``crossing``, ``entries``) is live: take ``list(...)`` first.
Changing the remaining amount of a record during a walk is the one exception,
and it is what the engine does.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedList

SIDES = ("buy", "sell")

# Record layout: a list is cheaper to create and index than any object.
AMOUNT, PRIORITY, ID, OWNER, PRICE, SIDE, ENTRY = range(7)
_Rec = list[Any]


@dataclass(frozen=True, slots=True)
class Entry:
    """One open offer as the book sees it."""

    id: str  # offer id (uuid4 string)
    side: str  # "buy" or "sell": the maker buys/sells BTC
    price: int  # cents per BTC
    amount: int  # satoshis still offered
    priority: int  # ms timestamp of the original placement (remainders keep the parent's)
    owner: str  # maker's public key hex


def opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def _queue_key(rec: _Rec) -> tuple[int, str]:
    return rec[PRIORITY], rec[ID]


class _Side:
    """One side of the book. ``sign`` maps a price to its best-first level key."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.levels: dict[int, deque[_Rec]] = {}
        self.keys: SortedList = SortedList()


class Book:
    """Open offers of both sides, best first, with exact ``len``, ``best`` and ``depth``."""

    def __init__(self) -> None:
        self._recs: dict[str, _Rec] = {}
        self._sides = {"buy": _Side(-1), "sell": _Side(1)}

    # -- public interface ------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Insert ``entry``, or replace the live entry with the same id.

        A replace that keeps side, price and priority keeps the offer's place in
        its queue (an amount change must not cost time priority); anything else
        re-queues it by its (possibly unchanged) priority at its new price.
        """
        if entry.side not in self._sides:
            raise ValueError(f"side must be 'buy' or 'sell', not {entry.side!r}")
        if entry.amount <= 0 or entry.price <= 0:
            raise ValueError("an open offer needs a positive price and amount")
        old = self._recs.get(entry.id)
        if old is not None:
            if (old[SIDE], old[PRICE], old[PRIORITY]) == (entry.side, entry.price, entry.priority):
                old[AMOUNT] = entry.amount
                old[OWNER] = entry.owner
                old[ENTRY] = entry
                return
            self._unlink(old)
        rec = [entry.amount, entry.priority, entry.id, entry.owner, entry.price, entry.side, entry]
        self._recs[entry.id] = rec
        self._enqueue(rec)

    def remove(self, id: str) -> Entry | None:
        rec = self._recs.pop(id, None)
        if rec is None:
            return None
        entry = _entry(rec)
        self._unlink(rec)
        return entry

    def get(self, id: str) -> Entry | None:
        rec = self._recs.get(id)
        return None if rec is None else _entry(rec)

    def __len__(self) -> int:
        return len(self._recs)

    def __contains__(self, id: object) -> bool:
        return id in self._recs

    def best(self, side: str) -> Entry | None:
        """Best bid (highest buy) or best ask (lowest sell); ties by (priority, id)."""
        s = self._sides[side]
        if not s.keys:
            return None
        return _entry(s.levels[s.keys[0]][0])

    def crossing(
        self, taker_side: str, limit_price: int, exclude_owner: str | None = None
    ) -> Iterator[Entry]:
        """Offers a ``taker_side`` order at ``limit_price`` would trade with, best first.

        ``exclude_owner``'s offers are skipped, not stopped at: self-trade
        prevention must not hide the better offers of others behind one's own.
        """
        for rec in self._crossing_recs(taker_side, limit_price, exclude_owner):
            yield _entry(rec)

    def depth(self, side: str, levels: int | None = None) -> list[tuple[int, int, int]]:
        """``(price, total amount, number of offers)`` per price level, best first."""
        out: list[tuple[int, int, int]] = []
        s = self._sides[side]
        for key in s.keys:
            if levels is not None and len(out) >= levels:
                break
            amounts = [rec[AMOUNT] for rec in s.levels[key] if rec[AMOUNT]]
            out.append((key * s.sign, sum(amounts), len(amounts)))
        return out

    def entries(self, side: str | None = None) -> Iterator[Entry]:
        """All live entries, best first; with no side, bids first, then asks."""
        for name in SIDES if side is None else (side,):
            s = self._sides[name]
            for key in s.keys:
                for rec in s.levels[key]:
                    if rec[AMOUNT]:
                        yield _entry(rec)

    # -- engine interface (used by p2p_offers.matching) ------------------------

    def _crossing_recs(
        self, taker_side: str, limit_price: int, exclude_owner: str | None
    ) -> Iterator[_Rec]:
        """Live records that cross, best first. Only amounts may change meanwhile."""
        s = self._sides[opposite(taker_side)]
        limit_key = limit_price * s.sign
        levels = s.levels
        for key in s.keys:
            if key > limit_key:
                return
            for rec in levels[key]:
                if rec[AMOUNT] and rec[OWNER] != exclude_owner:
                    yield rec

    def _rest(self, id: str, side: str, price: int, amount: int, priority: int, owner: str) -> None:
        """``add`` for the engine: a new id, no ``Entry`` built unless someone asks."""
        rec = [amount, priority, id, owner, price, side, None]
        self._recs[id] = rec
        self._enqueue(rec)

    def _settle(self, side: str, prices: list[int]) -> None:
        """Restore the front-is-live invariant on levels whose records a walk used up.

        The engine zeroes makers' amounts while walking (structural changes would
        break the walk) and settles the levels afterwards, in walk order.
        """
        s = self._sides[side]
        for price in prices:
            self._trim(s, price * s.sign)

    # -- internals -------------------------------------------------------------

    def _enqueue(self, rec: _Rec) -> None:
        s = self._sides[rec[SIDE]]
        key = rec[PRICE] * s.sign
        queue = s.levels.get(key)
        if queue is None:
            s.levels[key] = deque((rec,))
            s.keys.add(key)
        elif _queue_key(queue[-1]) <= _queue_key(rec):
            queue.append(rec)
        else:
            queue.insert(bisect_right(queue, _queue_key(rec), key=_queue_key), rec)

    def _unlink(self, rec: _Rec) -> None:
        """Take a record out of its level lazily; the caller has dropped it from ``_recs``."""
        rec[AMOUNT] = 0
        rec[ENTRY] = None
        s = self._sides[rec[SIDE]]
        key = rec[PRICE] * s.sign
        if s.levels[key][0] is rec:
            self._trim(s, key)

    @staticmethod
    def _trim(s: _Side, key: int) -> None:
        """Drop dead records from the front of a level, and the level once it is empty."""
        queue = s.levels.get(key)
        if queue is None:
            return
        while queue and not queue[0][AMOUNT]:
            queue.popleft()
        if not queue:
            del s.levels[key]
            if s.keys[0] == key:
                s.keys.pop(0)
            else:
                s.keys.remove(key)


def _entry(rec: _Rec) -> Entry:
    entry = rec[ENTRY]
    if entry is None:
        entry = rec[ENTRY] = Entry(
            rec[ID], rec[SIDE], rec[PRICE], rec[AMOUNT], rec[PRIORITY], rec[OWNER]
        )
    return entry
