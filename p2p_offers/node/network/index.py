"""The node's view of the network: the newest version of every offer it knows, and a Book.

Every record reaching the node (its own changes, announcements, sync pages)
ends up in ``apply``, which keeps exactly one rule: a version replaces the held
one only if its seq is higher. Open, unexpired versions are in the ``Book``;
closed ones stay visible for a while (``closed_keep_s``) and then shrink to a
"floor" (owner, seq) that still rejects replays of older versions until the
record's expiry, after which every version of it is dead anyway (expiry only
grows with seq, so an expired newest version means all older ones expired).

A floor made by shrinking a closed record keeps that signed closing version
(a "tombstone"), out of the book and of ``get``, but in ``versions`` and
``record``: gossip digests carry it and peers can be handed it, so a node that
was cut off while the offer closed still learns of the close after
``closed_keep_s`` (docs/gossip.md). A floor restored from the ``seen`` table
has only the seq, and stays out of ``versions``: nobody could be handed it.

A floor rejects versions *below* its seq, never the version it names: a floor
is what a node remembers of a record it no longer holds (across a restart,
from the ``seen`` table, or after letting a closed record go), so that very
version is not news it has, and must be taken when it comes again. Otherwise
a restarted node would refuse the unchanged current version of every foreign
offer as stale and list only its own until their owners next changed them.

An offer id is bound to the first owner seen for it: ids are random uuid4s, so
a second owner claiming the same id is an attacker trying to displace the
offer in everybody's book.
"""

from __future__ import annotations

import heapq
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sortedcontainers import SortedList

from p2p_offers.book import Book, Entry
from p2p_offers.node.network.outcomes import Outcome
from p2p_offers.node.signals import Signal
from p2p_offers.offers import OPEN, SignedOffer

HISTORY_MAX = 64
CHANGED, DROPPED = "changed", "dropped"  # what ``OfferIndex.changed`` says happened
T = TypeVar("T")
Floor = tuple[str, int, int, SignedOffer | None]  # owner, seq, expires, tombstone or None

APPLIED, STALE, CONFLICT, EXPIRED, OWNER_FULL = (
    Outcome.APPLIED,
    Outcome.STALE,
    Outcome.CONFLICT,
    Outcome.EXPIRED,
    Outcome.OWNER_FULL,
)


@dataclass(frozen=True, slots=True)
class Version:
    """One entry of an offer's history as this node saw it."""

    seq: int
    status: str
    price: int
    amount: int
    expires: int

    @classmethod
    def of(cls, signed: SignedOffer) -> Version:
        o = signed.offer
        return cls(signed.seq, o.status, o.price, o.amount, o.expires)


@dataclass(slots=True)
class Held:
    signed: SignedOffer
    history: list[Version] = field(default_factory=list)
    _renders: dict[str, tuple[SignedOffer, str]] = field(default_factory=dict)

    def rendered(self, kind: str, render: Callable[[SignedOffer], str]) -> str:
        """``render(self.signed)``, computed once per version and kind.

        A node serves the same records over and over (book listings, sync pages
        for every joining peer); rendering each version once makes a 10,000-offer
        reply a string join. The cache entry names the version it was made
        from, so a render racing with a newer version is simply not reused.
        """
        signed = self.signed
        hit = self._renders.get(kind)
        if hit is not None and hit[0] is signed:
            return hit[1]
        text = render(signed)
        self._renders[kind] = (signed, text)
        return text


