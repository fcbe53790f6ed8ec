"""The taker's side of a bid: sign it, find the owner, send it, check and keep the receipt.

Nothing is recorded unless the owner answers with a receipt that verifies
under the offer owner's key and settles exactly the bid sent; a node that
cannot reach the owner answers ``OwnerUnreachable`` and keeps nothing.

A bid whose fate is unknown (it may have reached the owner: a read timeout,
a reset after sending) is *in doubt*: it is written down and sent once more at
once (a reset is often just a stale pooled connection); if that brings no
answer either, the request is answered ``BidInDoubt`` right away, never after
sleeping on the request thread, and the bid stays recorded until an answer
settles it, so callers never treat those satoshis as unfilled.

``resolve_in_doubt`` (run by the node's resolver thread) sends each recorded
bid again, as it is: a verified receipt is recorded like any taker fill, a
refusal (``errors.Refusal`` or ``NotFound``: the owner never filled it)
settles it as unfilled, and no answer leaves it for the next round. A bid
that just went in doubt is retried after ``IN_DOUBT_BACKOFF_S``, doubling, by
that thread (``due``), then every resolve interval. ``resolved`` tells the
order desk either way.

A bid on a manual offer (#9.1) is written down (``storage/pending``, role
taker) before it is sent, so a crash cannot lose a bid its owner may still
accept. The owner answers it pending (the user gets 202); ``resolve_pending``,
on the same resolver thread, sends it again as it is each round, and the
owner answers a bid it holds from its record: the receipt once accepted (for
all or part of the bid: the one case where a receipt may be for less),
``bid_rejected`` / ``pending_expired``, or pending still. No push is needed,
and an owner that was down meanwhile is simply asked again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from nacl.signing import SigningKey

from p2p_offers.bids import Bid, Receipt, make_bid
from p2p_offers.book import opposite
from p2p_offers.fields import DocError
from p2p_offers.link import GrapeError
from p2p_offers.node import errors
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.peers import Peers
from p2p_offers.node.network.transport import MaybeDelivered, TransportError
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.in_doubt import BidsInDoubt
from p2p_offers.node.storage.pending import MAX_PENDING_MS, BidStatus, ManualBid, ManualBids
from p2p_offers.node.storage.receipts import Receipts, Role, StoredFill
from p2p_offers.signing import SignatureError, public_hex

log = logging.getLogger(__name__)

IN_DOUBT_BACKOFF_S = 0.2  # first resend by the resolver; doubled after each
REFUSED = (errors.Refusal, errors.NotFound)  # the owner's verdicts: the bid was never filled


class Taker:
    def __init__(
        self,
        key: SigningKey,
        index: OfferIndex,
        peers: Peers,
        client: PeerClient,
        receipts: Receipts,
        in_doubt: BidsInDoubt,
        clock: Callable[[], int],
        manual_bids: ManualBids,
    ) -> None:
        self.key = key
        self.me = public_hex(key)
        self.index = index
        self.peers = peers
        self.client = client
        self.receipts = receipts
        self.in_doubt_bids = in_doubt
        self.clock = clock
        self.manual_bids = manual_bids
        self._lock = threading.Lock()
        # our bids held pending on manual offers (in memory too: an auto bid costs no read)
        self._held = {m.bid.bid_id for m in manual_bids.pending(Role.TAKER)}
        self._retry: dict[str, tuple[float, float]] = {}  # bid id -> (next try, last delay)
        self.counts: Counter[str] = Counter()
        # (bid, receipt or None if unfilled) when a bid in doubt is settled
        self.resolved: Signal[[Bid, Receipt | None]] = Signal("bid in doubt resolved")
        self.doubted: Signal[[]] = Signal("a bid went in doubt")  # wakes the resolver
        self.filled: Signal[[StoredFill]] = Signal("taker fill recorded")  # once per receipt

    def bid(
        self,
        offer_id: str,
        amount: int,
        for_offer: str | None = None,
        price: int | None = None,
    ) -> Receipt:
        """A bid that fills now or not at all (orders, uncrossing): a manual offer is refused
        ``manual_offer``, and an owner that holds it pending anyway decides nothing."""
        outcome = self.bid_or_hold(offer_id, amount, for_offer, price, manual_ok=False)
        if not isinstance(outcome, Receipt):
            raise errors.ManualOffer(f"offer {offer_id} is filled only by its owner's accept")
        return outcome

    def bid_or_hold(
        self,
        offer_id: str,
        amount: int,
        for_offer: str | None = None,
        price: int | None = None,
        manual_ok: bool = True,
    ) -> Receipt | ManualBid:
        """Bid ``amount`` on another node's offer; ``for_offer``: the own offer it trades for
        (uncrossing), recorded with the fill so that offer shows it. With ``price`` (what the
        user saw) the bid is signed at that price, so the owner fills it at no other
        (``PriceChanged``); a price our book already shows moved is refused here. On a
        manual offer the answer is the bid held pending (see the module docstring)."""
        held = self.index.get(offer_id)
        if held is None:
            raise errors.unknown("offer", offer_id)
        signed = held.signed
        offer = signed.offer
        if signed.owner == self.me:
            raise errors.OwnOffer("a node cannot bid on its own offers")
        if offer.ends_chain:
            raise errors.OfferTaken(f"offer {offer_id} is {offer.status}")
        if price is not None and price != offer.price:
            raise errors.PriceChanged.terms(offer_id, signed.seq, offer.price)
        if offer.manual and not manual_ok:
            raise errors.ManualOffer(f"offer {offer_id} is filled only by its owner's accept")
        if amount < offer.smallest_take:  # the owner would refuse it the same way
            raise errors.BelowMinimum.of(offer_id, amount, offer.smallest_take)
        bid = make_bid(
            self.key,
            offer_id=offer_id,
            offer_seq=signed.seq,
            maker=signed.owner,
            amount=amount,
            price=offer.price,
            now_ms=self.clock(),
        )
        if not offer.manual:
            return self._send(bid, for_offer, opposite(offer.side), fresh=True)
        now = self.clock()
        self.manual_bids.add(
            ManualBid(bid, Role.TAKER, offer_id, BidStatus.PENDING, now, now + MAX_PENDING_MS)
        )
        with self._lock:
            self._held.add(bid.bid_id)
        try:
            return self._send(bid, for_offer, opposite(offer.side), fresh=True)
        except (errors.OwnerUnreachable, errors.DhtUnavailable):
            self.manual_bids.drop(bid.bid_id, Role.TAKER)  # it surely never arrived
            with self._lock:
                self._held.discard(bid.bid_id)
            raise

    def _send(
        self,
        bid: Bid,
        for_offer: str | None = None,
        side: str | None = None,
        fresh: bool = False,
    ) -> Receipt | ManualBid:
        """One bid to its owner: a checked receipt, a refusal, or why there is no answer.

        ``fresh``: a bid just signed here, so in doubt only if this call puts it there
        (only ``_doubt`` adds a bid, and the resolver sends only bids already in doubt):
        the common case then costs no read of the bids in doubt and no delete after.
        """
        try:
            addresses = self.peers.owner(bid.maker)
        except GrapeError as exc:
            raise errors.DhtUnavailable(f"cannot look up the offer's owner: {exc}") from None
        doubt = not fresh and bid.bid_id in self.in_doubt_bids  # once True, stays so
        tries = addresses + addresses[:1]  # the first one twice: a retry after a reset
        for address in tries:
            try:
                reply = self.client.bid(address, bid)
            except MaybeDelivered as exc:
                log.info("bid %s to %s: %s", bid.bid_id, address, exc)
                if not doubt:
                    doubt = True  # from now on only the owner's answer settles it
                    self._doubt(bid, for_offer, side)
                continue
            except TransportError as exc:  # not delivered, or an answer we cannot read
                log.info("bid %s to %s: %s", bid.bid_id, address, exc)
                continue
            except REFUSED as exc:
                if doubt:
                    self._settled(bid, None)
                if self._is_held(bid.bid_id):
                    ended = BidStatus.EXPIRED
                    if not isinstance(exc, errors.PendingExpired):
                        ended = BidStatus.REJECTED
                    self._decide(bid.bid_id, ended)
                raise
            except errors.DomainError as exc:
                raise self._undecided(bid, f"the owner answered {exc.code}") from None
            if isinstance(reply, dict) and reply.get("status") == "pending":
                return self._pending(bid, reply)
            receipt = self._check(bid, reply)
            fill = StoredFill(bid, receipt, Role.TAKER, for_offer, side)
            if self.receipts.add(fill):
                self.filled.emit(fill)
            if doubt:
                self._settled(bid, receipt)
            if self._is_held(bid.bid_id):
                self._decide(bid.bid_id, BidStatus.ACCEPTED, receipt.amount)
            return receipt
        if doubt:
            raise errors.BidInDoubt.of(bid)
        self.peers.forget_owner(bid.maker)
        raise errors.OwnerUnreachable(f"the owner of offer {bid.offer_id} cannot be reached")

    def _undecided(self, bid: Bid, why: str) -> errors.DomainError:
        """An answer that decides nothing: a bid in doubt stays so."""
        if bid.bid_id in self.in_doubt_bids:
            return errors.BidInDoubt.of(bid)
        return errors.OwnerUnreachable(why)

    def _pending(self, bid: Bid, reply: dict) -> ManualBid:
        """The owner holds ``bid`` pending: keep its expiry (bounded), stop doubting it."""
        row = self.manual_bids.get(bid.bid_id, Role.TAKER)
        if row is None:  # not a bid we sent to a manual offer: it decides nothing
            raise self._undecided(bid, "the owner held a bid on an offer that is not manual")
        if self.in_doubt_bids.remove(bid.bid_id):  # answered: the owner has it
            with self._lock:
                self._retry.pop(bid.bid_id, None)
        expires = reply.get("expires")
        now = self.clock()
        if (
            isinstance(expires, int)
            and not isinstance(expires, bool)
            and now <= expires <= now + MAX_PENDING_MS
            and expires != row.expires
            and self.manual_bids.expire_at(bid.bid_id, expires)
        ):
            row = replace(row, expires=expires)
        return row

    def _is_held(self, bid_id: str) -> bool:
        with self._lock:
            return bid_id in self._held

    def _decide(self, bid_id: str, status: BidStatus, accepted: int | None = None) -> None:
        self.manual_bids.settle(bid_id, Role.TAKER, status, accepted)
        with self._lock:
            self._held.discard(bid_id)

    def resolve_pending(self, stopping: threading.Event | None = None) -> int:
        """Ask the owners about our bids they hold pending; return how many were decided."""
        decided = 0
        for row in self.manual_bids.pending(Role.TAKER):
            if stopping is not None and stopping.is_set():
                break
            try:
                outcome = self._send(row.bid, side=None)
            except REFUSED:
                decided += 1
                continue
            except errors.DomainError as exc:
                log.info("pending bid %s: no answer (%s)", row.bid.bid_id, exc.code)
                continue
            decided += isinstance(outcome, Receipt)
        return decided

    def _check(self, bid: Bid, reply: object) -> Receipt:
        try:
            receipt = Receipt.from_wire(reply)
            receipt.verify()
            receipt.check_answers(bid, part=self._is_held(bid.bid_id))
        except (DocError, SignatureError) as exc:
            log.warning("bad receipt for bid %s: %s", bid.bid_id, exc)
            if bid.bid_id in self.in_doubt_bids:
                raise errors.BidInDoubt.of(bid) from None
            raise errors.BadReceipt(f"the owner sent a bad receipt: {exc}") from None
        return receipt

    # -- bids in doubt -------------------------------------------------------------------

    def _doubt(self, bid: Bid, for_offer: str | None = None, side: str | None = None) -> None:
        # one being resolved is not counted again
        if self.in_doubt_bids.add(bid, self.clock(), for_offer, side):
            with self._lock:
                self.counts["in_doubt"] += 1
                self._retry[bid.bid_id] = (time.monotonic() + IN_DOUBT_BACKOFF_S, 0.0)
            self.doubted.emit()

    def _settled(self, bid: Bid, receipt: Receipt | None) -> None:
        """The owner decided ``bid`` (``receipt``, or None: refused); forget any doubt on it."""
        if not self.in_doubt_bids.remove(bid.bid_id):
            return
        with self._lock:
            self._retry.pop(bid.bid_id, None)
            self.counts["in_doubt_resolved"] += 1
            self.counts["in_doubt_filled" if receipt else "in_doubt_unfilled"] += 1
        self.resolved.emit(bid, receipt)

    def due(self) -> float | None:
        """Seconds until the next back-off resend of a fresh bid in doubt, None if none waits."""
        with self._lock:
            if not self._retry:
                return None
            return max(0.0, min(t for t, _ in self._retry.values()) - time.monotonic())

    def resolve_in_doubt(
        self, stopping: threading.Event | None = None, only_due: bool = False
    ) -> int:
        """Send bids in doubt again, as they are; return how many the owners settled.

        A receipt is recorded as the taker's fill, a refusal settles the bid as
        unfilled; no answer (or any other) keeps it in doubt for the next round.
        With ``only_due``, only the bids whose back-off ran out are sent.
        """
        with self._lock:
            self.counts["resolve_rounds"] += 1
        now = time.monotonic()
        settled = 0
        for bid, for_offer, side in self.in_doubt_bids.entries():
            if stopping is not None and stopping.is_set():
                break
            with self._lock:
                retry = self._retry.get(bid.bid_id)
            if only_due and (retry is None or retry[0] > now):
                continue
            try:
                self._send(bid, for_offer, side)
                settled += 1
            except REFUSED as exc:
                settled += 1
                log.info("bid in doubt %s was not filled: %s", bid.bid_id, exc.code)
            except errors.DomainError as exc:
                log.info("bid %s stays in doubt: %s", bid.bid_id, exc.code)
                self._back_off(bid.bid_id)
        return settled

    def _back_off(self, bid_id: str) -> None:
        with self._lock:
            retry = self._retry.get(bid_id)
            if retry is None:
                return
            delay = retry[1] * 2 if retry[1] else IN_DOUBT_BACKOFF_S * 2
            if delay > 2.0:  # from then on the resolver's regular rounds carry it
                del self._retry[bid_id]
            else:
                self._retry[bid_id] = (time.monotonic() + delay, delay)

    def in_doubt(self) -> list[Bid]:
        """Signed bids sent without an answer, oldest first (they may have been filled)."""
        return self.in_doubt_bids.all()

    def stats(self) -> dict[str, int]:
        open_ = self.in_doubt_bids.count()
        with self._lock:
            counts = {
                "in_doubt": 0,
                "in_doubt_resolved": 0,
                "in_doubt_filled": 0,
                "in_doubt_unfilled": 0,
                "resolve_rounds": 0,
            }
            counts.update(self.counts)
            return {**counts, "in_doubt_open": open_}
