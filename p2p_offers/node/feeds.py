"""The trade ledger on a node: our own feed, everybody else's, and the checks behind the API.

* **Our feed.** Every fill receipt we sign as a maker is appended to our feed
  (``ledger.append``) by a hook that runs inside the very SQLite transaction
  that records the fill, so a receipt a taker holds can never be missing from
  our feed, not even after SIGKILL. The head is then published as a BEP44
  record (salt ``ledger``, seq = height) through the node's ``Publisher``,
  which puts it in the DHT and pushes it to every peer, coalescing bursts.
* **Other feeds.** A head announcement (or the periodic anti-entropy round)
  tells us a feed is longer somewhere; we pull the missing entries from the
  owner or from any peer that has them (``GET /peer/ledger/<owner>``). Nothing
  from a peer is believed until ``ledger.Feed`` has verified every entry's
  signature, its link to the previous entry and the receipt it carries, so
  pulling from a third party is as safe as pulling from the owner. A feed
  that forks (two different signed entries at one height, kept as evidence)
  is refused from then on; batches that skip heights are refused and counted.
* **Reading.** ``trades`` merges every stored feed (newest first) and
  ``verify`` recomputes every chain from the stored entries and checks that
  the receipts this node holds as a taker are in their makers' feeds.

Every stored entry has been verified, so the database is the source of truth;
the in-memory ``Feed`` per foreign owner is only what new entries are checked
against.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import requests
from nacl.signing import SigningKey

from p2p_offers import ledger, records
from p2p_offers.bids import Receipt
from p2p_offers.codec import DecodeError, canonical_json, parse_canonical_json
from p2p_offers.fields import DocError, is_public_key
from p2p_offers.ledger import Feed, ForkError, LedgerEntry, LedgerError, entry_hash
from p2p_offers.link import GrapeError
from p2p_offers.node.index import APPLIED, STALE
from p2p_offers.node.peers import Peers
from p2p_offers.node.publisher import Publisher
from p2p_offers.node.store import MAKER, Store, StoredFill
from p2p_offers.records import INVALID_SIGNATURE, Record, RecordError
from p2p_offers.signing import public_hex

log = logging.getLogger(__name__)

LEDGER_SALT = b"ledger"
HEAD_ID = LEDGER_SALT.decode()  # the publisher's queue key for our head
PAGE_LIMIT = 500
PULL_DELAY_S = 0.1  # collect announcements this long before pulling: one pull per burst
MAX_PAGE_LIMIT = 2000
MAX_WANTED = 10_000  # feeds waiting for a pull; heads of further new owners are ignored

FORGED, MALFORMED, OVER_LIMIT = "forged", "malformed", "over_limit"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledger_entries (
        owner   TEXT NOT NULL,
        height  INTEGER NOT NULL,
        hash    TEXT NOT NULL,     -- entry_hash(entry), what the next entry links to
        fill_id TEXT NOT NULL,
        ts      INTEGER NOT NULL,  -- the receipt's time: /trades sorts by it
        entry   TEXT NOT NULL,     -- canonical JSON, exactly as signed and served
        PRIMARY KEY (owner, height)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS ledger_entries_fill ON ledger_entries (fill_id)",
    "CREATE INDEX IF NOT EXISTS ledger_entries_time ON ledger_entries (ts, owner, height)",
    """CREATE TABLE IF NOT EXISTS ledger_forks (
        owner   TEXT NOT NULL,
        height  INTEGER NOT NULL,
        held    TEXT NOT NULL,  -- the entry we hold ...
        offered TEXT NOT NULL,  -- ... and the other one its owner also signed
        PRIMARY KEY (owner, height)
    ) WITHOUT ROWID""",
)


# -- the head record -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A feed's head as a BEP44 record: salt ``ledger``, seq = height, v = {height, head}.

    It has the attributes the ``Publisher`` uses (``id``, ``seq``, ``hash``,
    ``record``), so our head is put and pushed like an offer version, and a
    burst of fills publishes only the newest head.
    """

    record: Record
    owner: str
    height: int
    head: str

    @property
    def id(self) -> str:
        return HEAD_ID

    @property
    def seq(self) -> int:
        return self.height

    @property
    def hash(self) -> str:
        return self.record.hash


def sign_head(key: SigningKey, height: int, head: str) -> SignedHead:
    v = canonical_json({"head": head, "height": height})
    return SignedHead(records.sign(key, v, height, LEDGER_SALT), public_hex(key), height, head)


