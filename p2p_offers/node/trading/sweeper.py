"""Taking liquidity: the one way this node trades as a taker on its own initiative.

``Sweeper.take`` plans over the node's book with ``Book.plan`` (best price,
then time, never our own offers), bids on each maker at the maker's price
through ``Taker.bid`` (the very path of ``POST /offers/<id>/bids``), and when a
bid loses a race (a refusal) or the owner cannot be reached it moves on and
re-plans what is left against the book as it is by then. Orders use it, and so
does uncrossing, with a filter that admits only older makers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import Book, Entry
from p2p_offers.node import errors
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.offers.taker import Taker

MAX_ROUNDS = 64  # re-plans per sweep; each one either fills or rules out a maker


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

        ``Book.plan`` already leaves out our own offers; makers the filter
        rejects are skipped, not stopped at, so the plan asks for more until
        it has ``amount`` or the crossing part of the book is exhausted.
        """
        want = amount
        while True:
            steps: list[tuple[Entry, int]] = []
            need, seen = amount, 0
            for entry, take in book.plan(side, limit, want, self.me):
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
        for_offer: str | None = None,
    ) -> tuple[list[Receipt], int]:
        """Fill up to ``amount`` as a ``side`` taker at ``limit`` or better; (receipts, left).

        Every maker is bid at its own price (price improvement goes to the
        taker). Whatever fails is ruled out for the rest of this sweep and the
        remainder is re-planned, so a lost race costs one round trip, not the
        order. A bid left in doubt (it may have filled) is told to ``on_doubt``
        and its amount is not in ``left``: it is never planned, rested or given
        back a second time. ``for_offer``: the own offer the sweep trades for (uncrossing).
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
                receipt = self._bid(entry, want, avoid, for_offer)
                if receipt is None:
                    continue
                if isinstance(receipt, errors.BidInDoubt):
                    if receipt.bid is not None:
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

    def _bid(
        self, entry: Entry, amount: int, avoid: _Avoid, for_offer: str | None = None
    ) -> Receipt | errors.BidInDoubt | None:
        """One bid through ``Taker.bid``; on a lost race, one retry with what is left there.

        A maker whose chain we used up is ruled out too, in this sweep and (by a
        cooldown) in the next ones: our book hears of it only when the maker's new
        versions arrive, and an uncrossing scan right after an order would
        otherwise reserve from the order's rest to bid on it again.
        """
        emptied = amount >= entry.amount
        for _ in range(2):
            try:
                receipt = self.taker.bid(entry.id, amount, for_offer=for_offer)
            except errors.BidInDoubt as exc:
                self._count("in_doubt")
                avoid.owners.add(entry.owner)
                self.cooldowns.fail(entry.owner)
                return exc
            except errors.InsufficientAmount as exc:
                self._count(f"refused_{exc.code}")
                if exc.available:  # take what is left there instead
                    emptied = amount >= exc.available
                    amount = min(amount, exc.available)
                    continue
                avoid.ids.add(entry.id)
                self.cooldowns.fail(entry.id)
                return None
            except (errors.PeerFailure, errors.DhtUnavailable) as exc:  # owner (or DHT) silent
                self._count(f"failed_{exc.code}")
                avoid.owners.add(entry.owner)
                self.cooldowns.fail(entry.owner)
                return None
            except errors.DomainError as exc:  # this offer refused us
                self._count(f"refused_{exc.code}")
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