class OfferIndex:
    """Thread-safe: request threads, the intake and the sweeper all call in."""

    def __init__(self, clock: Callable[[], int], closed_keep_s: float = 60.0) -> None:
        self._clock = clock
        self._closed_keep_ms = int(closed_keep_s * 1000)
        self._lock = threading.Lock()
        self._held: dict[str, Held] = {}
        self._floors: dict[str, Floor] = {}  # id -> (owner, seq, expires, closing version)
        self._book = Book()
        self._open_ids = SortedList()  # live ids in id order, for paging /peer/offers
        self._open_per_owner: Counter[str] = Counter()  # owner -> ids in _open_ids
        self._expiry: list[tuple[int, str]] = []  # (expires, id), lazily invalidated
        self._closed: deque[tuple[int, str]] = deque()  # (closed at, id)
        self._dirty: set[str] = set()  # ids applied since the last take_dirty()
        # (version, CHANGED or DROPPED) for every version applied and every offer the sweep
        # drops as expired. Emitted under the index lock, so listeners see the changes in
        # the order they happened; a listener must be quick and take no lock of the node's.
        self.changed: Signal[[SignedOffer, str]] = Signal("book changed")

    # -- writes --------------------------------------------------------------------------

    def holder(self, offer_id: str) -> tuple[str, int] | None:
        """(owner, highest seq that is no news) for this id, or None if the id is unknown.

        A version is news only above that seq: the one held, or one below a floor.
        """
        with self._lock:
            owner, seq = self._owner_seq(offer_id)
        return None if owner is None else (owner, seq)

    def _owner_seq(self, offer_id: str) -> tuple[str | None, int]:
        held = self._held.get(offer_id)
        if held is not None:
            return held.signed.owner, held.signed.seq
        floor = self._floors.get(offer_id)
        # a floor's own version is not held, so it is news (see the module docstring)
        return (None, 0) if floor is None else (floor[0], floor[1] - 1)

    def apply(self, signed: SignedOffer, max_open: int | None = None) -> Outcome:
        """Take ``signed`` if it is newer than what is held; say what happened.

        With ``max_open`` (foreign records, docs/limits.md), an offer that would be its
        owner's open offer number ``max_open + 1`` is refused ``OWNER_FULL``; a new
        version of an offer already open, or one closing it, is always taken.
        """
        offer = signed.offer
        now = self._clock()
        with self._lock:
            owner, seq = self._owner_seq(offer.id)
            if owner is not None and owner != signed.owner:
                return CONFLICT
            if owner is not None and signed.seq <= seq:
                return STALE
            if offer.expires <= now:
                return EXPIRED
            if (
                max_open is not None
                and offer.status == OPEN
                and self._open_per_owner[signed.owner] >= max_open
                and offer.id not in self._open_ids
            ):
                return OWNER_FULL
            self._floors.pop(offer.id, None)
            self._dirty.add(offer.id)
            held = self._held.get(offer.id)
            if held is None:
                held = self._held[offer.id] = Held(signed)
            held.signed = signed
            held.history.append(Version.of(signed))
            del held.history[:-HISTORY_MAX]
            heapq.heappush(self._expiry, (offer.expires, offer.id))
            if offer.status == OPEN:
                entry = Entry(
                    offer.id,
                    offer.side,
                    offer.price,
                    offer.amount,
                    offer.priority,
                    signed.owner,
                    offer.min_amount or 0,
                    offer.manual,
                )
                self._book.add(entry)
                if offer.id not in self._open_ids:
                    self._open_ids.add(offer.id)
                    self._open_per_owner[signed.owner] += 1
            else:
                self._close(offer.id, now)
            self.changed.emit(signed, CHANGED)
            return APPLIED

    def _close(self, offer_id: str, now: int) -> None:
        if self._book.remove(offer_id) is not None:
            self._unlist(offer_id)
        self._closed.append((now, offer_id))

    def _unlist(self, offer_id: str) -> None:
        """Out of the open ids (and its owner's open count), if it was there."""
        if offer_id in self._open_ids:
            self._open_ids.discard(offer_id)
            owner = self._held[offer_id].signed.owner
            self._open_per_owner[owner] -= 1
            if not self._open_per_owner[owner]:
                del self._open_per_owner[owner]

    def sweep(self) -> int:
        """Drop expired offers and shrink long-closed ones; returns how many expired."""
        now = self._clock()
        dropped = 0
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                expires, offer_id = heapq.heappop(self._expiry)
                held = self._held.get(offer_id)
                if held is not None and held.signed.offer.expires == expires:
                    self._book.remove(offer_id)
                    self._unlist(offer_id)
                    del self._held[offer_id]
                    dropped += 1
                    self.changed.emit(held.signed, DROPPED)
                elif held is None and self._floors.get(offer_id, ("", 0, now + 1, None))[2] <= now:
                    del self._floors[offer_id]
            cutoff = now - self._closed_keep_ms
            while self._closed and self._closed[0][0] <= cutoff:
                _, offer_id = self._closed.popleft()
                held = self._held.get(offer_id)
                if held is not None and held.signed.offer.status != OPEN:
                    del self._held[offer_id]
                    offer = held.signed.offer
                    signed = held.signed
                    self._floors[offer_id] = (signed.owner, signed.seq, offer.expires, signed)
        return dropped

    # -- reads ---------------------------------------------------------------------------

    def get(self, offer_id: str) -> Held | None:
        with self._lock:
            held = self._held.get(offer_id)
            return None if held is None else Held(held.signed, list(held.history))

    def side_of(self, offer_id: str) -> str | None:
        """The side of an offer held here (open or recently closed), None if not held."""
        with self._lock:
            held = self._held.get(offer_id)
            return None if held is None else held.signed.offer.side

    def select(
        self,
        side: str | None = None,
        status: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Held]:
        """Held offers matching every given filter, best price first for open ones.

        The ``Held`` objects are the index's own: read them, never change them.
        """
        with self._lock:
            if status == OPEN:
                pool = [self._held[e.id] for e in self._book.entries(side)]
            else:
                pool = list(self._held.values())
        out = [
            h
            for h in pool
            if (side is None or h.signed.offer.side == side)
            and (status is None or h.signed.offer.status == status)
            and (owner is None or h.signed.owner == owner)
        ]
        if status != OPEN:
            out.sort(key=lambda h: (h.signed.offer.priority, h.signed.id))
        return out[:limit] if limit is not None else out

    def read_book(self, read: Callable[[Book], T]) -> T:
        """``read(book)`` under the index lock: a consistent view for planning and scanning.

        ``read`` must not change the book and must not keep iterators past its return.
        """
        with self._lock:
            return read(self._book)

    def depth(self, side: str, levels: int | None = None) -> list[tuple[int, int, int]]:
        with self._lock:
            return self._book.depth(side, levels)

    def open_page(self, cursor: str | None, limit: int) -> tuple[list[Held], str | None]:
        """Open offers with ids after ``cursor``, in id order: stable paging as the book moves."""
        with self._lock:
            if cursor:
                ids = list(self._open_ids.irange(cursor, inclusive=(False, False)))[:limit]
            else:
                ids = list(self._open_ids[:limit])
            page = [self._held[i] for i in ids]
            more = bool(ids) and self._open_ids.bisect_right(ids[-1]) < len(self._open_ids)
        return page, (ids[-1] if more else None)

    def open_by_owner(self, owner: str) -> list[SignedOffer]:
        with self._lock:
            return [self._held[e.id].signed for e in self._book.entries() if e.owner == owner]

    def versions(self) -> list[tuple[str, str, int]]:
        """(owner, id, seq) of every record ``record`` can hand back: held (open or recently
        closed) or a tombstone. What gossip digests describe."""
        with self._lock:
            out = [(h.signed.owner, i, h.signed.seq) for i, h in self._held.items()]
            out += [(f[0], i, f[1]) for i, f in self._floors.items() if f[3] is not None]
            return out

    def record(self, offer_id: str) -> SignedOffer | None:
        """The newest signed version of this id we can hand a peer: held, or the closing
        version a tombstone keeps. None if neither."""
        with self._lock:
            held = self._held.get(offer_id)
            if held is not None:
                return held.signed
            floor = self._floors.get(offer_id)
            return None if floor is None else floor[3]

    def take_dirty(self) -> list[tuple[str, str, int, int]]:
        """(id, owner, seq, expires) of records applied since the last call, for persisting."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            return [
                (i, h.signed.owner, h.signed.seq, h.signed.offer.expires)
                for i in dirty
                if (h := self._held.get(i)) is not None
            ]

    def restore_floor(self, offer_id: str, owner: str, seq: int, expires: int) -> None:
        """A seq seen before a restart: older versions stay rejected until ``expires``."""
        with self._lock:
            if offer_id not in self._held:
                self._floors[offer_id] = (owner, seq, expires, None)
                heapq.heappush(self._expiry, (expires, offer_id))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"held": len(self._held), "open": len(self._book)}
