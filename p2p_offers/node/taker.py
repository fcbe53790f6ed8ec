"""The taker's side of a bid: sign it, find the owner, send it, check and keep the receipt.

Nothing is recorded unless the owner answers with a receipt that verifies
under the offer owner's key and settles exactly the bid sent; a node that
cannot reach the owner answers 502 and keeps nothing. A lost reply is retried
with the *same* signed bid, which the owner answers idempotently, so a retry
can never fill twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import requests
from nacl.signing import SigningKey

from p2p_offers.bids import Bid, Receipt, make_bid
from p2p_offers.fields import DocError
from p2p_offers.link import GrapeError
from p2p_offers.node import errors
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.peers import Peers
from p2p_offers.node.store import TAKER, Store, StoredFill
from p2p_offers.signing import SignatureError, public_hex

log = logging.getLogger(__name__)

RELAYED = {404, 409}  # the owner's verdicts the taker's user should see as they are


class Taker:
    def __init__(
        self,
        key: SigningKey,
        index: OfferIndex,
        peers: Peers,
        session: requests.Session,
        store: Store,
        clock: Callable[[], int],
        timeout_s: float = 10.0,
    ) -> None:
        self.key = key
        self.me = public_hex(key)
        self.index = index
        self.peers = peers
        self.session = session
        self.store = store
        self.clock = clock
        self.timeout_s = timeout_s

    def bid(self, offer_id: str, amount: int) -> Receipt:
        held = self.index.get(offer_id)
        if held is None:
            raise errors.not_found("offer", offer_id)
        signed = held.signed
        offer = signed.offer
        if signed.owner == self.me:
            raise errors.conflict("own_offer", "a node cannot bid on its own offers")
        if offer.ends_chain:
            raise errors.conflict("offer_taken", f"offer {offer_id} is {offer.status}")
        bid = make_bid(
            self.key,
            offer_id=offer_id,
            offer_seq=signed.seq,
            maker=signed.owner,
            amount=amount,
            price=offer.price,
            now_ms=self.clock(),
        )
        receipt = self._check(bid, self._send(bid))
        self.store.save_fill(StoredFill(bid, receipt, TAKER))
        return receipt

    def _send(self, bid: Bid) -> requests.Response:
        try:
            addresses = self.peers.owner(bid.maker)
        except GrapeError as exc:
            raise errors.dht_unavailable(f"cannot look up the offer's owner: {exc}") from None
        for address in addresses + addresses[:1]:  # the first one twice: a retry after a reset
            try:
                return self.session.post(
                    f"http://{address}/peer/bids", json=bid.to_wire(), timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                log.info("bid %s to %s failed: %s", bid.bid_id, address, exc)
        self.peers.forget_owner(bid.maker)
        raise errors.owner_unreachable(f"the owner of offer {bid.offer_id} cannot be reached")

    def _check(self, bid: Bid, resp: requests.Response) -> Receipt:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code in (200, 201):
            try:
                receipt = Receipt.from_wire(body)
                receipt.verify()
                receipt.check_answers(bid)
            except (DocError, SignatureError) as exc:
                log.warning("bad receipt for bid %s: %s", bid.bid_id, exc)
                raise errors.ApiError(
                    502, "bad_receipt", f"the owner sent a bad receipt: {exc}"
                ) from None
            return receipt
        error = body.get("error") if isinstance(body, dict) else None
        if resp.status_code in RELAYED and isinstance(error, dict):
            raise errors.ApiError(
                resp.status_code,
                str(error.get("code", "rejected")),
                str(error.get("message", "the owner rejected the bid")),
                error.get("details"),
            )
        raise errors.owner_unreachable(f"the owner answered {resp.status_code}")
