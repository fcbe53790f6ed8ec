"""The node's durable state in SQLite: its own offers and every version of them, receipts.

What must survive a crash is what the node has promised: every version it
signed (so a restarted node republishes them and never reuses a seq) and every
receipt it gave or got (so a fill acknowledged to a taker is never lost). Each
state change is one transaction, committed with ``synchronous=FULL`` before the
caller acknowledges anything. The rest of the node's view (other owners'
offers) is rebuilt from peers after a restart and is not stored here, except
the last seq seen per foreign record, so an old version replayed to a freshly
restarted node is still recognised as old.

There is one connection, guarded by a lock: writes are serialized anyway, and
the few reads (history, receipts) are cheap point lookups.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from p2p_offers.bids import Bid, Receipt
from p2p_offers.offers import OPEN, SignedOffer
from p2p_offers.records import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS own_offers (
    id            TEXT PRIMARY KEY,
    root          TEXT NOT NULL,     -- the chain: the original offer's id, kept by remainders
    seq           INTEGER NOT NULL,  -- newest version
    status        TEXT NOT NULL,
    ttl_ms        INTEGER NOT NULL,  -- lifetime granted at each refresh
    published_seq INTEGER NOT NULL DEFAULT 0  -- newest version known to be in the DHT
);
CREATE INDEX IF NOT EXISTS own_offers_status ON own_offers (status);
CREATE TABLE IF NOT EXISTS own_versions (
    id     TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    record TEXT NOT NULL,  -- Grenache JSON of the signed record
    PRIMARY KEY (id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS receipts (
    bid_id   TEXT NOT NULL,
    role     TEXT NOT NULL,  -- 'maker' (we filled) or 'taker' (we bid)
    fill_id  TEXT NOT NULL,
    offer_id TEXT NOT NULL,
    bid      TEXT NOT NULL,
    receipt  TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    PRIMARY KEY (bid_id, role)
);
CREATE TABLE IF NOT EXISTS seen (
    id      TEXT PRIMARY KEY,  -- foreign offer id
    owner   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
"""

MAKER, TAKER = "maker", "taker"


@dataclass(frozen=True, slots=True)
class OwnVersion:
    """One version of one of our offers, with what the node needs to keep managing it."""

    signed: SignedOffer
    root: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class OwnRow:
    latest: OwnVersion
    published_seq: int


@dataclass(frozen=True, slots=True)
class StoredFill:
    bid: Bid
    receipt: Receipt
    role: str


FillHook = Callable[[sqlite3.Connection, list[StoredFill]], Callable[[], None] | None]


