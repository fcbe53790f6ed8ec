"""Price-time limit-order matching over ``Book``: the engine and the node's planner.

Both run the book's one matching loop (``_Side.walk``: best maker first,
skipping the taker's own offers, until the amount is filled). ``plan`` hands
that walk to the node, which must win a bid on every step over the network and
may lose races, so it only plans; ``MatchingEngine.submit`` applies the walk to
the book at once, which is what the benchmark and the reference-model tests
exercise. A change to the matching rules therefore lands in both.

Self-trade prevention: a taker never matches its own owner's offers. They are
skipped, not treated as a wall, and stay in the book untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from p2p_offers.book import AMOUNT, ENTRY, ID, PRICE, Book, Entry, _entry

TIFS = ("gtc", "ioc")


class Trade(NamedTuple):
    """One fill, always at the maker's (resting) price."""

    maker_id: str
    taker_id: str
    price: int  # cents per BTC: the maker's price
    amount: int  # satoshis


# ``Trade(...)`` runs a Python-level __new__; building the tuple directly skips
# that frame on the engine's hottest line and gives the same object.
_new_tuple = tuple.__new__


def plan(
    book: Book, taker_side: str, limit_price: int, amount: int, owner: str
) -> Iterator[tuple[Entry, int]]:
    """``(maker entry, amount to take)`` for a taker order, best first, never from ``owner``.

    A snapshot: the plan assumes every take succeeds. A node that loses a race
    on one step should re-plan its remaining amount against the updated book.
    """
    if amount <= 0:
        return iter(())
    return iter(
        [(_entry(rec), take) for rec, take in book._walk(taker_side, limit_price, amount, owner)]
    )


class MatchingEngine:
    """A limit-order book that fills incoming orders in price-time priority.

    ``submit`` is the engine benchmark's hot path: it binds the book's sides
    once, skips the walk when the best maker does not cross, and keeps no
    per-order bookkeeping beyond the book itself.
    """

    def __init__(self, book: Book | None = None) -> None:
        self.book = book if book is not None else Book()
        sides = self.book._sides
        # per taker side: (the side it rests on, the side it takes from)
        self._sides = {"buy": (sides["buy"], sides["sell"]), "sell": (sides["sell"], sides["buy"])}

    def submit(
        self,
        order_id: str,
        owner: str,
        side: str,
        price: int,
        amount: int,
        priority: int,
        tif: str = "gtc",
    ) -> list[Trade]:
        """Match a limit order; rest what is left if GTC, drop it if IOC.

        Returns the trades in the order they happened (best maker first).
        """
        book = self.book
        recs = book._recs
        if order_id in recs:
            raise ValueError(f"order {order_id} is already in the book")
        if amount <= 0 or price <= 0:
            raise ValueError("an order needs a positive price and amount")
        if tif not in TIFS:
            raise ValueError(f"tif must be 'gtc' or 'ioc', not {tif!r}")
        try:
            own, makers = self._sides[side]
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

    def cancel(self, order_id: str) -> bool:
        """Remove a resting order; False if it is not resting (filled, cancelled, unknown)."""
        return self.book._discard(order_id)
