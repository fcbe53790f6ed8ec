"""A node's life: its parts (built by ``wiring``), start, the background loops, health, stop.

Building a ``Node`` opens its files and nothing else; ``start()`` brings it to
life (load own offers, announce, publish, sync, sweep, settle bids in doubt) and
``stop()`` winds it down in the reverse order, flushing publications. Tests can
therefore build an app around a node without any background thread running,
and give it an in-memory DHT and peer transport (``tests/fakes.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.link import GrapeError
from p2p_offers.node import wiring
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.events import EventHub
from p2p_offers.node.ledger.replicator import FeedReplicator
from p2p_offers.node.ledger.store import LedgerStore
from p2p_offers.node.metrics import NodeMetrics
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.dht import Dht
from p2p_offers.node.network.gossip import GossipNet
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.intake import Intake
from p2p_offers.node.network.peers import REST_NODE_SERVICE, Peers, rest_owner_service
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.node.network.sync import Syncer
from p2p_offers.node.network.transport import PeerTransport
from p2p_offers.node.offers.maker import OfferService
from p2p_offers.node.offers.taker import Taker
from p2p_offers.node.storage.database import Database
from p2p_offers.node.storage.in_doubt import BidsInDoubt
from p2p_offers.node.storage.ledger import LedgerRows
from p2p_offers.node.storage.orders import Orders
from p2p_offers.node.storage.own_offers import OwnOffers
from p2p_offers.node.storage.pending import ManualBids
from p2p_offers.node.storage.receipts import Receipts
from p2p_offers.node.storage.refusals import Refusals
from p2p_offers.node.storage.seen import Seen
from p2p_offers.node.trading.desk import OrderDesk
from p2p_offers.node.trading.sweeper import Sweeper
from p2p_offers.node.trading.uncross import Uncrosser

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 0.25
SEEN_FLUSH_INTERVAL_S = 2.0
NEW_PEER_CHECK_S = 0.5  # between full syncs, how often peers never pulled from are looked for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    # identity
    key: SigningKey
    client_id: str
    # storage
    db: Database
    own_offers: OwnOffers
    receipts: Receipts
    refusals: Refusals
    seen: Seen
    in_doubt: BidsInDoubt
    manual_bids: ManualBids
    orders: Orders
    ledger_rows: LedgerRows
    # network
    dht: Dht
    peer_client: PeerClient
    index: OfferIndex
    intake: Intake
    peers: Peers
    gossip: GossipNet
    publisher: Publisher
    syncer: Syncer
    # offers, ledger, trading
    maker: OfferService
    taker: Taker
    ledger: LedgerStore
    replicator: FeedReplicator
    sweeper: Sweeper
    desk: OrderDesk
    uncrosser: Uncrosser
    events: EventHub
    metrics: NodeMetrics

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Callable[[], int] = now_ms,
        dht: Dht | None = None,
        transport: PeerTransport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.synced = threading.Event()
        self.edge_counts: Counter[str] = Counter()  # expected client failures at the HTTP edge
        self._stopping = threading.Event()
        self._resolve_now = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False
        wiring.build(self, dht, transport)

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for floor in self.seen.load(self.clock()):
            self.index.restore_floor(*floor)
        self.maker.load()
        self._announce()
        if self.gossiping:
            self.gossip.start()
        self.publisher.start()
        self.desk.start()
        self.replicator.start(self.config.sync_interval_s)
        self.uncrosser.start()
        self._spawn("sweeper", self._sweep_loop)
        self._spawn("sync", self._sync_loop)
        self._spawn("in-doubt", self._resolve_loop)
        log.info("node %s started on port %d", self.client_id, self.config.port)

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._resolve_now.set()
        self.events.close()
        self.dht.stop_announcing()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._started:
            self.uncrosser.stop()
            self.desk.stop()
            self.replicator.stop()
            self.publisher.stop()
            self.gossip.stop()
            self._flush_seen()
        self.peers.close()
        self.intake.close()
        self.peer_client.close()
        self.dht.close()
        self.db.close()
        log.info("node %s stopped", self.client_id)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _announce(self) -> None:
        """Announce the REST port once now (so peers syncing right away find us), then
        periodically; the Grenache RPC edge announces its own port (``http/rpc.py``)."""
        port, host = self.config.port, self.config.announce_host
        interval = self.config.announce_interval_s
        for name in (REST_NODE_SERVICE, rest_owner_service(self.client_id)):
            try:
                self.dht.announce(name, port, host)
            except GrapeError as exc:
                log.warning("announce %s failed (will retry): %s", name, exc)
            self.dht.start_announcing(name, port, host, interval=interval)

    # -- background loops ------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        """Expire offers everywhere, refresh ours at half-life, persist seen seqs."""
        last_flush = time.monotonic()
        while not self._stopping.wait(SWEEP_INTERVAL_S):
            try:
                self.index.sweep()
                self.maker.refresh_due()
                self.peers.maintain()
                if time.monotonic() - last_flush >= SEEN_FLUSH_INTERVAL_S:
                    self._flush_seen()
                    last_flush = time.monotonic()
            except Exception:
                log.exception("sweep failed")

    def _flush_seen(self) -> None:
        foreign = [f for f in self.index.take_dirty() if f[1] != self.client_id]
        if foreign:
            self.seen.save(foreign, self.clock())

    @property
    def gossiping(self) -> bool:
        return self.config.propagation == "gossip"

    def _sync_loop(self) -> None:
        """The paged sync: a full pull as the node starts, and again every ``sync_interval``
        when pushing (when gossiping, digest rounds keep the book in step after the first);
        in between, a pull from each peer that came up since (``sync_new``), so a network
        restarted all at once fills every book without waiting for an interval."""
        full = True
        while True:
            if full:
                try:
                    self.syncer.sync_once()
                except Exception:
                    log.exception("sync failed")
                self.synced.set()
            deadline = time.monotonic() + self.config.sync_interval_s
            while (left := deadline - time.monotonic()) > 0:
                if self._stopping.wait(min(left, NEW_PEER_CHECK_S)):
                    return
                try:
                    self.syncer.sync_new()
                except Exception:
                    log.exception("sync from new peers failed")
            if self._stopping.is_set():
                return
            full = not self.gossiping

    def wake_resolver(self) -> None:
        """A bid just went in doubt: its first back-off resend is due soon."""
        self._resolve_now.set()

    def _resolve_loop(self) -> None:
        """Settle bids in doubt: all at once (a restart finishes them), then each round,
        and fresh ones on their back-off in between."""
        interval = self.config.resolve_interval_s
        next_round = 0.0
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_round:
                    self.taker.resolve_in_doubt(self._stopping)
                    self.taker.resolve_pending(self._stopping)
                    next_round = time.monotonic() + interval
                else:
                    self.taker.resolve_in_doubt(self._stopping, only_due=True)
            except Exception:
                log.exception("resolving bids in doubt failed")
            due = self.taker.due()
            wait = next_round - time.monotonic()
            self._resolve_now.wait(max(0.0, min(wait, due) if due is not None else wait))
            self._resolve_now.clear()

    # -- reads for the edges --------------------------------------------------------------

    def owner(self, given: str | None) -> str | None:
        """An owner filter as given (a client_id, or ``me``: this node), or None."""
        return self.client_id if given == "me" else given

    def side_of_offer(self, offer_id: str) -> str | None:
        """The side of an offer record, ours or held in the book, if this node knows it."""
        own = self.maker.own(offer_id)
        return own.offer.side if own is not None else self.index.side_of(offer_id)

    # -- reporting -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        feeds = self.ledger.states()
        return {
            "status": "ok",
            "client_id": self.client_id,
            "port": self.config.port,
            "rpc_port": self.config.grenache_port,  # Grenache RPC (p2p_offers:node)
            "synced": self.synced.is_set(),
            "offers": {**self.index.counts(), "own_open": self.maker.open_count()},
            "peers": self.peers.known_count(),
            "announcements": self.intake.counters(),
            "publisher": {"pending": self.publisher.pending(), **self.publisher.stats},
            "sync": self.syncer.stats(),
            "propagation": self.config.propagation,
            "gossip": self.gossip.stats(),
            "bids": self.taker.stats(),
            "orders": self.desk.stats(),
            "taking": self.sweeper.stats(),
            "uncross": self.uncrosser.stats(),
            "ledger": {
                "feeds": len(feeds),
                "entries": sum(f.height for f in feeds),
                **self.replicator.stats(),
            },
            "http": {"client_failures": sum(self.edge_counts.values()), **self.edge_counts},
            "dht": {**self.dht.status(), "put_error": self.publisher.put_state()},
            "events": self.events.stats(),
        }
