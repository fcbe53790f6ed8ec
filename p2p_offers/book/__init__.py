"""The book of open offers and its matching engine: pure, single-threaded, one package."""

from p2p_offers.book.book import TIFS, Book, Tif
from p2p_offers.book.engine import MatchingEngine, plan
from p2p_offers.book.levels import SIDES, Entry, Side, Trade, opposite

__all__ = [
    "SIDES",
    "TIFS",
    "Book",
    "Entry",
    "MatchingEngine",
    "Side",
    "Tif",
    "Trade",
    "opposite",
    "plan",
]
