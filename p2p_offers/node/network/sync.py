"""Anti-entropy: pull the open book from peers, so nothing announced while away is missed.

Announcements are best effort; this is what makes the book converge anyway. A
node pulls ``GET /peer/offers`` (paged, signed records) from every peer on
start and then every ``sync_interval``; each record goes through the same
``Intake`` as an announcement, so a lying peer can add nothing that does not
verify, and duplicates cost only a seq comparison.

Pages list open offers only, so they cannot tell us that an offer we hold
open was filled or cancelled meanwhile. The owner's own list is complete for
its offers, though: an offer we hold open that its owner no longer lists is
re-read from the DHT (by its address, verified like any record), and the
newer version, if there is one, closes it.

Between full runs, ``sync_new`` pulls from any peer this node has never pulled
from (one that was down at our start and came up since: the usual case when a
whole network restarts at once), so a node does not wait a whole interval for
the offers of a peer that started after it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from p2p_offers.node import errors
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.index import Held, OfferIndex
from p2p_offers.node.network.intake import Intake
from p2p_offers.node.network.peers import Peer, Peers
from p2p_offers.node.network.transport import TransportError
from p2p_offers.node.signals import Signal

log = logging.getLogger(__name__)

SOURCE = "sync"
MAX_PAGES_PER_PEER = 200  # per peer per run: 200,000 offers at the default page size
NEW_PEER_RETRY_S = 2.0  # a new peer whose pull failed is tried again after this


class Syncer:
    def __init__(
        self,
        peers: Peers,
        client: PeerClient,
        intake: Intake,
        index: OfferIndex,
        page_limit: int = 1000,
    ) -> None:
        self.peers = peers
        self.client = client
        self.intake = intake
        self.index = index
        self.page_limit = page_limit
        self.runs = 0
        self.last_ms: float | None = None
        self.last_records = 0
        self._lock = threading.Lock()
        self.refused = {"bad_cursor": 0, "page_cap": 0}  # pagings we cut short
        self.starting: Signal[[]] = Signal("a peer started syncing from us")
        self._pulled: set[str] = set()  # client ids pulled from in full at least once
        self._tried: dict[str, float] = {}  # new peer -> when sync_new last failed on it

    def sync_once(self) -> int:
        """Pull from every peer; returns how many records were received."""
        started = time.perf_counter()
        received = sum(self._pull_logged(peer) or 0 for peer in self.peers.nodes())
        self.runs += 1
        self.last_ms = (time.perf_counter() - started) * 1000
        self.last_records = received
        return received

    def sync_new(self) -> int:
        """Pull from the peers never pulled from yet (cheap when there are none)."""
        peers = self.peers.nodes()
        now = time.monotonic()
        with self._lock:
            fresh = [
                p
                for p in peers
                if p.client_id not in self._pulled
                and now - self._tried.get(p.client_id, -NEW_PEER_RETRY_S) >= NEW_PEER_RETRY_S
            ]
        received = 0
        for peer in fresh:
            count = self._pull_logged(peer)
            if count is None:
                with self._lock:
                    self._tried[peer.client_id] = time.monotonic()
            else:
                received += count
        return received

    def _pull_logged(self, peer: Peer) -> int | None:
        """Records pulled from ``peer``, or None if the pull failed (logged)."""
        pulled = time.perf_counter()
        try:
            count = self._pull(peer)
        except (TransportError, errors.DomainError) as exc:
            log.info("sync from %s failed: %s", peer.address, exc)
            return None
        with self._lock:
            self._pulled.add(peer.client_id)
            self._tried.pop(peer.client_id, None)
        log.debug(
            "synced %d records from %s in %.0f ms",
            count,
            peer.address,
            (time.perf_counter() - pulled) * 1000,
        )
        return count

    def _pull(self, peer: Peer) -> int:
        held_before = {s.id: s for s in self.index.open_by_owner(peer.client_id)}
        listed: set[str] = set()
        received = 0
        for records in self._pages(peer):
            self.intake.receive_many(((None, r) for r in records), SOURCE)
            listed.update(
                str(r.get("salt"))
                for r in records
                if isinstance(r, dict) and r.get("k") == peer.client_id
            )
            received += len(records)
        for offer_id, signed in held_before.items():
            if offer_id not in listed:
                self.intake.receive(signed.hash, None, SOURCE)  # ask the DHT for news
        return received

    def _pages(self, peer: Peer) -> Iterator[list[Any]]:
        """Pages of records, the next one fetched while the caller verifies this one."""
        pages: queue.Queue[list[Any] | BaseException | None] = queue.Queue(maxsize=2)
        abandoned = threading.Event()

        def hand_over(item: list[Any] | BaseException | None) -> bool:
            """Queue ``item`` for the consumer; False once it has stopped listening."""
            while not abandoned.is_set():
                try:
                    pages.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        def fetch() -> None:
            """Pages until the last one. Cursors are offer ids in increasing order: one that
            does not advance, or a peer with more than MAX_PAGES_PER_PEER pages, ends the
            run for that peer (the next run starts over)."""
            cursor: str | None = None
            try:
                for fetched in range(1, MAX_PAGES_PER_PEER + 1):
                    page = self.client.offers(peer.address, cursor, self.page_limit)
                    records, nxt = page.records, page.next
                    if not hand_over(records):
                        return
                    if not nxt or not records:
                        break
                    if cursor is not None and nxt <= cursor:
                        self._refuse("bad_cursor", peer)
                        break
                    if fetched == MAX_PAGES_PER_PEER:
                        self._refuse("page_cap", peer)
                    cursor = nxt
                hand_over(None)
            except Exception as exc:  # handed to the consumer, which raises it
                hand_over(exc)

        threading.Thread(target=fetch, name="sync-fetch", daemon=True).start()
        try:
            while (item := pages.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            abandoned.set()

    def _refuse(self, reason: str, peer: Peer) -> None:
        log.warning("sync from %s cut short: %s", peer.address, reason)
        with self._lock:
            self.refused[reason] += 1

    # -- serving others' syncs ----------------------------------------------------------

    def page(self, cursor: str | None, limit: int) -> tuple[list[Held], str | None]:
        """One page of our open book for a peer's sync; the first page of a run is news:
        the node asking may have just started and be unknown to us (``starting``), so
        announcements reach it from now on rather than after our next lookup."""
        if cursor is None:
            self.starting.emit()
        return self.index.open_page(cursor, limit)

    def stats(self) -> dict[str, object]:
        with self._lock:
            refused = dict(self.refused)
        return {
            "runs": self.runs,
            "last_ms": self.last_ms,
            "last_records": self.last_records,
            **refused,
        }
