"""The matching engine: a book that fills incoming orders at once (benchmark, reference tests)."""

from __future__ import annotations

from collections.abc import Iterator

from p2p_offers.book.book import Book
from p2p_offers.book.levels import Entry


class MatchingEngine:
    """A limit-order book that fills incoming orders in price-time priority.

    ``submit`` is ``Book.match`` itself (bound once, so the benchmark's hot path
    has no extra frame); ``cancel`` removes a resting order.
    """

    def __init__(self, book: Book | None = None) -> None:
        self.book = book if book is not None else Book()
        self.submit = self.book.match

    def cancel(self, order_id: str) -> bool:
        """Remove a resting order; False if it is not resting (filled, cancelled, unknown)."""
        return self.book.discard(order_id)


def plan(
    book: Book, taker_side: str, limit_price: int, amount: int, owner: str
) -> Iterator[tuple[Entry, int]]:
    """``Book.plan`` as an iterator (see there)."""
    return iter(book.plan(taker_side, limit_price, amount, owner))
