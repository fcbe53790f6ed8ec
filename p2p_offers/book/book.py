"""The order book of OPEN offers, in price-time priority, and the matching on it.

Every node keeps one of these for the whole network, and the matching engine
runs on the same structure (see ``levels`` for how it is laid out). There is
one matching loop (``Levels.walk``: best maker first, skipping the taker's own
offers, until the amount is filled), and everything that matches goes through
it: ``plan`` hands the walk to the node, which must win a bid on every step over
the network and may lose races, so it only plans; ``match`` applies it to the
book at once, which is what the benchmark and the reference-model tests
exercise. A change to the matching rules therefore lands in both.

Self-trade prevention: a taker never matches its own owner's offers. They are
skipped, not treated as a wall, and stay in the book untouched.

The book is single-threaded. Like a dict, it must not be modified while an
``entries`` iterator is live; ``crossing`` and ``plan`` walk the book up front,
so their caller may change the book while consuming the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum

from p2p_offers.book.levels import (
    AMOUNT,
    ENTRY,
    ID,
    LEAST,
    OWNER,
    PRICE,
    PRIORITY,
    SIDE,
    SIDES,
    UNLIMITED,
    Entry,
    Levels,
    Rec,
    Trade,
    entry_of,
    least_of,
    opposite,
)


class Tif(StrEnum):
    """Time in force of an order: GTC rests what is left, IOC drops it."""

    GTC = "gtc"
    IOC = "ioc"


TIFS = (Tif.GTC, Tif.IOC)

# ``Trade(...)`` runs a Python-level __new__; building the tuple directly skips
# that frame on the engine's hottest line and gives the same object.
_new_tuple = tuple.__new__


class Book:
    """Open offers of both sides, best first, with exact ``len``, ``best`` and ``depth``."""

    def __init__(self) -> None:
        self._recs: dict[str, Rec] = {}
        self._sides = {"buy": Levels("buy", -1), "sell": Levels("sell", 1)}
        buy, sell = self._sides["buy"], self._sides["sell"]
        # per taker side: (the side it rests on, the side it takes from)
        self._pairs = {"buy": (buy, sell), "sell": (sell, buy)}

    # -- public interface ------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """Insert ``entry``, or replace the live entry with the same id.

        A replace that keeps side, price and priority keeps the offer's place in
        its queue (an amount change must not cost time priority); anything else
        re-queues it by its (possibly unchanged) priority at its new price.
        """
        self._side(entry.side)  # validates
        if entry.amount <= 0 or entry.price <= 0:
            raise ValueError("an open offer needs a positive price and amount")
        old = self._recs.get(entry.id)
        if old is not None:
            if (old[SIDE], old[PRICE], old[PRIORITY]) == (entry.side, entry.price, entry.priority):
                old[AMOUNT] = entry.amount
                old[OWNER] = entry.owner
                old[ENTRY] = entry
                old[LEAST] = least_of(entry)
                return
            self._unlink(old)
        self._sides[entry.side].rest(
            self._recs,
            entry.id,
            entry.price,
            entry.amount,
            entry.priority,
            entry.owner,
            entry,
            least_of(entry),
        )

    def remove(self, id: str) -> Entry | None:
        rec = self._recs.get(id)
        if rec is None:
            return None
        entry = entry_of(rec)
        self.discard(id)
        return entry

    def get(self, id: str) -> Entry | None:
        rec = self._recs.get(id)
        return None if rec is None else entry_of(rec)

    def __len__(self) -> int:
        return len(self._recs)

    def __contains__(self, id: object) -> bool:
        return id in self._recs

    def best(self, side: str) -> Entry | None:
        """Best bid (highest buy) or best ask (lowest sell); ties by (priority, id)."""
        s = self._side(side)
        if s.head is None:
            return None
        return entry_of(s.levels[s.head[0]][0])

    def crossing(
        self, taker_side: str, limit_price: int, exclude_owner: str | None = None
    ) -> Iterator[Entry]:
        """Offers a ``taker_side`` order at ``limit_price`` would trade with, best first.

        ``exclude_owner``'s offers are skipped (self-trade prevention). This is a
        snapshot taken at the call, so the caller may change the book meanwhile.
        """
        walk = self._walk(taker_side, limit_price, UNLIMITED, exclude_owner)
        return iter([entry_of(rec) for rec, _ in walk])

    def depth(self, side: str, levels: int | None = None) -> list[tuple[int, int, int]]:
        """``(price, total amount, number of offers)`` per price level, best first."""
        out: list[tuple[int, int, int]] = []
        s = self._side(side)
        for key in s.level_keys():
            if levels is not None and len(out) >= levels:
                break
            amounts = [rec[AMOUNT] for rec in s.levels[key] if rec[AMOUNT]]
            out.append((key * s.sign, sum(amounts), len(amounts)))
        return out

    def entries(self, side: str | None = None) -> Iterator[Entry]:
        """All live entries, best first; with no side, bids first, then asks."""
        for name in SIDES if side is None else (side,):
            s = self._side(name)
            for key in s.level_keys():
                for rec in s.levels[key]:
                    if rec[AMOUNT]:
                        yield entry_of(rec)

    # -- matching ----------------------------------------------------------------

    def plan(
        self, taker_side: str, limit_price: int, amount: int, exclude_owner: str | None
    ) -> list[tuple[Entry, int]]:
        """``(maker, amount to take)`` for a taker order, best first, never ``exclude_owner``'s.

        A snapshot: the plan assumes every take succeeds, and the book is not
        changed. A node that loses a race on one step re-plans what is left.
        """
        if amount <= 0:
            return []
        walk = self._walk(taker_side, limit_price, amount, exclude_owner)
        return [(entry_of(rec), take) for rec, take in walk]

    def match(
        self,
        order_id: str,
        owner: str,
        side: str,
        price: int,
        amount: int,
        priority: int,
        tif: str = "gtc",
    ) -> list[Trade]:
        """Fill a limit order against the book at once; rest what is left if GTC, drop it if IOC.

        Returns the trades in the order they happened (best maker first). This
        is the engine benchmark's hot path: it skips the walk when the best
        maker does not cross and keeps no bookkeeping beyond the book itself.
        """
        recs = self._recs
        if order_id in recs:
            raise ValueError(f"order {order_id} is already in the book")
        if amount <= 0 or price <= 0:
            raise ValueError("an order needs a positive price and amount")
        if tif not in TIFS:
            raise ValueError(f"tif must be 'gtc' or 'ioc', not {tif!r}")
        try:
            own, makers = self._pairs[side]
        except KeyError:
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}") from None
        trades: list[Trade] = []
        sign = makers.sign
        limit_key = price * sign
        head = makers.head
        if head is not None and head[0] <= limit_key:
            emptied = None  # key of the last level a maker was used up on, to trim
            for rec, take in makers.walk(limit_key, amount, owner):
                left = rec[AMOUNT] = rec[AMOUNT] - take
                rec[ENTRY] = None
                if not left:
                    del recs[rec[ID]]
                    key = rec[PRICE] * sign
                    if key != emptied:
                        if emptied is not None:
                            makers.trim(emptied)
                        emptied = key
                trades.append(_new_tuple(Trade, (rec[ID], order_id, rec[PRICE], take)))
                amount -= take
            if emptied is not None:
                makers.trim(emptied)
        if amount and tif == "gtc":
            own.rest(recs, order_id, price, amount, priority, owner)
        return trades

    def discard(self, id: str) -> bool:
        """``remove`` without building the ``Entry`` it would return; False if not here."""
        rec = self._recs.pop(id, None)
        if rec is None:
            return False
        self._unlink(rec)
        return True

    def _walk(
        self, taker_side: str, limit_price: int, amount: int, exclude_owner: str | None
    ) -> list[tuple[Rec, int]]:
        """``Levels.walk`` over the makers a ``taker_side`` order would meet."""
        self._side(taker_side)  # validates: ``opposite`` would map junk to "buy"
        s = self._sides[opposite(taker_side)]
        return s.walk(limit_price * s.sign, amount, exclude_owner)

    # -- internals -------------------------------------------------------------

    def _side(self, side: str) -> Levels:
        try:
            return self._sides[side]
        except KeyError:
            raise ValueError(f"side must be 'buy' or 'sell', not {side!r}") from None

    def _unlink(self, rec: Rec) -> None:
        """Take a record out of its level; the caller has dropped it from ``_recs``."""
        self._sides[rec[SIDE]].discard(rec)
