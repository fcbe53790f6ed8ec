"""Replicating other makers' feeds to this node, and publishing ours.

A head announcement (or the periodic anti-entropy round) tells us a feed is
longer somewhere; we pull the missing entries from the owner or from any peer
that has them. Nothing from a peer is believed until ``ledger.Feed`` has
verified every entry's link to the previous entry and the receipt it carries,
and the owner's signature on the batch's last entry, which vouches for every
hash below it, so pulling from a third party is as safe as pulling from the
owner. A feed that forks (two different signed entries at one height, kept
as evidence) is refused from then on; batches that skip heights are refused
and counted. The in-memory ``Feed`` per foreign owner is only what new entries
are checked against; the database holds what was verified.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.fields import DocError, is_public_key
from p2p_offers.ledger import Feed, ForkError, GapError, LedgerEntry, LedgerError, entry_hash
from p2p_offers.link import GrapeError
from p2p_offers.node import errors
from p2p_offers.node.ledger.head import SignedHead, parse_head, sign_head
from p2p_offers.node.ledger.store import receipt_shape
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.outcomes import Outcome
from p2p_offers.node.network.peers import Peer, Peers, Rotation
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.node.network.transport import TransportError
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.ledger import FeedState, LedgerRows
from p2p_offers.records import INVALID_SIGNATURE, Record, RecordError
from p2p_offers.signing import public_hex

log = logging.getLogger(__name__)

PAGE_LIMIT = 500
MAX_PAGE_LIMIT = 2000
PULL_DELAY_S = 0.1  # collect announcements this long before pulling: one pull per burst
MAX_WANTED = 10_000  # feeds waiting for a pull; heads of further new owners are ignored
# Anti-entropy asks this many peers per round, not all: N of them asking all N was N²
# requests per interval (490/s at 50 hosts, half of an idle node's CPU; docs/testbed.md).
# Heads are gossiped, so the rounds only repair; and after a heal, 3 of a node's 5 peers
# in a 3|3 split always include one from the far side.
FEEDS_ASKED_PER_ROUND = 3


class FeedReplicator:
    """Pulls other makers' feeds to this node, verifies them, stores them; publishes ours.

    Head announcements are handled on the caller's thread only as far as
    verifying the record; pulling happens on one background worker, coalesced
    per owner, so a burst of heads from a busy maker costs one pull.
    """

    def __init__(
        self,
        rows: LedgerRows,
        key: SigningKey,
        peers: Peers,
        client: PeerClient,
        publisher: Publisher,
    ) -> None:
        self.ledger = rows
        self.key = key
        self.me = public_hex(key)
        self.peers = peers
        self.client = client
        self.publisher = publisher
        self._lock = threading.Lock()
        self._feeds: dict[str, Feed] = {}
        self._forked: set[str] = rows.forked()
        self._wanted: dict[str, SignedHead] = {}  # owner -> newest head announced, not yet held
        self._work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._owner_locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()
        # another maker's entries, once verified and stored (what the event stream tells)
        self.pulled: Signal[[list[LedgerEntry]]] = Signal("foreign entries stored")
        self._rotation = Rotation(FEEDS_ASKED_PER_ROUND)

    # -- life cycle ----------------------------------------------------------------------

    def start(self, sync_interval_s: float) -> None:
        state = self.ledger.state(self.me)
        if state.height:  # (re)publish our head once at start: peers may have missed it
            self.publish_head(state)
        loops = [("ledger-pull", self._pull_loop)]
        loops.append(("ledger-sync", lambda: self._sync_loop(sync_interval_s)))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    # -- our head --------------------------------------------------------------------------

    def publish_head(self, state: FeedState) -> SignedHead:
        """Hand our new head to the publisher, from the thread that committed the fills.

        That thread queues the fill's offer versions right after this, so the
        head usually rides in the same push to each peer as the records, and
        the publisher keeps only the newest head of a burst.
        """
        head = sign_head(self.key, state.height, state.head)
        self.publisher.publish([head])
        return head

    # -- announcements ---------------------------------------------------------------------

    def receive_head(self, record: Record) -> Outcome:
        """The intake's handler for salt ``ledger``: verify, and queue a pull if it is news."""
        try:
            head = parse_head(record)
        except RecordError as exc:
            return Outcome.FORGED if exc.code == INVALID_SIGNATURE else Outcome.MALFORMED
        except DocError:
            return Outcome.MALFORMED
        if head.owner == self.me or head.owner in self._forked:
            return Outcome.STALE
        with self._lock:
            held = self._feeds[head.owner].height if head.owner in self._feeds else None
            if held is None:
                held = self.ledger.state(head.owner).height
            wanted = self._wanted.get(head.owner)
            if head.height <= held or (wanted is not None and wanted.height >= head.height):
                return Outcome.STALE
            if wanted is None and len(self._wanted) >= MAX_WANTED:
                # Signed heads cost nothing to mint under fresh keys; the periodic
                # sync still catches up real feeds whose head was ignored here.
                # (The intake counts the outcome, per source, in /health.)
                return Outcome.OVER_LIMIT
            self._wanted[head.owner] = head
        if wanted is None:  # else it is queued already, and will pull up to this head
            self._work.put(head.owner)
        return Outcome.APPLIED

    def _pull_loop(self) -> None:
        """Pull announced feeds; a short pause first lets a burst of heads become one pull."""
        while (owner := self._work.get()) is not None:
            if self._stopping.wait(PULL_DELAY_S):
                return
            with self._lock:
                head = self._wanted.pop(owner, None)
            if head is None:
                continue  # coalesced: an earlier wake-up already pulled it
            try:
                self.catch_up(owner, head.height, head.head)
            except Exception:
                log.exception("pulling the feed of %s failed", owner)

    # -- pulling ---------------------------------------------------------------------------

    def catch_up(self, owner: str, height: int, head: str | None = None) -> int:
        """Pull ``owner``'s feed up to ``height`` from the owner, else from any peer.

        Returns the height held afterwards. ``head`` (from a signed head
        record) must then match our entry at that height, or the owner signed
        two histories.
        """
        held = self.height(owner)
        for address in self._sources(owner):
            if held >= height or owner in self._forked:
                break
            held = self._pull_from(address, owner, height)
        if head is not None and held >= height and owner not in self._forked:
            stored = self.ledger.raw_entries(owner, height, 1)
            if stored and entry_hash(json.loads(stored[0])) != head:
                self._count("head_mismatch")
        return held

    def _sources(self, owner: str) -> Iterable[str]:
        try:
            addresses = self.peers.owner(owner)
        except GrapeError:
            addresses = []
        yield from addresses
        yield from (p.address for p in self.peers.nodes() if p.client_id != owner)

    def _pull_from(self, address: str, owner: str, height: int) -> int:
        """Page entries from one source until we hold ``height`` or it has nothing more.

        Each page starts at the entry we already hold at our height: if the
        source's copy of it differs and its owner signed it, that is a fork,
        proven on the spot instead of showing up as an unlinkable next entry.
        """
        held = self.height(owner)
        while held < height:
            try:
                entries = self.client.feed(address, owner, max(held, 1), PAGE_LIMIT)
            except (TransportError, errors.DomainError) as exc:
                log.info("ledger pull of %s from %s failed: %s", owner, address, exc)
                return held
            if not entries:
                return held
            if self.accept(owner, entries) == 0:
                return held
            held = self.height(owner)
        return held

    def height(self, owner: str) -> int:
        with self._lock:
            feed = self._feeds.get(owner)
        return feed.height if feed is not None else self.ledger.state(owner).height

    def accept(self, owner: str, entries: list[Any]) -> int:
        """Verify ``entries`` as a continuation of ``owner``'s feed and store the new ones.

        Returns how many were new. A fork is recorded (both entries kept) and
        the feed refused from then on; a gap or an invalid entry refuses the
        batch. Nothing the owner's signature does not vouch for is ever stored.
        """
        if not entries or owner == self.me or not is_public_key(owner) or owner in self._forked:
            return 0
        with self._owner_lock(owner):
            feed = self._feed(owner)
            before = feed.height
            first = entries[0].get("height") if isinstance(entries[0], dict) else None
            if type(first) is int and first > before + 1:
                self._count("gaps")
                return 0
            try:
                added = feed.extend(entries)
            except ForkError as fork:
                log.warning("feed %s forks at height %d", owner, fork.held["height"])
                self.ledger.record_fork(fork)
                self._forked.add(owner)
                self._count("forks")
                return 0
            except GapError as exc:
                log.info("refused entries of %s: %s", owner, exc)
                self._count("gaps")
                return 0
            except LedgerError as exc:
                log.info("refused entries of %s: %s", owner, exc)
                self._count("invalid")
                return 0
            if added:
                new = feed.entries_from(before + 1)
                try:
                    self.ledger.add(new)
                except Exception:
                    with self._lock:  # memory ran ahead of the disk: reload next time
                        self._feeds.pop(owner, None)
                    raise
                self._count("pulled", added)
                self.pulled.emit(list(new))
            return added

    def _feed(self, owner: str) -> Feed:
        """The verified in-memory chain of ``owner``, loaded (and re-verified) on first use.

        Verified as replication verifies (``ledger.Feed``, ``every_signature=False``): its
        hashes, and its head's signature.
        """
        with self._lock:
            feed = self._feeds.get(owner)
        if feed is None:
            feed = Feed(owner, receipt_shape, every_signature=False)
            feed.extend(self.ledger.entries(owner))
            with self._lock:
                feed = self._feeds.setdefault(owner, feed)
        return feed

    def _owner_lock(self, owner: str) -> threading.Lock:
        with self._lock:
            return self._owner_locks.setdefault(owner, threading.Lock())

    # -- anti-entropy ----------------------------------------------------------------------

    def _sync_loop(self, interval_s: float) -> None:
        """Every peer at start (a restarted node catches up at once), then every
        ``interval_s`` the next few of a rotation through them."""
        peers: list[Peer] | None = None  # None: all of them
        while True:
            try:
                self.sync_once(peers)
            except Exception:
                log.exception("ledger sync failed")
            if self._stopping.wait(interval_s):
                return
            peers = self._rotation.take(self.peers.nodes())

    def sync_once(self, peers: list[Peer] | None = None) -> int:
        """Ask ``peers`` (default: every peer) which feeds they hold and pull whatever is
        longer there."""
        pulled = 0
        for peer in self.peers.nodes() if peers is None else peers:
            try:
                page = self.client.feeds(peer.address)
            except (TransportError, errors.DomainError) as exc:
                log.info("ledger sync from %s failed: %s", peer.address, exc)
                continue
            for owner, height in page.feeds:
                if owner == self.me:
                    continue
                before = self.height(owner)
                if height > before and owner not in self._forked:
                    # that peer has it, so try it first; the others if it fails
                    after = self._pull_from(peer.address, owner, height)
                    if after < height:
                        after = self.catch_up(owner, height)
                    pulled += after - before
        return pulled

    # -- reporting -------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self.counts)
        return {
            "pulled": counts.get("pulled", 0),
            "forks": counts.get("forks", 0),
            "gaps": counts.get("gaps", 0),
            "invalid": counts.get("invalid", 0),
            "head_mismatch": counts.get("head_mismatch", 0),
            "forked_feeds": len(self._forked),
        }
