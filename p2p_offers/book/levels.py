"""Inside the book: the record layout, one side's price levels, and THE matching loop.

Nothing here is exported from ``p2p_offers.book``; ``Book`` (``book.py``) is the
interface. The layout is built for the engine's hot path:

* Each side keeps a ``dict`` of price levels plus a sorted index of the level
  keys (bucketed, with the buckets in a ``SortedList``: see ``Side``). The
  index is touched only when a level appears or disappears; adding to an
  existing level is a dict lookup and a list append.
* Level keys sort best-first on both sides: asks use the price, bids the
  negated price. One comparison (``key <= limit_key``) then says "crosses"
  for either side, and the first key is always the best level.
* Inside a level, offers queue by ``(priority, id)``. Priorities almost always
  arrive in order, so inserting is an append; the rare out-of-order insert (a
  remainder keeping its parent's priority) bisects.
* Cancelling is lazy: the record is marked dead (amount 0, which no live offer
  can have) and left in its queue, so a cancel in the middle of a long level is
  O(1) amortized. Dead records are dropped when they reach the front, or when
  they make up half a level. A fill that uses up a maker marks it dead the
  same way. The invariant that keeps ``best``, ``len`` and ``depth`` exact is:
  **the front record of every level is live**, and a level exists only while
  it has a live record.

An offer is a small mutable list (``Rec``) rather than an ``Entry``: the
engine fills makers partially all the time, and rebuilding a frozen dataclass
per fill would cost more than the rest of the fill. ``Entry`` objects are built
on demand (``entry_of``) and cached until the record changes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from sortedcontainers import SortedList


class Side(StrEnum):
    """The side of an offer: its maker buys or sells BTC. The one definition of sides."""

    BUY = "buy"
    SELL = "sell"


SIDES = (Side.BUY, Side.SELL)

# Record layout: a list is cheaper to create and index than any object.
AMOUNT, PRIORITY, ID, OWNER, PRICE, SIDE, ENTRY, LEAST = range(8)
Rec = list[Any]

BUCKET_BITS = 11  # price levels per bucket: 2048 cents, $20.48 of price
UNLIMITED = 1 << 62  # an amount no walk can fill: more satoshis than will ever exist


@dataclass(frozen=True, slots=True)
class Entry:
    """One open offer as the book sees it."""

    id: str  # offer id (uuid4 string)
    side: str  # "buy" or "sell": the maker buys/sells BTC
    price: int  # cents per BTC
    amount: int  # satoshis still offered
    priority: int  # ms timestamp of the original placement (remainders keep the parent's)
    owner: str  # maker's public key hex
    min_amount: int = 0  # smallest take the maker allows (0: any); see ``least_of``
    manual: bool = False  # the maker accepts each bid by hand: no walk ever takes it


def least_of(entry: Entry) -> int:
    """What a record keeps in ``LEAST``: 0 (any take), the maker's minimum, or
    ``UNLIMITED`` for a manual offer (more than any walk can want: never matched)."""
    return UNLIMITED if entry.manual else entry.min_amount


class Trade(NamedTuple):
    """One fill, always at the maker's (resting) price."""

    maker_id: str
    taker_id: str
    price: int  # cents per BTC: the maker's price
    amount: int  # satoshis


def opposite(side: str) -> str:
    return "sell" if side == "buy" else "buy"


def _queue_key(rec: Rec) -> tuple[int, str]:
    return rec[PRIORITY], rec[ID]


