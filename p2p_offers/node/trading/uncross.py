"""Uncrossing: an open offer of ours that crosses an OLDER offer of another owner takes it.

Two makers can post crossing offers at the same moment, each before it has
seen the other's. The rule (SPEC §6): of two crossing offers of different
owners, the owner of the NEWER one (later ``priority``, ties broken by id)
takes the older one with a bid at the older one's price, which is exactly what
a central exchange would have done had the newer offer arrived as an order
after the older one rested. Both owners see the same signed priorities and
ids, so they agree on who acts, and only one of them does; once the network is
quiet no two open offers of different owners cross on any node.

No double selling: the amount is first reserved by shrinking our offer
(``OfferService.resize``, under the chain's lock, so a concurrent fill is never
undone and the reserved satoshis cannot be sold to anybody else), then the
sweep bids, and whatever it could not use is given back (the offer grows
again, or, if the reservation took all of it and closed it, a new offer with
the rest is posted: ``OfferService.give_back``; an offer its owner cancelled
meanwhile is never posted again). The work runs as a task on the order worker, so it never
interleaves with one of our orders.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import SIDES, Book, Entry
from p2p_offers.money import MAX_PRICE_CENTS
from p2p_offers.node import errors
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.offers.maker import OfferService
from p2p_offers.node.trading.desk import OrderDesk
from p2p_offers.node.trading.sweeper import Sweeper
from p2p_offers.offers import OPEN, SignedOffer

log = logging.getLogger(__name__)

# A taker limit every maker on the other side crosses: used to find the best foreign maker.
_ANY_PRICE = {"buy": MAX_PRICE_CENTS, "sell": 1}


def newer(a: Entry, b: Entry) -> bool:
    """``a`` was placed after ``b`` (priority, then id): the owner of ``a`` must act."""
    return (a.priority, a.id) > (b.priority, b.id)


def _crosses(side: str, own_price: int, other_price: int) -> bool:
    return own_price >= other_price if side == "buy" else own_price <= other_price


def crossed(book: Book, me: str, usable: Callable[[Entry], bool] = lambda e: True) -> list[Entry]:
    """Our open offers that cross an older (and ``usable``) offer of another owner.

    Walks each side from its best offer only as far as the best foreign offer
    on the other side still crosses: past that, none of our offers can.
    """
    found: list[Entry] = []
    for side in SIDES:
        best = next(iter(book.plan(side, _ANY_PRICE[side], 1, me)), None)
        if best is None:
            continue
        for own in book.entries(side):
            if not _crosses(side, own.price, best[0].price):
                break
            if own.owner != me:
                continue
            if any(newer(own, m) and usable(m) for m in book.crossing(side, own.price, me)):
                found.append(own)
    return found


class Uncrosser:
    """Watches for crossings with our offers and queues uncrossing work on the order worker.

    Woken by every foreign offer the intake applies and by every rest an
    order posts, and otherwise scans every ``interval_s`` (our own
    ``POST /offers`` may cross too). A scan is a read of the book under the
    index lock; at most one task is queued at a time, and it rescans when it
    runs, so a burst of news costs one pass.
    """

    def __init__(
        self,
        me: str,
        index: OfferIndex,
        service: OfferService,
        sweeper: Sweeper,
        desk: OrderDesk,
        interval_s: float = 0.5,
    ) -> None:
        self.me = me
        self.index = index
        self.service = service
        self.sweeper = sweeper
        self.desk = desk
        self.interval_s = interval_s
        self._wake = threading.Event()
        self._queued = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="uncross", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def on_applied(self, signed: SignedOffer) -> None:
        """The intake applied a foreign version: wake the scan if it crosses one of ours.

        Checked here, on the intake's thread, under one read of the book: every
        fill in the network brings each node a new open version of its maker's
        offer, and almost none of them cross anything of ours, so waking the scan
        thread for each (a thread switch and a pass over the book) is the cost,
        not the check. Crossings a check misses (an owner's cooldown running out)
        are found by the periodic scan.
        """
        offer = signed.offer
        if offer.status == OPEN and self.index.read_book(
            lambda book: any(e.owner == self.me for e in book.crossing(offer.side, offer.price))
        ):
            self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stopping.is_set() or self._queued.is_set():
                continue
            try:
                if self.scan():
                    self._queued.set()
                    self.desk.enqueue(self.run)
            except Exception:
                log.exception("uncross scan failed")

    # -- the work ------------------------------------------------------------------------

    def scan(self) -> list[Entry]:
        return self.index.read_book(lambda book: crossed(book, self.me, self.sweeper.usable))

    def run(self) -> None:
        """One pass on the worker: uncross every offer of ours that needs it; satoshis taken."""
        self._queued.clear()  # news from now on deserves another pass
        for own in self.scan():
            self.uncross(own)

    def uncross(self, own: Entry) -> int:
        """Take older crossing offers with ``own``'s amount: reserve, bid, give back the rest."""

        def eligible(maker: Entry) -> bool:
            return newer(own, maker)

        def usable(maker: Entry) -> bool:
            return eligible(maker) and self.sweeper.usable(maker)

        steps = self.index.read_book(
            lambda book: self.sweeper.plan(book, own.side, own.price, own.amount, usable)
        )
        reserve = sum(take for _, take in steps)
        if not reserve:
            return 0
        try:
            reserved = self.service.resize(own.id, -reserve, own.price)
        except errors.DomainError as exc:  # filled, cancelled or repriced meanwhile: rescan later
            self._count(f"reserve_{exc.code}")
            return 0
        taken = 0

        def on_fill(receipt: Receipt) -> None:  # counted as it lands: a later failure keeps it
            nonlocal taken
            taken += receipt.amount

        def on_doubt(bid: Bid) -> None:  # it may have sold: never offer those sats again
            nonlocal taken
            taken += bid.amount
            self._count("in_doubt_sats", bid.amount)

        try:
            self.sweeper.take(
                own.side, own.price, reserve, eligible, on_fill, on_doubt, for_offer=reserved.id
            )
        finally:
            if taken < reserve:
                self._give_back(reserved, reserve - taken)
        self._count("taken_sats", taken)
        self._count("uncrossed" if taken else "failed")
        return taken

    def _give_back(self, reserved: SignedOffer, amount: int) -> None:
        if self.service.give_back(reserved, amount) is None:
            self._count("given_back_dropped")  # its owner closed the offer meanwhile
        else:
            self._count("given_back")

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
