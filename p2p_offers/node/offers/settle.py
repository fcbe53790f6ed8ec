"""Settling takers' bids on our offers: one chain at a time, a batch per commit.

Authenticity and addressee are checked first, outside any lock. The bid then
joins its chain's queue; whichever thread holds the chain lock settles every
queued bid in arrival order against the evolving head and commits them all in
ONE transaction (group commit: a hot offer costs one fsync per batch, not per
bid). Every bid's outcome is durable before any of them is answered, and
exactly one outcome is recorded per bid id: a bid id answered before gets its
recorded receipt, or its recorded refusal (``storage/refusals``: a refusal is
final, whatever the offer became since), or ``DuplicateBid`` if it was another bid.

Bids that come in one request (a taker's batch, ``accept_many``) are all queued
before any chain settles, so a taker's burst on a hot offer is one batch here
too; a lone bid is a batch of one.

What a bid may fill: only while its ``ts`` is within ``BID_WINDOW_MS`` of our
clock, at the offer's price now (else ``PriceChanged``: the taker is never
filled at a price other than the one it signed), and only the version it names
(``offer_seq``): a bid on a record we changed since (even just refreshed) is
``stale_offer``, with the current seq in the details to bid on. The one
exception is the chain rule: a bid naming a record split by a partial fill
(its last open version, or the version that records the split) goes to the
chain's live remainder, if its price (and so its side) is unchanged.

A bid on a manual offer (#9.1) passes the same checks at arrival, and instead
of a fill it is written down as pending (``storage/pending``) in the batch's
transaction; the same bid again is answered from that row. The owner's accept
(``accept_pending``) fills it through the same ``_take`` under the same chain
lock as any bid, at the bid's price and for at most what the chain still has,
so accepts can never together overfill an offer: the one that finds too little
left is ``insufficient_amount``.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING

from p2p_offers import offers
from p2p_offers.bids import BID_WINDOW_MS, Bid, Receipt, in_window, make_receipt
from p2p_offers.fields import new_id
from p2p_offers.money import format_btc
from p2p_offers.node import errors
from p2p_offers.node.offers.chains import Slot
from p2p_offers.node.storage.own_offers import OwnVersion
from p2p_offers.node.storage.pending import BidStatus, ManualBid
from p2p_offers.node.storage.receipts import BidRecorded, Role, StoredFill
from p2p_offers.node.storage.refusals import Refused
from p2p_offers.signing import SignatureError

if TYPE_CHECKING:
    from p2p_offers.node.offers.maker import OfferService

log = logging.getLogger(__name__)

Outcome = Receipt | ManualBid


class Settler:
    def __init__(self, service: OfferService) -> None:
        self.service = service

    def _admit(self, bid: Bid) -> str:
        """What a bid must be before it may queue: signed by its taker, meant for us; its
        chain's root."""
        try:
            bid.verify()
        except SignatureError:
            raise errors.InvalidSignature("the bid's signature does not verify") from None
        if bid.maker != self.service.me:
            raise errors.NotOwner.of(bid.offer_id)
        return self.service.root(bid.offer_id)

    def accept_many(self, bids: list[Bid]) -> list[Outcome | errors.DomainError]:
        """Bids that came in one request (a taker's batch), each decided as ``accept``
        decides it, in order; all are queued on their chains before any chain settles, so
        each chain settles its share in one batch and one commit."""
        service = self.service
        admitted: list[tuple[str, Slot] | errors.DomainError] = []
        for bid in bids:
            try:
                admitted.append((self._admit(bid), Slot(bid)))
            except errors.DomainError as exc:
                admitted.append(exc)
        mine: dict[str, list[Slot]] = {}
        for item in admitted:
            if not isinstance(item, errors.DomainError):
                mine.setdefault(item[0], []).append(item[1])
        with ExitStack() as using:
            chains = {root: using.enter_context(service.chains.using(root)) for root in mine}
            with service._guard:
                for root, slots in mine.items():
                    chains[root].queue.extend(slots)
            for root, chain in chains.items():
                with chain.lock:
                    if all(slot.done for slot in mine[root]):
                        continue  # another bid's thread settled ours with its batch
                    with service._guard:
                        batch, chain.queue = chain.queue, []
                    try:
                        self._settle(root, batch)
                    except Exception:  # every slot of the batch holds it (``_outcome``)
                        log.exception("settling bids on the chain of %s failed", root)
        return [
            item if isinstance(item, errors.DomainError) else _outcome(item[1]) for item in admitted
        ]

    def accept(self, bid: Bid) -> Outcome:
        outcome = self.accept_many([bid])[0]
        if isinstance(outcome, errors.DomainError):
            raise outcome
        return outcome

    def _settle(self, root: str, batch: list[Slot]) -> None:
        """Decide every bid of ``batch`` in order, then make all fills durable at once."""
        service = self.service
        with service._guard:
            head = service._heads.get(root)
        now = service.clock()
        versions: list[OwnVersion] = []
        fills: list[StoredFill] = []
        refused: list[Refused] = []
        held: list[ManualBid] = []
        seen: dict[str, Slot] = {}
        try:  # from here on, every slot of the batch is answered, whatever is raised
            for slot in batch:
                try:
                    if slot.bid.bid_id in seen:  # the same bid twice in one batch (a fast retry)
                        slot.receipt = _same_bid(seen[slot.bid.bid_id], slot.bid)
                        continue
                    seen[slot.bid.bid_id] = slot
                    answered = service.receipts.get(slot.bid.bid_id, Role.MAKER)
                    if answered is not None:
                        slot.receipt = _same_receipt(answered, slot.bid)
                        continue
                    before = service.refusals.get(slot.bid)
                    if before is not None:
                        slot.error = before
                        continue
                    pending = service.manual_bids.get(slot.bid.bid_id, Role.MAKER)
                    if pending is not None:
                        slot.held = _same_pending(pending, slot.bid, now)
                        continue
                    side = head.signed.offer.side if head is not None else None
                    try:
                        if head is not None and head.signed.offer.manual:
                            self._check(head, slot.bid, now)
                            slot.held = ManualBid(
                                slot.bid,
                                Role.MAKER,
                                root,
                                BidStatus.PENDING,
                                now,
                                now + service.pending_ms,
                            )
                            held.append(slot.held)
                            continue
                        head, made, slot.receipt = self._fill(root, head, slot.bid, now)
                    except errors.Refusal as exc:
                        if _remember(slot.bid, exc, now):
                            refused.append(Refused(slot.bid, exc))
                        raise
                    versions += made
                    fills.append(StoredFill(slot.bid, slot.receipt, Role.MAKER, side=side))
                except errors.DomainError as exc:
                    slot.error = exc
            if fills or refused or held:
                service.commit(versions, fills, refused, held=held)
        except BidRecorded:
            # A bid id recorded meanwhile through another chain: nothing was written.
            # Settle one by one, so only that bid is answered from the record.
            for slot in batch:
                slot.reset()
            if len(batch) == 1 and service.receipts.get(batch[0].bid.bid_id, Role.MAKER) is None:
                raise
            for slot in batch:
                self._settle(root, [slot])
            return
        except Exception as exc:  # nothing durable, so nobody may be told "filled"
            for slot in batch:
                if slot.error is None:
                    slot.receipt, slot.held, slot.error = None, None, exc
            raise
        finally:
            for slot in batch:
                slot.done = True

    def _fill(
        self, root: str, head: OwnVersion | None, bid: Bid, now: int
    ) -> tuple[OwnVersion | None, list[OwnVersion], Receipt]:
        """Check ``bid`` against the chain's head; return the new head, versions and receipt."""
        return self._take(root, self._check(head, bid, now), bid, bid.amount, now)

    def _check(self, head: OwnVersion | None, bid: Bid, now: int) -> OwnVersion:
        """What an arriving bid must meet to be filled (or held, on a manual offer)."""
        if not in_window(bid.ts, now):
            raise errors.BidExpired.of(bid, now, BID_WINDOW_MS)
        if head is None:
            raise errors.OfferTaken(f"offer {bid.offer_id} is no longer open")
        signed = head.signed
        offer = signed.offer
        if bid.price != offer.price:
            raise errors.PriceChanged.terms(signed.id, signed.seq, offer.price)
        if not self._names_head(signed, bid):
            raise errors.StaleOffer.terms(signed.id, signed.seq, offer.price)
        if offer.expires <= now:
            raise errors.OfferExpired(f"offer {signed.id} has expired")
        if bid.amount > offer.amount:
            raise errors.InsufficientAmount.left(signed.id, bid.amount, offer.amount)
        if bid.amount < offer.smallest_take:
            raise errors.BelowMinimum.of(signed.id, bid.amount, offer.smallest_take)
        return head

    def _take(
        self, root: str, head: OwnVersion, bid: Bid, amount: int, now: int
    ) -> tuple[OwnVersion | None, list[OwnVersion], Receipt]:
        """Fill ``amount`` of ``bid`` on the chain's open ``head`` (checked by the caller):
        the new head (the remainder, if any), the versions to commit and the receipt."""
        service = self.service
        offer = head.signed.offer
        filled, rest = offer.fill_with(bid.bid_id, amount, bid.taker, now, new_id())
        made = [service.sign_next(head, filled)]
        new_head = None
        if rest is not None:
            new_head = OwnVersion(
                offers.sign(service.key, rest, offers.FIRST_SEQ), root, head.ttl_ms
            )
            made.append(new_head)
        receipt = make_receipt(
            service.key,
            bid,
            offer_id=filled.id,
            remainder=rest.id if rest else None,
            now_ms=now,
            amount=amount,
        )
        return new_head, made, receipt

    # -- manual offers: the owner decides a pending bid ------------------------------------

    def accept_pending(self, offer_id: str, bid_id: str, amount: int | None) -> Receipt:
        """Fill a pending bid (all of it, or ``amount`` of it) as an auto bid is filled."""
        service = self.service
        root = service.root(offer_id)
        with service.chains.locked(root):
            now = service.clock()
            row = self._pending(root, bid_id, now)
            bid = row.bid
            take = bid.amount if amount is None else amount
            if take > bid.amount:
                raise errors.InvalidTerms(
                    f"an accept takes at most the bid's {format_btc(bid.amount)} BTC"
                )
            with service._guard:
                head = service._heads.get(root)
            if head is None:
                raise errors.OfferTaken(f"offer {offer_id} is no longer open")
            signed = head.signed
            offer = signed.offer
            if bid.price != offer.price:  # the taker signed one price: never fill at another
                raise errors.PriceChanged.terms(signed.id, signed.seq, offer.price)
            if offer.expires <= now:
                raise errors.OfferExpired(f"offer {signed.id} has expired")
            if take > offer.amount:
                raise errors.InsufficientAmount.left(signed.id, take, offer.amount)
            _, made, receipt = self._take(root, head, bid, take, now)
            fill = StoredFill(bid, receipt, Role.MAKER, side=offer.side)
            service.commit(made, [fill], decided=[(bid_id, BidStatus.ACCEPTED, take)])
            return receipt

    def reject_pending(self, offer_id: str, bid_id: str) -> ManualBid:
        service = self.service
        root = service.root(offer_id)
        with service.chains.locked(root):
            row = self._pending(root, bid_id, service.clock())
            service.manual_bids.settle(bid_id, Role.MAKER, BidStatus.REJECTED)
            return replace(row, status=BidStatus.REJECTED)

    def _pending(self, root: str, bid_id: str, now: int) -> ManualBid:
        """The pending bid ``bid_id`` on chain ``root`` (caller holds its lock), or why not.

        One found past its expiry is written expired here, so it is expired for good.
        """
        service = self.service
        row = service.manual_bids.get(bid_id, Role.MAKER)
        if row is None or row.root != root:
            raise errors.unknown("bid", bid_id)
        now_row = row.effective(now)
        if now_row.status == BidStatus.EXPIRED and row.status == BidStatus.PENDING:
            service.manual_bids.settle(bid_id, Role.MAKER, BidStatus.EXPIRED)
        if now_row.status != BidStatus.PENDING:
            raise errors.BidNotPending(
                f"bid {bid_id} is {now_row.status}", {"bid_id": bid_id, "status": now_row.status}
            )
        return row

    def _names_head(self, head: offers.SignedOffer, bid: Bid) -> bool:
        """Does ``bid`` name a version a fill on ``head`` may settle?

        The head itself: only its current version. A record the chain's fills
        split: its last open version or the one that recorded the split (a
        taker may have seen either; the caller compares prices, as the chain
        rule wants them unchanged).
        """
        if head.id == bid.offer_id:
            return bid.offer_seq == head.seq
        named = self.service.own(bid.offer_id)
        fill = named.offer.fill if named is not None else None
        if named is None or fill is None or fill.remainder is None:
            return False
        return bid.offer_seq in (named.seq - 1, named.seq)