class Levels:
    """One side of the book: price levels, their keys in best-first order, and the walk.

    ``sign`` maps a price to its level key. The keys are bucketed by
    ``key >> BUCKET_BITS``: each bucket is a plain sorted list (C-level
    ``insort``), and only the bucket ids live in a ``SortedList``. On a 1-cent
    tick most new orders open a new level (83% in the benchmark), and a
    ``SortedList.add`` per level cost as much as the rest of the order; a
    bucket spans 2048 adjacent cents, so ``insort`` into it moves a few
    hundred pointers at most, while the ``SortedList`` keeps the index
    O(log n) however spread the prices. ``head`` is the first bucket, so the
    best level is ``head[0]``. (2048 measured best among 2^6..2^14 on the
    benchmark: narrower buckets are created and dropped at the top of the book
    all the time, wider ones make ``insort`` move more.)

    A level is a plain list: levels are short, and the dead records at the
    front are cut off in one ``del queue[:n]`` per walk, not one by one.
    """

    __slots__ = ("buckets", "buried", "head", "levels", "name", "order", "sign")

    def __init__(self, name: str, sign: int) -> None:
        self.name = name
        self.sign = sign
        self.levels: dict[int, list[Rec]] = {}
        self.buckets: dict[int, list[int]] = {}
        self.order: SortedList = SortedList()  # bucket ids
        self.head: list[int] | None = None  # the first bucket; never an empty list
        self.buried: dict[int, int] = {}  # level key -> dead records behind its front (at most)

    def level_keys(self) -> Iterator[int]:
        """Level keys, best first."""
        buckets = self.buckets
        for bucket in self.order:
            yield from buckets[bucket]

    def walk(self, limit_key: int, amount: int, exclude_owner: str | None) -> list[tuple[Rec, int]]:
        """THE matching loop: ``(record, amount to take)`` best first until ``amount`` is filled.

        Only makers whose level key is ``<= limit_key`` cross. ``exclude_owner``'s
        records are skipped, not stopped at: self-trade prevention must not hide
        the better offers of others behind one's own. The engine, the node's
        planner and ``Book.crossing`` all walk through here. It returns a list
        rather than yielding, because the engine changes the records it gets
        back and a finished list cannot be confused by that.
        """
        fills: list[tuple[Rec, int]] = []
        levels = self.levels
        keys = self.head
        later = None  # the buckets after the head: most walks end in the head bucket
        while keys is not None:
            for key in keys:
                if key > limit_key:
                    return fills
                for rec in levels[key]:
                    available = rec[AMOUNT]
                    if available and rec[OWNER] != exclude_owner:
                        least = rec[LEAST]
                        if least and (least == UNLIMITED or least > amount < available):
                            continue
                        if available >= amount:
                            fills.append((rec, amount))
                            return fills
                        fills.append((rec, available))
                        amount -= available
            if later is None:
                later = iter(self.order)
                next(later)  # the head's
            bucket = next(later, None)
            keys = None if bucket is None else self.buckets[bucket]
        return fills

    def rest(
        self,
        recs: dict[str, Rec],
        id: str,
        price: int,
        amount: int,
        priority: int,
        owner: str,
        entry: Entry | None = None,
        least: int = 0,
    ) -> None:
        """Record a new id in ``recs`` and queue it at its level by ``(priority, id)``.

        The one place a record is made. Queueing is almost always an append.
        """
        rec = recs[id] = [amount, priority, id, owner, price, self.name, entry, least]
        key = price * self.sign
        queue = self.levels.get(key)
        if queue is None:  # a new level: on a 1-cent tick, most orders open one
            self.levels[key] = [rec]
            bucket = key >> BUCKET_BITS
            keys = self.buckets.get(bucket)
            if keys is None:
                keys = self.buckets[bucket] = [key]
                self.order.add(bucket)
                if self.head is None or key < self.head[0]:
                    self.head = keys
            else:
                insort(keys, key)
            return
        last = queue[-1]
        if last[PRIORITY] < rec[PRIORITY] or (
            last[PRIORITY] == rec[PRIORITY] and last[ID] <= rec[ID]
        ):
            queue.append(rec)
        else:  # a remainder keeping its parent's priority, or a replace keeping its own
            queue.insert(bisect_right(queue, _queue_key(rec), key=_queue_key), rec)

    def discard(self, rec: Rec) -> None:
        """Mark a record dead: cut off at once at the front, lazily behind it.

        Dead records behind a live front are counted per level, and the level
        is compacted once they are half of it, so a level whose front never
        trades cannot fill up with cancelled offers.
        """
        rec[AMOUNT] = 0
        rec[ENTRY] = None
        key = rec[PRICE] * self.sign
        queue = self.levels[key]
        if queue[0] is rec:
            self.trim(key)
            return
        buried = self.buried.get(key, 0) + 1
        if 2 * buried > len(queue):
            queue[:] = [r for r in queue if r[AMOUNT]]
            self.buried.pop(key, None)
        else:
            self.buried[key] = buried

    def trim(self, key: int) -> None:
        """Cut the dead records off the front of a level, and the level once it is empty."""
        queue = self.levels[key]
        size = len(queue)
        dead = 0
        while dead < size and not queue[dead][AMOUNT]:
            dead += 1
        if dead < size:
            if dead:
                del queue[:dead]
            return
        del self.levels[key]
        if self.buried:
            self.buried.pop(key, None)
        bucket = key >> BUCKET_BITS
        keys = self.buckets[bucket]
        if keys[0] == key:
            del keys[0]
        else:
            del keys[bisect_left(keys, key)]
        if keys:
            return
        del self.buckets[bucket]
        if keys is self.head:
            self.order.pop(0)
            self.head = self.buckets[self.order[0]] if self.order else None
        else:
            self.order.remove(bucket)


def entry_of(rec: Rec) -> Entry:
    entry = rec[ENTRY]
    if entry is None:
        least = rec[LEAST]
        entry = rec[ENTRY] = Entry(
            rec[ID],
            rec[SIDE],
            rec[PRICE],
            rec[AMOUNT],
            rec[PRIORITY],
            rec[OWNER],
            0 if least == UNLIMITED else least,
            least == UNLIMITED,
        )
    return entry
