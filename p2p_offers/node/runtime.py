"""The composition root: one ``Node`` wires store, index, DHT link, peers and services.

Building a ``Node`` opens its files and nothing else; ``start()`` brings it to
life (load own offers, announce, publish, sync, sweep, settle bids in doubt) and
``stop()`` winds it down in the reverse order, flushing publications. Tests can
therefore build an app around a node without any background thread running.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from p2p_offers.link import GrapeError, Link
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.exchange import Exchange
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.intake import Intake
from p2p_offers.node.peers import NODE_SERVICE, Peers, make_session, owner_service
from p2p_offers.node.publisher import Publisher
from p2p_offers.node.service import OfferService
from p2p_offers.node.store import Store
from p2p_offers.node.sync import Syncer
from p2p_offers.node.taker import Taker
from p2p_offers.signing import load_or_create_key, public_hex

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 0.25
SEEN_FLUSH_INTERVAL_S = 2.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    def __init__(
        self, config: NodeConfig, *, clock: Callable[[], int] = now_ms, link: Link | None = None
    ) -> None:
        self.config = config
        self.clock = clock
        self.key = load_or_create_key(config.data_dir / "key")
        self.client_id = public_hex(self.key)
        self.store = Store(config.data_dir / "node.sqlite3")
        self.link = link or Link(config.grape)
        self.session = make_session()
        self.index = OfferIndex(clock)
        self.intake = Intake(self.index, self.link, self.client_id, clock)
        self.peers = Peers(self.link, self.client_id, self.session)
        self.publisher = Publisher(self.link, self.peers, self.session, self.store.mark_published)
        self.service = OfferService(
            self.key, self.store, self.index, self.publisher, clock, config.offer_ttl_s * 1000
        )
        self.taker = Taker(self.key, self.index, self.peers, self.session, self.store, clock)
        self.syncer = Syncer(self.peers, self.session, self.intake, self.index)
        self.exchange = Exchange(
            config=config,
            key=self.key,
            store=self.store,
            index=self.index,
            intake=self.intake,
            peers=self.peers,
            publisher=self.publisher,
            service=self.service,
            taker=self.taker,
            session=self.session,
            clock=clock,
        )
        self.synced = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        now = self.clock()
        for floor in self.store.load_seen(now):
            self.index.restore_floor(*floor)
        self.service.load()
        self._announce()
        self.publisher.start()
        self.exchange.start()
        self._spawn("sweeper", self._sweep_loop)
        self._spawn("sync", self._sync_loop)
        self._spawn("in-doubt", self._resolve_loop)
        log.info("node %s started on port %d", self.client_id, self.config.port)

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.link.stop_announcing()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._started:
            self.exchange.stop()
            self.publisher.stop()
            self._flush_seen()
        self.peers.close()
        self.intake.close()
        self.link.close()
        self.store.close()
        log.info("node %s stopped", self.client_id)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _announce(self) -> None:
        """Announce once now (so peers syncing right away find us), then periodically."""
        port, host = self.config.port, self.config.announce_host
        interval = self.config.announce_interval_s
        for name in (NODE_SERVICE, owner_service(self.client_id)):
            try:
                self.link.announce(name, port, host)
            except GrapeError as exc:
                log.warning("announce %s failed (will retry): %s", name, exc)
            self.link.start_announcing(name, port, host, interval=interval)

    # -- background loops ------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        """Expire offers everywhere, refresh ours at half-life, persist seen seqs."""
        last_flush = time.monotonic()
        while not self._stopping.wait(SWEEP_INTERVAL_S):
            try:
                self.index.sweep()
                self.service.refresh_due()
                self.peers.maintain()
                if time.monotonic() - last_flush >= SEEN_FLUSH_INTERVAL_S:
                    self._flush_seen()
                    last_flush = time.monotonic()
            except Exception:
                log.exception("sweep failed")

    def _flush_seen(self) -> None:
        foreign = [f for f in self.index.take_dirty() if f[1] != self.client_id]
        if foreign:
            self.store.save_seen(foreign, self.clock())

    def _sync_loop(self) -> None:
        while True:
            try:
                self.syncer.sync_once()
            except Exception:
                log.exception("sync failed")
            self.synced.set()
            if self._stopping.wait(self.config.sync_interval_s):
                return

    def _resolve_loop(self) -> None:
        """Settle bids in doubt: at once (a restart finishes them), then periodically."""
        while True:
            try:
                self.taker.resolve_in_doubt(self._stopping)
            except Exception:
                log.exception("resolving bids in doubt failed")
            if self._stopping.wait(self.config.resolve_interval_s):
                return

    # -- reporting -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "client_id": self.client_id,
            "port": self.config.port,
            "synced": self.synced.is_set(),
            "offers": {**self.index.counts(), "own_open": self.service.open_count()},
            "peers": self.peers.known_count(),
            "announcements": self.intake.counters(),
            "publisher": {"pending": self.publisher.pending(), **self.publisher.stats},
            "sync": self.syncer.stats(),
            "bids": self.taker.stats(),
            **self.exchange.health(),
        }
