"""The maker's side: the one place where our own offers change state.

Every change (create, update, cancel, resize, give back, refresh, fill)
follows the same path (``_commit``): compute the next version with the pure
transitions of ``offers``, sign it, make it durable in one transaction, update
the in-memory heads and the node's index, and only then return, so nothing is
acknowledged before it would survive a crash. Publication (DHT put, push to
peers) is queued and runs behind.

Changes are serialized per *chain* (``chains``): an offer and the remainders
split off it share a lock keyed by the chain's root id. That is what makes "a
bid naming a record already split goes to the live remainder" safe: the bid is
resolved to the chain's open head and filled under the same lock, so two bids
can never both take the same satoshis, while bids on different offers run in
parallel. Every head is read and dropped under its chain's lock, expiry
included, so no change can put back a head the sweep let go.

One owner never crosses the book (self-trade prevention extended to resting
offers): a new offer, or a new price, that would cross one of our own open
offers on the other side is refused ``SelfCross`` naming them, unless the
caller says ``Stp.CANCEL_RESTING``, in which case they are cancelled first.
The check and the change that follows it run under one lock (``_placing``),
so two placements cannot each pass the check and cross each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack, suppress

from nacl.signing import SigningKey

from p2p_offers import offers
from p2p_offers.bids import Bid, Receipt
from p2p_offers.node import errors
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.node.offers.chains import Chains
from p2p_offers.node.offers.settle import Settler
from p2p_offers.node.offers.stp import Stp
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.database import Database, Tx
from p2p_offers.node.storage.own_offers import OwnOffers, OwnVersion
from p2p_offers.node.storage.pending import (
    DEFAULT_PENDING_MS,
    MAX_PENDING_MS,
    BidStatus,
    ManualBid,
    ManualBids,
)
from p2p_offers.node.storage.receipts import Receipts, Role, StoredFill
from p2p_offers.node.storage.refusals import Refusals, Refused
from p2p_offers.offers import FILLED, OPEN, SignedOffer, TransitionError
from p2p_offers.signing import public_hex

REFRESH_BATCH = 500
MAX_CANCEL_ROUNDS = 8  # cancel_resting re-checks after cancelling: a crossing offer may split

_TRANSITION_ERRORS: dict[str, type[errors.DomainError]] = {
    "offer_not_open": errors.OfferNotOpen,
    "offer_expired": errors.OfferExpired,
    "insufficient_amount": errors.InsufficientAmount,
}


class OfferService:
    def __init__(
        self,
        key: SigningKey,
        db: Database,
        own: OwnOffers,
        receipts: Receipts,
        refusals: Refusals,
        index: OfferIndex,
        publisher: Publisher,
        clock: Callable[[], int],
        default_ttl_ms: int,
        manual_bids: ManualBids,
        pending_ms: int = DEFAULT_PENDING_MS,
    ) -> None:
        self.key = key
        self.me = public_hex(key)
        self.db = db
        self.own_offers = own
        self.receipts = receipts
        self.refusals = refusals
        self.index = index
        self.publisher = publisher
        self.clock = clock
        self.default_ttl_ms = default_ttl_ms
        self.manual_bids = manual_bids
        self.pending_ms = max(1, min(pending_ms, MAX_PENDING_MS))
        # told inside each fill's transaction (the ledger appends there: all or nothing)
        self.recording_fills: Signal[[Tx, list[StoredFill]]] = Signal("recording fills")
        self._placing = threading.Lock()  # a self-cross check and the change it allows
        self._guard = threading.Lock()  # protects the dicts below; never held while waiting
        self._heads: dict[str, OwnVersion] = {}  # chain root -> its open record
        self._known: dict[str, tuple[str, int]] = {}  # own record id -> (chain root, newest seq)
        self._ids: dict[str, set[str]] = {}  # chain root -> its records in ``_known``
        self.chains = Chains(self._guard, lambda root: root in self._heads)
        self._settler = Settler(self)

    # -- start -----------------------------------------------------------------------------

    def load(self) -> None:
        """After a restart: manage our open offers again and republish what is not out yet.

        An offer that expired while we were down stays expired: peers dropped it,
        and bringing it back would trade on terms its owner let lapse. The closes
        that have not expired go back into the index too, as they were before the
        restart: gossip digests are made from it, and a close whose sends died with
        the process (put in the DHT, so not republished) reaches a peer still
        holding the open version only when our digest shows the higher seq.
        """
        now = self.clock()
        heads = [r for r in self.own_offers.open_heads() if r.latest.signed.offer.expires > now]
        with self._guard:
            for row in heads:
                self._remember(row.latest)
        for row in heads + self.own_offers.closed_alive(now):
            self.index.apply(row.latest.signed)
        rows = self.own_offers.unpublished() + heads
        for row in rows:
            self.publisher.published(row.latest.signed.id, row.published_seq)
        self.publisher.publish({r.latest.signed.id: r.latest.signed for r in rows}.values())

    # -- user changes ----------------------------------------------------------------------

    def place(
        self,
        side: str,
        price: int,
        amount: int,
        ttl_ms: int | None = None,
        stp: Stp | None = None,
        accept: str = offers.Accept.AUTO,
        min_amount: int | None = None,
    ) -> SignedOffer:
        """A new offer, unless it would cross our own (see the module docstring)."""
        with self._placing:
            self._clear_crossing(side, price, stp)
            return self.create(side, price, amount, ttl_ms, accept, min_amount)

    def create(
        self,
        side: str,
        price: int,
        amount: int,
        ttl_ms: int | None = None,
        accept: str = offers.Accept.AUTO,
        min_amount: int | None = None,
    ) -> SignedOffer:
        """A new offer, unchecked: what ``place`` posts, and what uncrossing gives back."""
        ttl = ttl_ms or self.default_ttl_ms
        offer = transition(
            lambda: offers.create(
                side, price, amount, self.clock(), ttl, accept=accept, min_amount=min_amount
            )
        )
        version = OwnVersion(offers.sign(self.key, offer, offers.FIRST_SEQ), offer.id, ttl)
        with self.chains.locked(offer.id):
            self.commit([version])
        return version.signed

    def update(self, offer_id: str, price: int | None, amount: int | None) -> SignedOffer:
        root = self.root(offer_id)
        with self._placing:
            if price is not None:
                held = self.held(offer_id)
                if held is not None and held.signed.id == offer_id:
                    side = held.signed.offer.side
                    found = [i for i in self.self_crossing(side, price) if i != offer_id]
                    if found:
                        raise errors.SelfCross.of(side, price, found)
            with self.chains.locked(root):
                head = self.head(root, offer_id, exact=True)
                new = transition(lambda: head.signed.offer.update(self.clock(), price, amount))
                return self._next(head, new)

    def self_crossing(self, side: str, price: int) -> list[str]:
        """Our open offers a ``side`` offer at ``price`` would cross, best first."""
        return self.index.read_book(
            lambda book: [e.id for e in book.crossing(side, price) if e.owner == self.me]
        )

    def _clear_crossing(self, side: str, price: int, stp: Stp | None) -> None:
        """Refuse, or with ``CANCEL_RESTING`` cancel, our offers a new one would cross."""
        for _ in range(MAX_CANCEL_ROUNDS):
            found = self.self_crossing(side, price)
            if not found:
                return
            if stp != Stp.CANCEL_RESTING:
                raise errors.SelfCross.of(side, price, found)
            for offer_id in found:
                # one filled or split meanwhile is skipped: the next round sees what is left
                with suppress(errors.OfferNotOpen, errors.NotFound):
                    self.cancel(offer_id)
        raise errors.SelfCross.of(side, price, self.self_crossing(side, price))

    def cancel(self, offer_id: str) -> SignedOffer:
        root = self.root(offer_id)
        with self.chains.locked(root):
            head = self.head(root, offer_id, exact=True)
            return self._next(head, transition(head.signed.offer.cancel))

    def resize(self, offer_id: str, delta: int, price: int) -> SignedOffer:
        """Change the chain's open amount by ``delta``, read and written under one chain lock.

        Uncrossing reserves with this before it bids as a taker, so a fill
        landing in between is never undone the way an absolute ``update``
        computed from a stale amount would undo it. ``price`` is the price the
        caller planned with: if the chain's terms moved meanwhile the call fails
        (``StaleOffer``) rather than trade on them. A result of zero cancels the
        record; growing it requeues it, as any larger amount does.
        """
        root = self.root(offer_id)
        with self.chains.locked(root):
            head = self.head(root, offer_id)
            offer = head.signed.offer
            if offer.price != price:
                raise errors.StaleOffer.terms(head.signed.id, head.signed.seq, offer.price)
            amount = offer.amount + delta
            if amount < 0:
                raise errors.InsufficientAmount.left(head.signed.id, -delta, offer.amount)
            if amount == 0:
                return self._next(head, transition(offer.cancel))
            return self._next(head, transition(lambda: offer.update(self.clock(), amount=amount)))

    def give_back(self, reserved: SignedOffer, amount: int) -> SignedOffer | None:
        """Return ``amount`` that a reservation (``reserved``: the version it made) took.

        The chain's open record grows by it. A chain that has no open record any
        more gets it back as a new offer at the same price only if the
        reservation itself closed it (it took everything) or fills used the rest
        up; a chain its owner cancelled stays cancelled, and None says so. None too if
        such a new offer would cross one placed by its owner meanwhile (self-cross).
        """
        root = self.root(reserved.id)
        with self.chains.locked(root):
            with self._guard:
                head = self._heads.get(root)
            if head is not None:
                offer = head.signed.offer
                grown = offer.amount + amount
                return self._next(
                    head, transition(lambda: offer.update(self.clock(), amount=grown))
                )
            end = self._chain_end(reserved.id)
        ours = end is not None and (end.id, end.seq) == (reserved.id, reserved.seq)
        if end is None or not (ours or end.offer.status == FILLED):
            return None
        side, price = reserved.offer.side, reserved.offer.price
        with self._placing:  # an own offer placed while this one was reserved away wins
            if self.self_crossing(side, price):
                return None
            return self.create(side, price, amount)

    def _chain_end(self, offer_id: str) -> SignedOffer | None:
        """The newest version of the last record of the chain through ``offer_id``."""
        signed = self.own(offer_id)
        while signed is not None and signed.offer.fill and signed.offer.fill.remainder:
            signed = self.own(signed.offer.fill.remainder)
        return signed

    def refresh_due(self) -> int:
        """Refresh open offers past half their lifetime; let expired ones go.

        Both under each chain's lock; a chain busy now waits for the next sweep.
        One already expired (the node was suspended, its clock jumped) is let
        go, not revived: it is no longer open anywhere, and bids on it are
        refused. The refreshes of one sweep are one transaction.
        """
        now = self.clock()
        with self._guard:
            due = [
                (root, head.signed.id)
                for root, head in self._heads.items()
                if head.signed.offer.expires - now <= head.ttl_ms // 2
            ][:REFRESH_BATCH]
        versions: list[OwnVersion] = []
        with ExitStack() as held:
            for root, offer_id in due:
                chain = held.enter_context(self.chains.using(root))
                if not chain.lock.acquire(blocking=False):
                    continue
                held.callback(chain.lock.release)
                with self._guard:
                    head = self._heads.get(root)
                    if head is not None and head.signed.offer.expires <= now:
                        self._forget(root)  # expired: let go, under the chain's lock
                        continue
                if head is None or head.signed.id != offer_id:
                    continue
                refreshed = head.signed.offer.refresh(now, head.ttl_ms)
                versions.append(self.sign_next(head, refreshed))
            if versions:
                self.commit(versions)
        return len(versions)

    # -- bids ------------------------------------------------------------------------------

    def accept_bid(self, bid: Bid) -> Receipt | ManualBid:
        """Fill a taker's bid on one of our offers, or say precisely why not (see ``settle``);
        on a manual offer, the bid held pending."""
        return self._settler.accept(bid)

    def accept_bids(self, bids: list[Bid]) -> list[Receipt | ManualBid | errors.DomainError]:
        """``accept_bid`` for each of a taker's batch, in order, settled together."""
        return self._settler.accept_many(bids)

    def accept_pending(self, offer_id: str, bid_id: str, amount: int | None = None) -> Receipt:
        """Our accept of a pending bid on our manual offer (the chain of ``offer_id``)."""
        return self._settler.accept_pending(offer_id, bid_id, amount)

    def reject_pending(self, offer_id: str, bid_id: str) -> ManualBid:
        return self._settler.reject_pending(offer_id, bid_id)

    def bids_on(self, offer_id: str) -> list[ManualBid]:
        """The bids held on the chain of our offer ``offer_id``, oldest first, as of now."""
        now = self.clock()
        return [row.effective(now) for row in self.manual_bids.of_root(self.root(offer_id))]

    # -- reads -----------------------------------------------------------------------------

    def own(self, offer_id: str) -> SignedOffer | None:
        row = self.own_offers.get(offer_id)
        return row.latest.signed if row else None

    def history(self, offer_id: str) -> list[SignedOffer]:
        return self.own_offers.history(offer_id)

    def fills(self, offer_id: str) -> list[StoredFill]:
        """The fills our record ``offer_id`` made, oldest first: the bid we filled on it
        (maker) and what uncrossing took for it (taker). A remainder split off it shows
        its own (``fill.remainder`` links them): one record's are read, never the chain's,
        so walking a long chain record by record stays linear."""
        return self.receipts.of_record(offer_id)

    def open_count(self) -> int:
        with self._guard:
            return len(self._heads)

    def held(self, offer_id: str) -> OwnVersion | None:
        """The open head of the chain ``offer_id`` belongs to, if any (no lock taken)."""
        with self._guard:
            known = self._known.get(offer_id)
            return self._heads.get(known[0]) if known else None

    # -- the one way a change lands ----------------------------------------------------------

    def root(self, offer_id: str) -> str:
        """The chain an id belongs to; ``NotOwner`` for another's offer, ``NotFound`` if unknown."""
        return self.lookup(offer_id)[0]

    def lookup(self, offer_id: str) -> tuple[str, int]:
        """(chain root, newest seq) of one of our records."""
        with self._guard:
            known = self._known.get(offer_id)
        if known is not None:
            return known
        row = self.own_offers.get(offer_id)
        if row is not None:
            return row.latest.root, row.latest.signed.seq
        held = self.index.get(offer_id)
        if held is not None and held.signed.owner != self.me:
            raise errors.NotOwner.of(offer_id)
        raise errors.unknown("offer", offer_id)

    def head(self, root: str, offer_id: str, exact: bool = False) -> OwnVersion:
        """The chain's open record (caller holds the chain lock), or ``OfferNotOpen``.

        With ``exact`` (a user's PATCH/DELETE) ``offer_id`` itself must be that
        record: a filled parent is closed, and acting on its live remainder would
        resize satoshis the user never named (details give the live id).
        """
        with self._guard:
            head = self._heads.get(root)
        if head is None:
            raise errors.OfferNotOpen(f"offer {offer_id} is no longer open")
        if exact and head.signed.id != offer_id:
            raise errors.OfferNotOpen(
                f"offer {offer_id} is no longer open; its live remainder is {head.signed.id}",
                {"offer_id": head.signed.id},
            )
        return head

    def sign_next(self, head: OwnVersion, offer: offers.Offer) -> OwnVersion:
        return OwnVersion(offers.sign(self.key, offer, head.signed.seq + 1), head.root, head.ttl_ms)

    def _next(self, head: OwnVersion, offer: offers.Offer) -> SignedOffer:
        version = self.sign_next(head, offer)
        self.commit([version])
        return version.signed

    def commit(
        self,
        versions: list[OwnVersion],
        fills: Iterable[StoredFill] = (),
        refused: list[Refused] | None = None,
        held: list[ManualBid] | None = None,
        decided: list[tuple[str, BidStatus, int | None]] | None = None,
    ) -> None:
        """Durable first, then visible, then published (see the module docstring).

        A fill whose bid already has a receipt raises ``BidRecorded`` and writes nothing.
        ``refused`` bids are remembered in the same transaction, so a refusal is as
        durable as a fill before either is answered; so are ``held`` bids (pending on a
        manual offer) and ``decided`` ones (a pending bid's end, with the accept's fill).
        """
        fills = list(fills)

        def write(tx: Tx) -> None:
            if refused:
                self.refusals.insert(tx, refused, self.clock())
            if held:
                self.manual_bids.insert(tx, held)
            for bid_id, status, amount in decided or ():
                if not self.manual_bids.decide(tx, bid_id, Role.MAKER, status, amount):
                    raise errors.BidNotPending(f"bid {bid_id} is no longer pending")
            self.own_offers.save(tx, versions)
            for fill in fills:
                self.receipts.insert_new(tx, fill)
            if fills:
                self.recording_fills.emit(tx, fills)

        # Changes on different chains commit together when they meet (one fsync); each
        # is still undone alone if it raises, and durable before anything below runs.
        self.db.grouped(write)
        with self._guard:
            for v in versions:
                self._remember(v)
            for root in {v.root for v in versions} - self._heads.keys():
                self._forget(root)
        for v in versions:
            self.index.apply(v.signed)
        self.publisher.publish(v.signed for v in versions)

    def _remember(self, v: OwnVersion) -> None:
        """Track ``v`` (under the guard); ``commit`` forgets the chains that ended."""
        root = v.root
        self._known[v.signed.id] = (root, v.signed.seq)
        self._ids.setdefault(root, set()).add(v.signed.id)
        if v.signed.offer.status == OPEN:
            self._heads[root] = v
        elif (head := self._heads.get(root)) is not None and head.signed.id == v.signed.id:
            del self._heads[root]

    def _forget(self, root: str) -> None:
        """The chain has no open record any more: drop what is cached of it."""
        self._heads.pop(root, None)
        for offer_id in self._ids.pop(root, ()):
            self._known.pop(offer_id, None)


def transition(change: Callable[[], offers.Offer]) -> offers.Offer:
    """Run a pure transition; its refusal as the domain error it is."""
    try:
        return change()
    except TransitionError as exc:
        raise _TRANSITION_ERRORS.get(exc.code, errors.InvalidTerms)(exc.message) from None
