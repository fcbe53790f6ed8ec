"""The taker's side of a bid: sign it, find the owner, send it, check and keep the receipt.

Nothing is recorded unless the owner answers with a receipt that verifies
under the offer owner's key and settles exactly the bid sent; a node that
cannot reach the owner answers 502 and keeps nothing. A lost reply is retried
with the *same* signed bid, which the owner answers idempotently, so a retry
can never fill twice.

A bid whose fate is unknown (it may have reached the owner: a read timeout,
a reset after sending) is *in doubt*: it is written down, the same signed bid
is sent again a bounded number of times, and if no answer comes it is reported
as ``BidInDoubt`` (502 ``bid_in_doubt``) and stays recorded until an answer
settles it, so callers never treat those satoshis as unfilled.

``resolve_in_doubt`` (run by the node at start and then periodically) sends each
recorded bid again, as it is, through the same ``_send``: a verified receipt is
recorded like any taker fill, a refusal (404/409: the owner never filled it)
settles it as unfilled, and no answer leaves it for the next round. Whoever
listens on ``on_resolved`` (the order desk) is told either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import requests
import urllib3
from nacl.signing import SigningKey

from p2p_offers.bids import Bid, Receipt, make_bid
from p2p_offers.fields import DocError
from p2p_offers.link import GrapeError
from p2p_offers.money import format_btc
from p2p_offers.node import errors
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.peers import Peers
from p2p_offers.node.store import TAKER, Store, StoredFill
from p2p_offers.signing import SignatureError, public_hex

log = logging.getLogger(__name__)

RELAYED = {404, 409}  # the owner's verdicts the taker's user should see as they are
IN_DOUBT_RESENDS = 3  # extra sends of a bid that may have arrived, before it is left in doubt
IN_DOUBT_BACKOFF_S = 0.2  # doubled after each of them

IN_DOUBT_SCHEMA = """CREATE TABLE IF NOT EXISTS bids_in_doubt (
    bid_id  TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    bid     TEXT NOT NULL  -- Bid.to_wire(): the signed bid, to send again as it is
)"""


class BidInDoubt(errors.ApiError):
    """The bid may have been filled: no answer came, and it is recorded as in doubt."""

    def __init__(self, bid: Bid) -> None:
        super().__init__(
            502,
            "bid_in_doubt",
            f"no answer from the owner of offer {bid.offer_id}; the bid may have been filled",
            {"bid_id": bid.bid_id, "offer_id": bid.offer_id, "amount_btc": format_btc(bid.amount)},
        )
        self.bid = bid


def _maybe_delivered(exc: requests.RequestException) -> bool:
    """False only when the request surely never reached the owner (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        refused = (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)
        return not isinstance(reason, refused)
    return True


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
        self._lock = threading.Lock()
        self.counts = {
            "in_doubt": 0,
            "in_doubt_resolved": 0,
            "in_doubt_filled": 0,
            "in_doubt_unfilled": 0,
            "resolve_rounds": 0,
        }
        # told (bid, receipt or None if unfilled) when a bid in doubt is settled
        self.on_resolved: list[Callable[[Bid, Receipt | None], None]] = []
        with store.transaction() as db:
            db.execute(IN_DOUBT_SCHEMA)

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
        return self._answered(bid, self._send(bid))

    def _answered(self, bid: Bid, resp: requests.Response) -> Receipt:
        """Check the owner's answer to ``bid``; record a fill; settle any doubt it decides."""
        try:
            receipt = self._check(bid, resp)
        except errors.ApiError as exc:
            if exc.status in RELAYED:  # the owner refused this bid: it was never filled
                self._settled(bid, None)
            elif self._is_in_doubt(bid):  # an answer that decides nothing: still in doubt
                raise BidInDoubt(bid) from None
            raise
        self.store.save_fill(StoredFill(bid, receipt, TAKER))
        self._settled(bid, receipt)
        return receipt

    def _send(self, bid: Bid) -> requests.Response:
        try:
            addresses = self.peers.owner(bid.maker)
        except GrapeError as exc:
            raise errors.dht_unavailable(f"cannot look up the offer's owner: {exc}") from None
        doubt = False
        tries = addresses + addresses[:1]  # the first one twice: a retry after a reset
        for n, address in enumerate(tries):
            if doubt and n >= len(addresses) + 1:
                time.sleep(IN_DOUBT_BACKOFF_S * 2 ** (n - len(addresses) - 1))
            try:
                resp = self.session.post(
                    f"http://{address}/peer/bids", json=bid.to_wire(), timeout=self.timeout_s
                )
            except requests.RequestException as exc:
                log.info("bid %s to %s failed: %s", bid.bid_id, address, exc)
                if not doubt and _maybe_delivered(exc):
                    doubt = True  # from now on only an answer from the owner settles it
                    self._doubt(bid)
                    tries += addresses[:1] * IN_DOUBT_RESENDS
                continue
            return resp
        if doubt:
            raise BidInDoubt(bid)
        self.peers.forget_owner(bid.maker)
        raise errors.owner_unreachable(f"the owner of offer {bid.offer_id} cannot be reached")

    # -- bids in doubt -------------------------------------------------------------------

    def _doubt(self, bid: Bid) -> None:
        with self.store.transaction() as db:
            added = db.execute(
                "INSERT OR IGNORE INTO bids_in_doubt (bid_id, created, bid) VALUES (?, ?, ?)",
                (bid.bid_id, self.clock(), json.dumps(bid.to_wire())),
            ).rowcount
        if added:  # a bid already in doubt (being resolved) is not counted again
            with self._lock:
                self.counts["in_doubt"] += 1

    def _settled(self, bid: Bid, receipt: Receipt | None) -> None:
        """The owner decided ``bid`` (``receipt``, or None: refused); forget any doubt on it."""
        with self.store.transaction() as db:
            removed = db.execute(
                "DELETE FROM bids_in_doubt WHERE bid_id = ?", (bid.bid_id,)
            ).rowcount
        if not removed:
            return
        with self._lock:
            self.counts["in_doubt_resolved"] += 1
            self.counts["in_doubt_filled" if receipt else "in_doubt_unfilled"] += 1
        for listener in self.on_resolved:
            try:
                listener(bid, receipt)
            except Exception:
                log.exception("in-doubt listener failed for bid %s", bid.bid_id)

    def _is_in_doubt(self, bid: Bid) -> bool:
        rows = self.store.query("SELECT 1 FROM bids_in_doubt WHERE bid_id = ?", (bid.bid_id,))
        return bool(rows)

    def resolve_in_doubt(self, stopping: threading.Event | None = None) -> int:
        """Send every bid in doubt again, as it is; return how many the owners settled.

        A receipt is recorded as the taker's fill, a 404/409 settles the bid as
        unfilled; no answer (or any other) keeps it in doubt for the next round.
        """
        with self._lock:
            self.counts["resolve_rounds"] += 1
        settled = 0
        for bid in self.in_doubt():
            if stopping is not None and stopping.is_set():
                break
            try:
                self._answered(bid, self._send(bid))
                settled += 1
            except errors.ApiError as exc:
                if exc.status in RELAYED:
                    settled += 1
                    log.info("bid in doubt %s was not filled: %s", bid.bid_id, exc.code)
                else:
                    log.info("bid %s stays in doubt: %s", bid.bid_id, exc.code)
        return settled

    def in_doubt(self) -> list[Bid]:
        """Signed bids sent without an answer, oldest first (they may have been filled)."""
        rows = self.store.query("SELECT bid FROM bids_in_doubt ORDER BY created, bid_id")
        return [Bid.from_wire(json.loads(r[0])) for r in rows]

    def stats(self) -> dict[str, int]:
        open_ = self.store.query("SELECT COUNT(*) FROM bids_in_doubt")[0][0]
        with self._lock:
            return {**self.counts, "in_doubt_open": open_}

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
