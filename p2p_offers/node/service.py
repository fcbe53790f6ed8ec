"""The one place where our own offers change state: create, update, cancel, refresh, fill.

Every change follows the same path (``_commit``): compute the next version
with the pure transitions of ``offers``, sign it, make it durable in one
transaction, update the in-memory heads and the node's index, and only then
return, so nothing is acknowledged before it would survive a crash.
Publication (DHT put, push to peers) is queued and runs behind.

Changes are serialized per *chain*: an offer and the remainders split off it
share a lock keyed by the chain's root id. That is what makes "a bid naming a
record already split goes to the live remainder" safe: the bid is resolved to
the chain's open head and filled under the same lock, so two bids can never
both take the same satoshis, while bids on different offers run in parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from nacl.signing import SigningKey

from p2p_offers import offers
from p2p_offers.bids import Bid, Receipt, make_receipt
from p2p_offers.fields import new_id
from p2p_offers.node import errors
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.publisher import Publisher
from p2p_offers.node.store import MAKER, DuplicateBid, OwnVersion, Store, StoredFill
from p2p_offers.offers import OPEN, SignedOffer, TransitionError
from p2p_offers.signing import SignatureError, public_hex

REFRESH_BATCH = 500


class OfferService:
    def __init__(
        self,
        key: SigningKey,
        store: Store,
        index: OfferIndex,
        publisher: Publisher,
        clock: Callable[[], int],
        default_ttl_ms: int,
    ) -> None:
        self.key = key
        self.me = public_hex(key)
        self.store = store
        self.index = index
        self.publisher = publisher
        self.clock = clock
        self.default_ttl_ms = default_ttl_ms
        self._guard = threading.Lock()  # protects the dicts below; never held while waiting
        self._chains: dict[str, _Chain] = {}
        self._heads: dict[str, OwnVersion] = {}  # chain root -> its open record
        self._known: dict[str, tuple[str, int]] = {}  # own record id -> (chain root, newest seq)

    # -- start -----------------------------------------------------------------------------

    def load(self) -> None:
        """After a restart: manage our open offers again and republish what is not out yet.

        An offer that expired while we were down stays expired: peers dropped it,
        and bringing it back would trade on terms its owner let lapse.
        """
        now = self.clock()
        heads = [row for row in self.store.own_open() if row.latest.signed.offer.expires > now]
        with self._guard:
            for row in heads:
                self._heads[row.latest.root] = row.latest
                self._known[row.latest.signed.id] = (row.latest.root, row.latest.signed.seq)
        for row in heads:
            self.index.apply(row.latest.signed)
        rows = self.store.unpublished() + heads
        for row in rows:
            self.publisher.published(row.latest.signed.id, row.published_seq)
        self.publisher.publish({r.latest.signed.id: r.latest.signed for r in rows}.values())

    # -- user changes ----------------------------------------------------------------------

    def create(self, side: str, price: int, amount: int, ttl_ms: int | None = None) -> SignedOffer:
        ttl = ttl_ms or self.default_ttl_ms
        offer = _transition(lambda: offers.create(side, price, amount, self.clock(), ttl))
        version = OwnVersion(offers.sign(self.key, offer, offers.FIRST_SEQ), offer.id, ttl)
        with self._chain(offer.id):
            self._commit([version])
        return version.signed

    def update(self, offer_id: str, price: int | None, amount: int | None) -> SignedOffer:
        root = self._root(offer_id)
        with self._chain(root):
            head = self._head(root, offer_id, exact=True)
            new = _transition(lambda: head.signed.offer.update(self.clock(), price, amount))
            return self._next(head, new)

    def cancel(self, offer_id: str) -> SignedOffer:
        root = self._root(offer_id)
        with self._chain(root):
            head = self._head(root, offer_id, exact=True)
            return self._next(head, _transition(head.signed.offer.cancel))

    def resize(self, offer_id: str, delta: int, price: int) -> SignedOffer:
        """Change the chain's open amount by ``delta``, read and written under one chain lock.

        Uncrossing reserves with this before it bids as a taker (and gives back
        what it could not use), so a fill landing in between is never undone
        the way an absolute ``update`` computed from a stale amount would undo
        it. ``price`` is the price the caller planned with: if the chain's terms
        moved meanwhile the call fails (409 ``stale_offer``) rather than trade
        on them. A result of zero cancels the record; growing it requeues it,
        as any larger amount does.
        """
        root = self._root(offer_id)
        with self._chain(root):
            head = self._head(root, offer_id)
            offer = head.signed.offer
            if offer.price != price:
                raise errors.conflict("stale_offer", f"offer {offer_id} changed its price")
            amount = offer.amount + delta
            if amount < 0:
                raise errors.conflict(
                    "insufficient_amount", f"offer {offer_id} has {offer.amount} sats left"
                )
            if amount == 0:
                return self._next(head, _transition(offer.cancel))
            return self._next(head, _transition(lambda: offer.update(self.clock(), amount=amount)))

    def refresh_due(self) -> int:
        """Refresh open offers past half their lifetime; busy chains wait for the next sweep.

        One already expired (the node was suspended, its clock jumped) is let go,
        not revived: it is no longer open anywhere, and bids on it are refused.
        """
        now = self.clock()
        due: list[tuple[str, str]] = []
        expired: list[str] = []
        with self._guard:
            for root, head in self._heads.items():
                left = head.signed.offer.expires - now
                if left <= 0:
                    expired.append(root)
                elif left <= head.ttl_ms // 2 and len(due) < REFRESH_BATCH:
                    due.append((root, head.signed.id))
            for root in expired:
                del self._heads[root]
        locked: list[threading.Lock] = []
        versions = []
        try:
            for root, offer_id in due:
                lock = self._chain_of(root).lock
                if not lock.acquire(blocking=False):
                    continue
                locked.append(lock)
                with self._guard:
                    head = self._heads.get(root)
                if head is None or head.signed.id != offer_id:
                    continue
                refreshed = head.signed.offer.refresh(now, head.ttl_ms)
                versions.append(self._sign_next(head, refreshed))
            if versions:
                self._commit(versions)
        finally:
            for lock in locked:
                lock.release()
        return len(versions)

    # -- bids ------------------------------------------------------------------------------

    def accept_bid(self, bid: Bid) -> Receipt:
        """Fill a taker's bid on one of our offers, or say precisely why not.

        Authenticity and addressee are checked first, outside any lock. The bid
        then joins its chain's queue; whichever thread holds the chain lock
        settles every queued bid in arrival order against the evolving head and
        commits them all in ONE transaction (group commit: a hot offer costs one
        fsync per batch, not per bid). Every bid's outcome is durable before any
        of them is answered, and exactly one outcome is recorded per bid id.
        """
        try:
            bid.verify()
        except SignatureError:
            raise errors.bad_request(
                "invalid_signature", "the bid's signature does not verify"
            ) from None
        if bid.maker != self.me:
            raise errors.not_owner(bid.offer_id)
        root = self._root(bid.offer_id)
        chain = self._chain_of(root)
        slot = _Slot(bid)
        with self._guard:
            chain.queue.append(slot)
        with chain.lock:
            if not slot.done:
                with self._guard:
                    batch, chain.queue = chain.queue, []
                self._settle(root, batch)
        return slot.outcome()

    def _settle(self, root: str, batch: list[_Slot]) -> None:
        """Decide every bid of ``batch`` in order, then make all fills durable at once."""
        with self._guard:
            head = self._heads.get(root)
        now = self.clock()
        versions: list[OwnVersion] = []
        fills: list[StoredFill] = []
        seen: dict[str, _Slot] = {}
        try:  # from here on, every slot of the batch is answered, whatever is raised
            for slot in batch:
                try:
                    if slot.bid.bid_id in seen:  # the same bid twice in one batch (a fast retry)
                        first = seen[slot.bid.bid_id].stored()
                        slot.receipt = _same_bid_or_conflict(first, slot.bid)
                        continue
                    seen[slot.bid.bid_id] = slot
                    answered = self.store.fill(slot.bid.bid_id, MAKER)
                    if answered is not None:
                        slot.receipt = _same_bid_or_conflict(answered, slot.bid)
                        continue
                    head, made, slot.receipt = self._fill(root, head, slot.bid, now)
                    versions += made
                    fills.append(StoredFill(slot.bid, slot.receipt, MAKER))
                except errors.ApiError as exc:
                    slot.error = exc
            if fills:
                self._commit(versions, fills)
        except DuplicateBid:
            # A bid id recorded meanwhile through another chain: nothing was written.
            # Settle one by one, so only that bid is answered from the record.
            for slot in batch:
                slot.reset()
            if len(batch) == 1 and self.store.fill(batch[0].bid.bid_id, MAKER) is None:
                raise
            for slot in batch:
                self._settle(root, [slot])
            return
        except Exception as exc:  # nothing durable, so nobody may be told "filled"
            for slot in batch:
                if slot.error is None:
                    slot.receipt, slot.error = None, exc
            raise
        finally:
            for slot in batch:
                slot.done = True

    def _fill(
        self, root: str, head: OwnVersion | None, bid: Bid, now: int
    ) -> tuple[OwnVersion | None, list[OwnVersion], Receipt]:
        """Check ``bid`` against the chain's head; return the new head, versions and receipt."""
        if head is None:
            raise errors.conflict("offer_taken", f"offer {bid.offer_id} is no longer open")
        offer = head.signed.offer
        named_seq = head.signed.seq if head.signed.id == bid.offer_id else self._seq(bid.offer_id)
        if bid.offer_seq > named_seq or bid.price != offer.price:
            raise errors.conflict(
                "stale_offer",
                "the offer's terms changed since the version bid on",
                {"offer_id": head.signed.id, "seq": head.signed.seq, "price": offer.price},
            )
        if offer.expires <= now:
            raise errors.conflict("offer_expired", f"offer {head.signed.id} has expired")
        if bid.amount > offer.amount:
            raise errors.conflict(
                "insufficient_amount",
                f"bid for {bid.amount} sats, {offer.amount} left",
                {"offer_id": head.signed.id, "available": offer.amount},
            )
        filled, rest = offer.fill_with(bid.bid_id, bid.amount, bid.taker, now, new_id())
        made = [self._sign_next(head, filled)]
        new_head = None
        if rest is not None:
            new_head = OwnVersion(offers.sign(self.key, rest, offers.FIRST_SEQ), root, head.ttl_ms)
            made.append(new_head)
        receipt = make_receipt(
            self.key, bid, offer_id=filled.id, remainder=rest.id if rest else None, now_ms=now
        )
        return new_head, made, receipt

    # -- reads -----------------------------------------------------------------------------

    def own(self, offer_id: str) -> SignedOffer | None:
        row = self.store.own(offer_id)
        return row.latest.signed if row else None

    def history(self, offer_id: str) -> list[SignedOffer]:
        return self.store.history(offer_id)

    def open_count(self) -> int:
        with self._guard:
            return len(self._heads)

    # -- internals ---------------------------------------------------------------------------

    def _root(self, offer_id: str) -> str:
        """The chain an id belongs to; 403 for another owner's offer, 404 for an unknown id."""
        return self._lookup(offer_id)[0]

    def _seq(self, offer_id: str) -> int:
        return self._lookup(offer_id)[1]

    def _lookup(self, offer_id: str) -> tuple[str, int]:
        with self._guard:
            known = self._known.get(offer_id)
        if known is not None:
            return known
        row = self.store.own(offer_id)
        if row is not None:
            known = (row.latest.root, row.latest.signed.seq)
            with self._guard:
                self._known.setdefault(offer_id, known)
            return known
        held = self.index.get(offer_id)
        if held is not None and held.signed.owner != self.me:
            raise errors.not_owner(offer_id)
        raise errors.not_found("offer", offer_id)

    def _head(self, root: str, offer_id: str, exact: bool = False) -> OwnVersion:
        """The chain's open record, or 409 ``offer_not_open`` if the chain is closed.

        With ``exact`` (a user's PATCH/DELETE) ``offer_id`` itself must be that
        record: a filled parent is closed, and acting on its live remainder would
        resize satoshis the user never named (details give the live id).
        """
        with self._guard:
            head = self._heads.get(root)
        if head is None:
            raise errors.conflict("offer_not_open", f"offer {offer_id} is no longer open")
        if exact and head.signed.id != offer_id:
            raise errors.conflict(
                "offer_not_open",
                f"offer {offer_id} is no longer open; its live remainder is {head.signed.id}",
                {"offer_id": head.signed.id},
            )
        return head

    def _chain_of(self, root: str) -> _Chain:
        with self._guard:
            chain = self._chains.get(root)
            if chain is None:
                chain = self._chains[root] = _Chain()
            return chain

    @contextmanager
    def _chain(self, root: str) -> Iterator[None]:
        with self._chain_of(root).lock:
            yield

    def _sign_next(self, head: OwnVersion, offer: offers.Offer) -> OwnVersion:
        return OwnVersion(offers.sign(self.key, offer, head.signed.seq + 1), head.root, head.ttl_ms)

    def _next(self, head: OwnVersion, offer: offers.Offer) -> SignedOffer:
        version = self._sign_next(head, offer)
        self._commit([version])
        return version.signed

    def _commit(self, versions: list[OwnVersion], fills: Iterable[StoredFill] = ()) -> None:
        """Durable first, then visible, then published (see the module docstring)."""
        self.store.save(versions, fills)
        with self._guard:
            for v in versions:
                self._known[v.signed.id] = (v.root, v.signed.seq)
                if v.signed.offer.status == OPEN:
                    self._heads[v.root] = v
                else:
                    head = self._heads.get(v.root)
                    if head is not None and head.signed.id == v.signed.id:
                        del self._heads[v.root]
        for v in versions:
            self.index.apply(v.signed)
        self.publisher.publish(v.signed for v in versions)