class DuplicateBid(Exception):
    """The bid id is already recorded (in this role): the caller answers from the record."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._fill_hooks: list[FillHook] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- for modules that keep their own tables in this database (ledger, orders) --------

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One durable write transaction on the node's database."""
        return self._tx()

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._query(sql, args)

    def add_fill_hook(self, hook: FillHook) -> None:
        """Run ``hook(db, fills)`` inside every ``save`` that records fills.

        The ledger appends its entries there, so a receipt is never durable
        without its entry. What the hook returns (if anything) runs once the
        transaction has committed.
        """
        self._fill_hooks.append(hook)

    # -- own offers --------------------------------------------------------------------------

    def save(self, versions: Iterable[OwnVersion], fills: Iterable[StoredFill] = ()) -> None:
        """One transaction, durable on return: new versions and the receipts of fills.

        Raises ``DuplicateBid`` (and changes nothing) if a fill's bid is already recorded.
        """
        fills = list(fills)
        after: list[Callable[[], None]] = []
        try:
            with self._tx() as db:
                for v in versions:
                    db.execute(
                        "INSERT INTO own_offers (id, root, seq, status, ttl_ms) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                        "seq = excluded.seq, status = excluded.status, ttl_ms = excluded.ttl_ms",
                        (v.signed.id, v.root, v.signed.seq, v.signed.offer.status, v.ttl_ms),
                    )
                    db.execute(
                        "INSERT INTO own_versions (id, seq, record) VALUES (?, ?, ?)",
                        (v.signed.id, v.signed.seq, json.dumps(v.signed.record.to_json())),
                    )
                for fill in fills:
                    self._insert_fill(db, fill)
                if fills:
                    after = [a for hook in self._fill_hooks if (a := hook(db, fills))]
        except sqlite3.IntegrityError as exc:
            if "receipts" in str(exc):
                raise DuplicateBid(str(exc)) from None
            raise
        for action in after:
            action()

    def own(self, offer_id: str) -> OwnRow | None:
        rows = self._query(
            "SELECT o.root, o.ttl_ms, o.published_seq, v.record FROM own_offers o "
            "JOIN own_versions v ON v.id = o.id AND v.seq = o.seq WHERE o.id = ?",
            (offer_id,),
        )
        return _own_row(rows[0]) if rows else None

    def own_open(self) -> list[OwnRow]:
        """Every chain's open head: what a restarted node manages and republishes."""
        rows = self._query(
            "SELECT o.root, o.ttl_ms, o.published_seq, v.record FROM own_offers o "
            "JOIN own_versions v ON v.id = o.id AND v.seq = o.seq WHERE o.status = ?",
            (OPEN,),
        )
        return [_own_row(r) for r in rows]

    def unpublished(self) -> list[OwnRow]:
        rows = self._query(
            "SELECT o.root, o.ttl_ms, o.published_seq, v.record FROM own_offers o "
            "JOIN own_versions v ON v.id = o.id AND v.seq = o.seq WHERE o.published_seq < o.seq"
        )
        return [_own_row(r) for r in rows]

    def history(self, offer_id: str) -> list[SignedOffer]:
        rows = self._query("SELECT record FROM own_versions WHERE id = ? ORDER BY seq", (offer_id,))
        return [_signed(r[0]) for r in rows]

    def mark_published(self, items: Iterable[tuple[str, int]]) -> None:
        items = list(items)
        if not items:
            return
        with self._tx() as db:
            db.executemany(
                "UPDATE own_offers SET published_seq = MAX(published_seq, ?) WHERE id = ?",
                [(seq, offer_id) for offer_id, seq in items],
            )

    # -- receipts ----------------------------------------------------------------------------

    def save_fill(self, fill: StoredFill) -> None:
        """The taker's copy of a receipt; a duplicate (a retried bid) is a no-op."""
        try:
            with self._tx() as db:
                self._insert_fill(db, fill)
        except sqlite3.IntegrityError:
            pass

    @staticmethod
    def _insert_fill(db: sqlite3.Connection, fill: StoredFill) -> None:
        db.execute(
            "INSERT INTO receipts (bid_id, role, fill_id, offer_id, bid, receipt, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                fill.bid.bid_id,
                fill.role,
                fill.receipt.fill_id,
                fill.receipt.offer_id,
                json.dumps(fill.bid.to_wire()),
                json.dumps(fill.receipt.to_wire()),
                fill.receipt.ts,
            ),
        )

    def fill(self, bid_id: str, role: str) -> StoredFill | None:
        rows = self._query(
            "SELECT bid, receipt, role FROM receipts WHERE bid_id = ? AND role = ?", (bid_id, role)
        )
        return _fill_row(rows[0]) if rows else None

    def fills(self, role: str | None = None) -> list[StoredFill]:
        if role is None:
            rows = self._query("SELECT bid, receipt, role FROM receipts ORDER BY ts, fill_id")
        else:
            rows = self._query(
                "SELECT bid, receipt, role FROM receipts WHERE role = ? ORDER BY ts, fill_id",
                (role,),
            )
        return [_fill_row(r) for r in rows]

    # -- foreign records -----------------------------------------------------------------------

    def save_seen(self, items: Iterable[tuple[str, str, int, int]], now_ms: int) -> None:
        """Remember (id, owner, seq, expires) of foreign records; forget expired ones."""
        with self._tx() as db:
            db.executemany(
                "INSERT INTO seen (id, owner, seq, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, seq = excluded.seq, "
                "expires = excluded.expires WHERE excluded.seq > seen.seq",
                list(items),
            )
            db.execute("DELETE FROM seen WHERE expires <= ?", (now_ms,))

    def load_seen(self, now_ms: int) -> list[tuple[str, str, int, int]]:
        return [
            (r[0], r[1], r[2], r[3])
            for r in self._query(
                "SELECT id, owner, seq, expires FROM seen WHERE expires > ?", (now_ms,)
            )
        ]


def _signed(record_json: str) -> SignedOffer:
    # Our own disk: written by us after signing, so not verified again.
    return SignedOffer.from_record(Record.from_json(json.loads(record_json)), verify=False)


def _own_row(row: tuple) -> OwnRow:
    root, ttl_ms, published_seq, record_json = row
    return OwnRow(OwnVersion(_signed(record_json), root, ttl_ms), published_seq)


def _fill_row(row: tuple) -> StoredFill:
    bid, receipt, role = row
    return StoredFill(Bid.from_wire(json.loads(bid)), Receipt.from_wire(json.loads(receipt)), role)
