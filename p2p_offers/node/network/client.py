"""``PeerClient``: every call this node makes to another node, with its timeouts in one place.

Callers get typed results or one of the transport's errors (``NotDelivered``,
``MaybeDelivered``, ``BadReply``) or the remote's ``DomainError``; replies are
checked for shape here, so no caller parses a peer's JSON itself.

Reply timeouts follow the measured round trips (issue 8.2): one RFC 6298
estimator (``p2p_offers.rtt``) per peer address and action, since a sync page
of 1,000 records and an ``identify`` differ in what the peer does before it
answers. A call waits ``min(the action's maximum in PeerTimeouts, RTO)``, and
the RTO never goes below ``PeerTimeouts.floor_s``. Before the first reply from
an address the maximum applies (as before this existed), so nothing waits less
than it did until a peer has been measured; after that a silent peer costs
about ``floor_s`` (doubling on each timeout) instead of the full maximum, and
a slow link (300 ms RTT) or a busy owner still gets what its replies took.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2p_offers.bids import MAX_BID_BATCH, Bid
from p2p_offers.fields import is_public_key
from p2p_offers.node import errors
from p2p_offers.node.network import identity
from p2p_offers.node.network.batching import BidBatcher
from p2p_offers.node.network.transport import (
    BadReply,
    NotDelivered,
    PeerTransport,
    TransportError,
)
from p2p_offers.rtt import RtoTable


@dataclass(frozen=True)
class PeerTimeouts:
    """Seconds to wait for each kind of call (a bid's owner may be busy settling a batch).

    ``bid_total_s`` bounds one burst of attempts at a bid (the taker tries each of
    the owner's addresses, and the first one twice): every attempt that starts
    within ``BURST_GAP_S`` of the previous one's end shares that budget, so a bid to an
    owner that does not answer is decided (in doubt, or unreachable) within it,
    however many addresses the owner announced. Resends of a bid in doubt come
    later and start a budget of their own.
    """

    bid_s: float = 5.0
    bid_total_s: float = 5.0
    push_s: float = 3.0
    page_s: float = 10.0  # a sync page of up to 1000 records
    ledger_s: float = 5.0
    identify_s: float = 2.0
    # the adaptive timeout's floor: below it a busy peer (a GC pause, a 2-core machine
    # running a test suite) would look dead; every timeout above is the maximum
    floor_s: float = 1.0


@dataclass(frozen=True, slots=True)
class FeedsPage:
    node: str
    feeds: list[tuple[str, int]]  # (owner, height), well-formed ones only


@dataclass(frozen=True, slots=True)
class OffersPage:
    records: list[Any]  # raw records: the intake verifies each
    next: str | None


def _bid_result(item: Any) -> Any:
    """One entry of a batch's ``results``: the reply a lone bid would have had, or its error."""
    if isinstance(item, dict) and len(item) == 1:
        if isinstance(item.get("receipt"), dict):
            return item["receipt"]
        if isinstance(item.get("pending"), dict):
            return item["pending"]
        error = item.get("error")
        if isinstance(error, dict):
            return errors.from_wire(error.get("code"), error.get("message"), error.get("details"))
    return BadReply("malformed bid result")


# Attempts at a bid that start within this of the previous one's end are one burst: the
# taker's tries follow each other at once (after at most a database write, when a bid goes
# in doubt); the resolver's resends of a bid in doubt soon come further apart.
BURST_GAP_S = 1.0


class PeerClient:
    def __init__(
        self,
        transport: PeerTransport,
        timeouts: PeerTimeouts | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.timeouts = timeouts or PeerTimeouts()
        self.clock = clock
        # unmeasured: a huge initial RTO, so the action's maximum applies (see _call)
        self.rtos = RtoTable(min_s=self.timeouts.floor_s, max_s=60.0, initial_s=60.0)
        self._rtos_lock = threading.Lock()
        self._bursts: dict[str, tuple[float, float]] = {}  # bid id -> (burst start, last end)
        self._bursts_lock = threading.Lock()
        self._bids = BidBatcher(self._send_bids, clock, max_batch=MAX_BID_BATCH)

    def timeout(self, address: str, action: str, maximum: float) -> float:
        """What the next ``action`` call to ``address`` may wait: its RTO, at most ``maximum``."""
        with self._rtos_lock:
            return min(maximum, self.rtos.timeout((address, action)))

    def _call(self, address: str, action: str, payload: Any, maximum: float) -> Any:
        """One request, its reply time fed to the address's estimator.

        Any answer, an error included, is a sample: the peer answered. A call that
        ran out of its time is a timeout (the RTO doubles); one that failed sooner
        (refused, reset) says nothing about the round trip.
        """
        key = (address, action)
        timeout = self.timeout(address, action, maximum)
        started = self.clock()
        try:
            reply = self.transport.call(address, action, payload, timeout)
        except errors.DomainError:
            self._sample(key, self.clock() - started)
            raise
        except TransportError:
            if self.clock() - started >= 0.9 * timeout:
                with self._rtos_lock:
                    self.rtos.timed_out(key)
            raise
        self._sample(key, self.clock() - started)
        return reply

    def _sample(self, key: tuple[str, str], rtt_s: float) -> None:
        with self._rtos_lock:
            self.rtos.sample(key, rtt_s)

    def identify(self, address: str) -> str | None:
        """The client_id the node at ``address`` proves it holds there, or None.

        The proof signs our fresh challenge and ``address`` itself (``identity.py``), so
        an address that relays the question to another node cannot pass as that node.
        """
        probe = identity.challenge()
        payload = {"challenge": probe, "address": address}
        try:
            reply = self._call(address, "identify", payload, self.timeouts.identify_s)
        except (TransportError, errors.DomainError):
            return None
        return identity.proven_id(reply, probe, address)

    def bid(self, address: str, bid: Bid) -> Any:
        """Send a signed bid to its owner; the raw reply (a receipt to check) or an error.

        NotDelivered, without sending, once this burst's ``bid_total_s`` is spent. Bids
        sent to one address at the same time go together (``network/batching.py``).
        """
        timeout = self._bid_budget(bid.bid_id)
        if timeout <= 0.0:
            raise NotDelivered(f"bid to {address}: its {self.timeouts.bid_total_s} s are spent")
        try:
            return self._bids.send(address, bid, timeout)
        finally:
            with self._bursts_lock:
                start = self._bursts.get(bid.bid_id, (self.clock(), 0.0))[0]
                self._bursts[bid.bid_id] = (start, self.clock())

    def _send_bids(self, address: str, bids: list[Bid], timeout: float) -> list[Any]:
        """One request for ``bids``: per bid its raw reply, or the owner's error for it. A
        lone bid goes as ``bid``, so the quiet case is what it always was."""
        if len(bids) == 1:
            try:
                return [self._call(address, "bid", bids[0].to_wire(), timeout)]
            except errors.DomainError as exc:
                return [exc]
        try:
            reply = self._call(address, "bids", {"bids": [b.to_wire() for b in bids]}, timeout)
        except errors.DomainError as exc:  # not one bid's verdict: nothing was decided
            raise BadReply(f"bids to {address}: the batch was refused ({exc.code})") from None
        results = reply.get("results") if isinstance(reply, dict) else None
        if not isinstance(results, list) or len(results) != len(bids):
            raise BadReply(f"bids to {address}: malformed batch reply")
        return [_bid_result(item) for item in results]

    def _bid_budget(self, bid_id: str) -> float:
        """Seconds this attempt may take: the per-attempt timeout, or what the burst has left."""
        now = self.clock()
        with self._bursts_lock:
            if len(self._bursts) > 10_000:
                self._bursts = {k: v for k, v in self._bursts.items() if now - v[1] < BURST_GAP_S}
            held = self._bursts.get(bid_id)
            start = held[0] if held is not None and now - held[1] < BURST_GAP_S else now
            if held is None or start == now:
                self._bursts[bid_id] = (start, now)  # a new burst (its end set once sent)
        left = start + self.timeouts.bid_total_s - now
        return min(self.timeouts.bid_s, left) if left > 0.01 else 0.0

    def announce(self, address: str, body: bytes) -> Any:
        """Push a batch of announcements (already encoded, shared by every peer)."""
        return self._call(address, "announce", body, self.timeouts.push_s)

    def gossip(self, address: str, envelope: bytes) -> Any:
        """One signed gossip envelope (``network/gossip.py``), already encoded."""
        return self._call(address, "gossip", envelope, self.timeouts.push_s)

    def offers(self, address: str, cursor: str | None, limit: int) -> OffersPage:
        payload: dict[str, Any] = {"limit": limit}
        if cursor:
            payload["cursor"] = cursor
        page = self._call(address, "offers", payload, self.timeouts.page_s)
        records = page.get("records") if isinstance(page, dict) else None
        if not isinstance(records, list):
            raise BadReply("malformed sync page")
        nxt = page.get("next")
        if nxt is not None and not isinstance(nxt, str):
            raise BadReply("malformed sync cursor")
        return OffersPage(records, nxt or None)

    def feeds(self, address: str) -> FeedsPage:
        reply = self._call(address, "feeds", None, self.timeouts.ledger_s)
        feeds = reply.get("feeds") if isinstance(reply, dict) else None
        if not isinstance(feeds, list):
            raise BadReply("malformed feed list")
        found = [
            (item["owner"], item["height"])
            for item in feeds
            if isinstance(item, dict)
            and is_public_key(item.get("owner"))
            and type(item.get("height")) is int
        ]
        return FeedsPage(str(reply.get("node", "")), found)

    def feed(self, address: str, owner: str, start: int, limit: int) -> list[Any]:
        payload = {"owner": owner, "from": start, "limit": limit}
        reply = self._call(address, "feed", payload, self.timeouts.ledger_s)
        entries = reply.get("entries") if isinstance(reply, dict) else None
        if not isinstance(entries, list):
            raise BadReply("malformed ledger page")
        return entries

    def close(self) -> None:
        self.transport.close()