class _Chain:
    """One offer chain's lock and the bids waiting for whoever holds it."""

    __slots__ = ("lock", "queue")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Slot] = []


class _Slot:
    """A bid waiting in its chain's queue, and what became of it."""

    __slots__ = ("bid", "done", "error", "receipt")

    def __init__(self, bid: Bid) -> None:
        self.bid = bid
        self.reset()

    def reset(self) -> None:
        self.done = False
        self.receipt: Receipt | None = None
        self.error: Exception | None = None

    def stored(self) -> StoredFill:
        if self.receipt is None:
            raise self.error or errors.conflict("duplicate_bid", "bid already decided")
        return StoredFill(self.bid, self.receipt, MAKER)

    def outcome(self) -> Receipt:
        if self.error is not None:
            raise self.error
        if self.receipt is None:  # never expected: settled without an outcome
            raise errors.ApiError(500, "internal", f"bid {self.bid.bid_id} was not settled")
        return self.receipt


def _transition(change: Callable[[], offers.Offer]) -> offers.Offer:
    try:
        return change()
    except TransitionError as exc:
        status = 409 if exc.code == "offer_not_open" else 400
        raise errors.ApiError(status, exc.code, exc.message) from None


def _same_bid_or_conflict(answered: StoredFill, bid: Bid) -> Receipt:
    if answered.bid == bid:
        return answered.receipt
    raise errors.conflict("duplicate_bid", f"bid id {bid.bid_id} was used for another bid")