def parse_head(record: Record) -> SignedHead:
    """Believe a head record only if it is signed, under salt ``ledger``, with seq = height.

    Raises ``RecordError`` (signature, sizes) or ``DocError`` (shape).
    """
    if not record.mutable or record.salt != LEDGER_SALT:
        raise DocError("a ledger head is a mutable record with salt 'ledger'")
    record.verify()
    try:
        doc = parse_canonical_json(record.v)
    except DecodeError as exc:
        raise DocError(str(exc)) from None
    if not isinstance(doc, dict) or set(doc) != {"head", "height"}:
        raise DocError("a ledger head is {height, head}")
    height, head = doc["height"], doc["head"]
    if type(height) is not int or height < 0 or height != record.seq:
        raise DocError("height must be a non-negative integer equal to seq")
    if not isinstance(head, str) or (len(head) != 64 if height else head != ""):
        raise DocError("head must be the head entry's sha256 hex, empty at height 0")
    assert record.k is not None
    return SignedHead(record, record.k.hex(), height, head)


# -- storage ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedState:
    owner: str
    height: int
    head: str


class LedgerStore:
    """The ledger's tables in the node's database, and the hook that writes our own feed."""

    def __init__(self, store: Store, key: SigningKey) -> None:
        self.store = store
        self.key = key
        self.me = public_hex(key)
        with store.transaction() as db:
            for statement in SCHEMA:
                db.execute(statement)
        self._listeners: list[Callable[[FeedState], None]] = []
        store.add_fill_hook(self._append_own)

    def on_own_append(self, listener: Callable[[FeedState], None]) -> None:
        """``listener(new state)`` runs after each commit that grew our feed."""
        self._listeners.append(listener)

    def _append_own(self, db: Any, fills: list[StoredFill]) -> Callable[[], None] | None:
        """Inside the fill's transaction: one entry per receipt we made, in commit order.

        The head is read from the database inside the same (exclusive)
        transaction, so concurrent commits on different offer chains still
        form one unbroken chain, and a rolled-back commit leaves no trace.
        """
        made = [f.receipt for f in fills if f.role == MAKER and f.receipt.maker == self.me]
        if not made:
            return None
        row = db.execute(
            "SELECT entry FROM ledger_entries WHERE owner = ? ORDER BY height DESC LIMIT 1",
            (self.me,),
        ).fetchone()
        head: LedgerEntry | None = json.loads(row[0]) if row else None
        for receipt in made:
            head = ledger.append(self.key, head, receipt.to_wire(), receipt.ts)
            head_hash = _insert(db, head)
        assert head is not None
        state = FeedState(self.me, head["height"], head_hash)
        return lambda: self._notify(state)

    def _notify(self, state: FeedState) -> None:
        for listener in self._listeners:
            listener(state)

    # -- reads ---------------------------------------------------------------------------

    def state(self, owner: str) -> FeedState:
        rows = self.store.query(
            "SELECT height, hash FROM ledger_entries WHERE owner = ? ORDER BY height DESC LIMIT 1",
            (owner,),
        )
        return FeedState(owner, rows[0][0], rows[0][1]) if rows else FeedState(owner, 0, "")

    def states(self) -> list[FeedState]:
        rows = self.store.query(
            "SELECT owner, MAX(height), hash FROM ledger_entries GROUP BY owner ORDER BY owner"
        )
        return [FeedState(*row) for row in rows]

    def raw_entries(self, owner: str, start: int, limit: int) -> list[str]:
        """Entries from height ``start`` on, as the canonical JSON they were signed as."""
        rows = self.store.query(
            "SELECT entry FROM ledger_entries WHERE owner = ? AND height >= ? "
            "ORDER BY height LIMIT ?",
            (owner, start, limit),
        )
        return [row[0] for row in rows]

    def entries(self, owner: str) -> list[LedgerEntry]:
        return [json.loads(e) for e in self.raw_entries(owner, 1, -1)]

    def trades(self, owner: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Receipts of every stored feed (or ``owner``'s), newest first.

        Ties in time go by owner, then newest entry first, so every node that
        holds the same feeds lists the same trades in the same order.
        """
        sql = "SELECT entry FROM ledger_entries"
        args: tuple[Any, ...] = ()
        if owner is not None:
            sql += " WHERE owner = ?"
            args = (owner,)
        sql += " ORDER BY ts DESC, owner, height DESC LIMIT ?"
        rows = self.store.query(sql, (*args, -1 if limit is None else limit))
        return [json.loads(row[0])["receipt"] for row in rows]

    def by_fill(self, fill_id: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self.store.query(
            "SELECT owner, entry FROM ledger_entries WHERE fill_id = ?", (fill_id,)
        )
        return [(owner, json.loads(entry)["receipt"]) for owner, entry in rows]

    def forked(self) -> set[str]:
        return {row[0] for row in self.store.query("SELECT DISTINCT owner FROM ledger_forks")}

    # -- writes (verified foreign entries) -------------------------------------------------

    def add(self, entries: Iterable[LedgerEntry]) -> None:
        with self.store.transaction() as db:
            for entry in entries:
                _insert(db, entry)

    def record_fork(self, fork: ForkError) -> None:
        with self.store.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO ledger_forks (owner, height, held, offered) "
                "VALUES (?, ?, ?, ?)",
                (
                    fork.held["owner"],
                    fork.held["height"],
                    json.dumps(fork.held),
                    json.dumps(fork.offered),
                ),
            )

    # -- verification --------------------------------------------------------------------

    def verify(self, fills: Iterable[StoredFill]) -> dict[str, Any]:
        """Recompute every feed from the stored entries; check our receipts against them.

        A feed is ok if its entries form one chain that ``ledger.Feed`` accepts
        and its owner was never caught forking. Every receipt we hold as a
        taker must be in its maker's feed exactly as we were given it, and
        every receipt we gave as a maker in ours: ``missing`` ones may still be
        on their way (or were withheld), ``mismatched`` ones are lies.
        """
        forked = self.forked()
        feeds = []
        for state in self.states():
            feed = Feed(state.owner, receipt_check)
            try:
                feed.extend(self.entries(state.owner))
                ok = feed.height == state.height and feed.head_hash == state.head
            except LedgerError as exc:
                log.warning("stored feed %s does not verify: %s", state.owner, exc)
                ok = False
            ok = ok and state.owner not in forked
            feeds.append(
                {"owner": state.owner, "height": state.height, "head": state.head, "ok": ok}
            )
        missing, mismatched, checked = [], [], 0
        for fill in fills:
            checked += 1
            receipt = fill.receipt.to_wire()
            maker = receipt["maker"]
            found = [r for owner, r in self.by_fill(receipt["fill_id"]) if owner == maker]
            if not found:
                missing.append(receipt["fill_id"])
            elif found[0] != receipt:
                mismatched.append(receipt["fill_id"])
        ok = all(f["ok"] for f in feeds) and not missing and not mismatched
        return {
            "ok": ok,
            "feeds": feeds,
            "receipts": {"checked": checked, "missing": missing, "mismatched": mismatched},
        }


def _insert(db: Any, entry: LedgerEntry) -> str:
    """Store one entry and return its hash.

    The hash is ``ledger.entry_hash`` computed from the very text stored, so the
    entry is canonicalized once instead of once for the hash and again for the
    text (this runs for every entry every node replicates).
    """
    receipt = entry["receipt"]
    text = canonical_json(entry)
    hash_ = hashlib.sha256(text).hexdigest()
    db.execute(
        "INSERT INTO ledger_entries (owner, height, hash, fill_id, ts, entry) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (entry["owner"], entry["height"], hash_, receipt["fill_id"], receipt["ts"], text.decode()),
    )
    return hash_


def receipt_check(receipt: dict[str, Any]) -> None:
    """What ``Feed`` checks a receipt with: a well-formed ``Receipt`` signed by its maker.

    Stricter than the ledger's default (signature only): a node renders these
    as trades, so every field must be one a real receipt can have.
    """
    try:
        Receipt.from_wire(receipt).verify()
    except ValueError as exc:  # DocError or SignatureError
        raise LedgerError(f"receipt: {exc}") from None


# -- replication -----------------------------------------------------------------------------


class FeedReplicator:
    """Pulls other makers' feeds to this node, verifies them, stores them; publishes ours.

    Head announcements are handled on the caller's thread only as far as
    verifying the record; pulling happens on one background worker, coalesced
    per owner, so a burst of heads from a busy maker costs one pull.
    """

    def __init__(
        self,
        ledger_store: LedgerStore,
        key: SigningKey,
        peers: Peers,
        session: requests.Session,
        publisher: Publisher,
        timeout_s: float = 5.0,
    ) -> None:
        self.ledger = ledger_store
        self.key = key
        self.me = public_hex(key)
        self.peers = peers
        self.session = session
        self.publisher = publisher
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._feeds: dict[str, Feed] = {}
        self._forked: set[str] = ledger_store.forked()
        self._wanted: dict[str, SignedHead] = {}  # owner -> newest head announced, not yet held
        self._work: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._owner_locks: dict[str, threading.Lock] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.counts: Counter[str] = Counter()
        ledger_store.on_own_append(self.publish_head)

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
        self.publisher.publish([head])  # type: ignore[list-item]  # duck-typed like an offer
        return head

    # -- announcements ---------------------------------------------------------------------

    def receive_head(self, record: Record) -> str:
        """The intake's handler for salt ``ledger``: verify, and queue a pull if it is news."""
        try:
            head = parse_head(record)
        except RecordError as exc:
            return FORGED if exc.code == INVALID_SIGNATURE else MALFORMED
        except DocError:
            return MALFORMED
        if head.owner == self.me or head.owner in self._forked:
            return STALE
        with self._lock:
            held = self._feeds[head.owner].height if head.owner in self._feeds else None
            if held is None:
                held = self.ledger.state(head.owner).height
            wanted = self._wanted.get(head.owner)
            if head.height <= held or (wanted is not None and wanted.height >= head.height):
                return STALE
            if wanted is None and len(self._wanted) >= MAX_WANTED:
                # Signed heads cost nothing to mint under fresh keys; the periodic
                # sync still catches up real feeds whose head was ignored here.
                # (The intake counts the outcome, per source, in /health.)
                return OVER_LIMIT
            self._wanted[head.owner] = head
        if wanted is None:  # else it is queued already, and will pull up to this head
            self._work.put(head.owner)
        return APPLIED

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
        for url in self._sources(owner):
            if held >= height or owner in self._forked:
                break
            held = self._pull_from(url, owner, height)
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
        yield from (f"http://{a}" for a in addresses)
        yield from (p.url for p in self.peers.nodes() if p.client_id != owner)

    def _pull_from(self, url: str, owner: str, height: int) -> int:
        """Page entries from one source until we hold ``height`` or it has nothing more.

        Each page starts at the entry we already hold at our height: if the
        source's copy of it differs and its owner signed it, that is a fork,
        proven on the spot instead of showing up as an unlinkable next entry.
        """
        held = self.height(owner)
        while held < height:
            try:
                resp = self.session.get(
                    f"{url}/peer/ledger/{owner}",
                    params={"from": max(held, 1), "limit": PAGE_LIMIT},
                    timeout=self.timeout_s,
                )
                entries = resp.json().get("entries") if resp.ok else None
            except (requests.RequestException, ValueError, AttributeError) as exc:
                log.info("ledger pull of %s from %s failed: %s", owner, url, exc)
                return held
            if not isinstance(entries, list) or not entries:
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
        batch. Nothing unverified is ever stored.
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
            except LedgerError as exc:
                log.info("refused entries of %s: %s", owner, exc)
                self._count("gaps" if "expected height" in str(exc) else "invalid")
                return 0
            if added:
                try:
                    self.ledger.add(feed.entries_from(before + 1))
                except Exception:
                    with self._lock:  # memory ran ahead of the disk: reload next time
                        self._feeds.pop(owner, None)
                    raise
                self._count("pulled", added)
            return added

    def _feed(self, owner: str) -> Feed:
        """The verified in-memory chain of ``owner``, loaded (and re-verified) on first use."""
        with self._lock:
            feed = self._feeds.get(owner)
        if feed is None:
            feed = Feed(owner, receipt_check)
            feed.extend(self.ledger.entries(owner))
            with self._lock:
                feed = self._feeds.setdefault(owner, feed)
        return feed

    def _owner_lock(self, owner: str) -> threading.Lock:
        with self._lock:
            return self._owner_locks.setdefault(owner, threading.Lock())

    # -- anti-entropy ----------------------------------------------------------------------

    def _sync_loop(self, interval_s: float) -> None:
        """At start (a restarted node catches up at once), then every ``interval_s``."""
        while True:
            try:
                self.sync_once()
            except Exception:
                log.exception("ledger sync failed")
            if self._stopping.wait(interval_s):
                return

    def sync_once(self) -> int:
        """Ask every peer which feeds it holds and pull whatever is longer there."""
        pulled = 0
        for peer in self.peers.nodes():
            try:
                resp = self.session.get(f"{peer.url}/peer/ledger", timeout=self.timeout_s)
                feeds = resp.json().get("feeds") if resp.ok else None
            except (requests.RequestException, ValueError, AttributeError) as exc:
                log.info("ledger sync from %s failed: %s", peer.address, exc)
                continue
            for item in feeds if isinstance(feeds, list) else []:
                owner = item.get("owner") if isinstance(item, dict) else None
                height = item.get("height") if isinstance(item, dict) else None
                if not is_public_key(owner) or type(height) is not int or owner == self.me:
                    continue
                before = self.height(owner)
                if height > before and owner not in self._forked:
                    # that peer has it, so try it first; the others if it fails
                    after = self._pull_from(peer.url, owner, height)
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
