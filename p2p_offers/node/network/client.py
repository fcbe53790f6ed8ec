"""``PeerClient``: every call this node makes to another node, with its timeouts in one place.

Callers get typed results or one of the transport's errors (``NotDelivered``,
``MaybeDelivered``, ``BadReply``) or the remote's ``DomainError``; replies are
checked for shape here, so no caller parses a peer's JSON itself.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from p2p_offers.bids import Bid
from p2p_offers.fields import is_public_key
from p2p_offers.node import errors
from p2p_offers.node.network.transport import (
    BadReply,
    NotDelivered,
    PeerTransport,
    TransportError,
)


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


@dataclass(frozen=True, slots=True)
class FeedsPage:
    node: str
    feeds: list[tuple[str, int]]  # (owner, height), well-formed ones only


@dataclass(frozen=True, slots=True)
class OffersPage:
    records: list[Any]  # raw records: the intake verifies each
    next: str | None


# Attempts at a bid that start within this of the previous one's end are one burst: the
# taker's tries follow each other at once (after at most a database write, when a bid goes
# in doubt); the resolver's resends of a bid in doubt soon come further apart.
BURST_GAP_S = 1.0


class PeerClient:
    def __init__(self, transport: PeerTransport, timeouts: PeerTimeouts | None = None) -> None:
        self.transport = transport
        self.timeouts = timeouts or PeerTimeouts()
        self._bursts: dict[str, tuple[float, float]] = {}  # bid id -> (burst start, last end)
        self._bursts_lock = threading.Lock()

    def identify(self, address: str) -> str | None:
        """The client_id of the node at ``address``, or None if it does not say one."""
        try:
            reply = self.transport.call(address, "identify", None, self.timeouts.identify_s)
        except (TransportError, errors.DomainError):
            return None
        client_id = reply.get("client_id") if isinstance(reply, dict) else None
        return client_id if is_public_key(client_id) else None

    def bid(self, address: str, bid: Bid) -> Any:
        """Send a signed bid to its owner; the raw reply (a receipt to check) or an error.

        NotDelivered, without sending, once this burst's ``bid_total_s`` is spent.
        """
        timeout = self._bid_budget(bid.bid_id)
        if timeout <= 0.0:
            raise NotDelivered(f"bid to {address}: its {self.timeouts.bid_total_s} s are spent")
        try:
            return self.transport.call(address, "bid", bid.to_wire(), timeout)
        finally:
            with self._bursts_lock:
                start = self._bursts.get(bid.bid_id, (time.monotonic(), 0.0))[0]
                self._bursts[bid.bid_id] = (start, time.monotonic())

    def _bid_budget(self, bid_id: str) -> float:
        """Seconds this attempt may take: the per-attempt timeout, or what the burst has left."""
        now = time.monotonic()
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
        return self.transport.call(address, "announce", body, self.timeouts.push_s)

    def gossip(self, address: str, envelope: bytes) -> Any:
        """One signed gossip envelope (``network/gossip.py``), already encoded."""
        return self.transport.call(address, "gossip", envelope, self.timeouts.push_s)

    def offers(self, address: str, cursor: str | None, limit: int) -> OffersPage:
        payload: dict[str, Any] = {"limit": limit}
        if cursor:
            payload["cursor"] = cursor
        page = self.transport.call(address, "offers", payload, self.timeouts.page_s)
        records = page.get("records") if isinstance(page, dict) else None
        if not isinstance(records, list):
            raise BadReply("malformed sync page")
        nxt = page.get("next")
        if nxt is not None and not isinstance(nxt, str):
            raise BadReply("malformed sync cursor")
        return OffersPage(records, nxt or None)

    def feeds(self, address: str) -> FeedsPage:
        reply = self.transport.call(address, "feeds", None, self.timeouts.ledger_s)
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
        reply = self.transport.call(address, "feed", payload, self.timeouts.ledger_s)
        entries = reply.get("entries") if isinstance(reply, dict) else None
        if not isinstance(entries, list):
            raise BadReply("malformed ledger page")
        return entries

    def close(self) -> None:
        self.transport.close()