def _outcome(slot: Slot) -> Outcome | errors.DomainError:
    """A settled slot's answer, an error included (one that is not the domain's, a failed
    commit, answers ``internal``: nothing of it was made durable, so nothing was filled)."""
    try:
        return slot.outcome()
    except errors.DomainError as exc:
        return exc
    except Exception:
        return errors.Internal(f"bid {slot.bid.bid_id} could not be settled")


def _remember(bid: Bid, refusal: errors.Refusal, now: int) -> bool:
    """Is ``refusal`` one to keep? All are, except a bid already older than the window:
    it can never be filled again, so a replay is refused the same way without a record."""
    return not (isinstance(refusal, errors.BidExpired) and bid.ts < now - BID_WINDOW_MS)


def _same_pending(row: ManualBid, bid: Bid, now: int) -> ManualBid:
    """The answer to a bid held on a manual offer, sent again: still pending, or its end."""
    if row.bid != bid:
        raise errors.DuplicateBid(f"bid id {bid.bid_id} was used for another bid")
    row = row.effective(now)
    if row.status == BidStatus.PENDING:
        return row
    if row.status == BidStatus.REJECTED:
        raise errors.BidRejected(f"the owner rejected bid {bid.bid_id}")
    if row.status == BidStatus.EXPIRED:
        raise errors.PendingExpired(f"bid {bid.bid_id} was not accepted in time")
    raise errors.BidNotPending(  # accepted: its receipt is answered before this is asked
        f"bid {bid.bid_id} is {row.status}", {"bid_id": bid.bid_id, "status": row.status}
    )


def _same_bid(first: Slot, bid: Bid) -> Receipt:
    """The answer to a bid that came twice in one batch: the first one's, if it is the same."""
    if first.receipt is None:
        raise first.error or errors.DuplicateBid("bid already decided")
    return _same_receipt(StoredFill(first.bid, first.receipt, Role.MAKER), bid)


def _same_receipt(answered: StoredFill, bid: Bid) -> Receipt:
    if answered.bid == bid:
        return answered.receipt
    raise errors.DuplicateBid(f"bid id {bid.bid_id} was used for another bid")
