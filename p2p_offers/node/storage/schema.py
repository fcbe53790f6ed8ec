"""The database's tables, their version (``PRAGMA user_version``) and the migrations to it.

Version 0 is the unversioned file written before the schema had a number:
the same tables as now except ``orders``, which held each order as one JSON
document (searched with ``instr``). Version 1 keeps an order's scalar fields in
columns, its fills and its bids in doubt in tables of their own, all indexed.
Version 2 adds ``refused_bids`` (the owner's final refusals, so a replayed bid
gets the refusal it got before and never a fill), and links a taker fill made
for one of our offers (uncrossing) to that offer (``for_offer`` on receipts
and bids in doubt), with the indexes that read an offer's fills. Version 3
adds ``manual_bids``: bids on manual offers, on both sides (the owner's pending
bids to accept or reject, and the taker's bids waiting for that decision).
Version 4 adds ``envelope_marks``: the last gossip envelope time accepted per
sender, so that replay protection survives a restart. Version 5 adds
``own_offers.expires`` (the newest version's expiry, indexed), so that a restarted
node finds its recently closed offers without reading every record it ever signed.

A fresh file is created at the current version; an older one is migrated in
one transaction, so a crash mid-way leaves it as it was.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

VERSION = 5

TABLES = """
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
CREATE TABLE IF NOT EXISTS bids_in_doubt (
    bid_id  TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    bid     TEXT NOT NULL  -- Bid.to_wire(): the signed bid, to send again as it is
);
CREATE TABLE IF NOT EXISTS ledger_entries (
    owner   TEXT NOT NULL,
    height  INTEGER NOT NULL,
    hash    TEXT NOT NULL,     -- entry_hash(entry), what the next entry links to
    fill_id TEXT NOT NULL,
    ts      INTEGER NOT NULL,  -- the receipt's time: /trades sorts by it
    entry   TEXT NOT NULL,     -- canonical JSON, exactly as signed and served
    PRIMARY KEY (owner, height)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_entries_fill ON ledger_entries (fill_id);
CREATE INDEX IF NOT EXISTS ledger_entries_time ON ledger_entries (ts, owner, height);
CREATE TABLE IF NOT EXISTS ledger_forks (
    owner   TEXT NOT NULL,
    height  INTEGER NOT NULL,
    held    TEXT NOT NULL,  -- the entry we hold ...
    offered TEXT NOT NULL,  -- ... and the other one its owner also signed
    PRIMARY KEY (owner, height)
) WITHOUT ROWID;
"""

V2 = """
ALTER TABLE receipts ADD COLUMN for_offer TEXT;  -- the own offer a taker fill was made for
ALTER TABLE bids_in_doubt ADD COLUMN for_offer TEXT;
ALTER TABLE receipts ADD COLUMN side TEXT;       -- our side in the trade (buy/sell BTC)
ALTER TABLE bids_in_doubt ADD COLUMN side TEXT;
CREATE INDEX IF NOT EXISTS receipts_offer ON receipts (offer_id);
CREATE INDEX IF NOT EXISTS receipts_for_offer ON receipts (for_offer) WHERE for_offer IS NOT NULL;
ALTER TABLE ledger_entries ADD COLUMN offer_id TEXT;  -- the receipt's, for an offer's fills
ALTER TABLE ledger_entries ADD COLUMN taker TEXT;     -- the receipt's, for /trades?taker=
ALTER TABLE ledger_entries ADD COLUMN side TEXT;      -- the maker's offer side, if known here
UPDATE ledger_entries SET offer_id = json_extract(entry, '$.receipt.offer_id'),
    taker = json_extract(entry, '$.receipt.taker');
CREATE INDEX IF NOT EXISTS ledger_entries_offer ON ledger_entries (offer_id);
CREATE INDEX IF NOT EXISTS ledger_entries_taker ON ledger_entries (taker, ts);
CREATE TABLE IF NOT EXISTS refused_bids (
    bid_id  TEXT PRIMARY KEY,
    sig     TEXT NOT NULL,     -- the bid's signature: the same signed bid has the same one
    code    TEXT NOT NULL,     -- the refusal, exactly as answered
    message TEXT NOT NULL,
    details TEXT,              -- JSON object or NULL
    keep_until INTEGER NOT NULL  -- ms: past it the bid is outside the window for good
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refused_bids_keep ON refused_bids (keep_until);
"""

V3 = """
CREATE TABLE IF NOT EXISTS manual_bids (
    bid_id   TEXT NOT NULL,
    role     TEXT NOT NULL,     -- 'maker' (a bid on our manual offer) or 'taker' (ours)
    root     TEXT NOT NULL,     -- maker: the chain the bid is on, taker: the offer bid on
    bid      TEXT NOT NULL,     -- Bid.to_wire(), as signed
    status   TEXT NOT NULL,     -- pending, accepted, rejected, expired
    created  INTEGER NOT NULL,  -- ms
    expires  INTEGER NOT NULL,  -- ms: a pending bid not decided by then is expired
    accepted INTEGER,           -- satoshis an accept filled (at most the bid's amount)
    PRIMARY KEY (bid_id, role)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS manual_bids_root ON manual_bids (root, created);
CREATE INDEX IF NOT EXISTS manual_bids_open ON manual_bids (role, status) WHERE status = 'pending';
"""

ORDERS = """
CREATE TABLE orders (
    id       TEXT PRIMARY KEY,
    state    TEXT NOT NULL,     -- pending, filled, partial, resting, cancelled
    side     TEXT NOT NULL,
    price    INTEGER NOT NULL,  -- cents per BTC: the limit
    amount   INTEGER NOT NULL,  -- satoshis
    tif      TEXT NOT NULL,
    created  INTEGER NOT NULL,
    offer_id TEXT               -- the resting offer a GTC rest was posted as
);
CREATE INDEX orders_state ON orders (state) WHERE state = 'pending';
CREATE INDEX orders_created ON orders (created, id);
CREATE TABLE order_fills (
    order_id TEXT NOT NULL,
    n        INTEGER NOT NULL,  -- the fill's place in the order
    fill_id  TEXT NOT NULL,
    receipt  TEXT NOT NULL,     -- Receipt.to_wire(), as signed
    PRIMARY KEY (order_id, n)
) WITHOUT ROWID;
CREATE TABLE order_in_doubt (
    order_id TEXT NOT NULL,
    bid_id   TEXT NOT NULL,
    n        INTEGER NOT NULL,
    bid      TEXT NOT NULL,     -- Bid.to_wire()
    PRIMARY KEY (order_id, bid_id)
) WITHOUT ROWID;
CREATE INDEX order_in_doubt_bid ON order_in_doubt (bid_id);
"""

V4 = """
CREATE TABLE IF NOT EXISTS envelope_marks (
    sender TEXT PRIMARY KEY,  -- a peer's client id (its public key, hex)
    at     INTEGER NOT NULL   -- the last envelope time accepted from it (its ms)
) WITHOUT ROWID;
"""

V5 = """
ALTER TABLE own_offers ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;  -- ms, newest version's
CREATE INDEX IF NOT EXISTS own_offers_expires ON own_offers (expires);
"""


def migrate(db: sqlite3.Connection) -> None:
    """Bring ``db`` to ``VERSION``: create a fresh one, or run each migration still due."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > VERSION:
        raise RuntimeError(f"{version=} is newer than this node's schema ({VERSION})")
    fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    db.execute("BEGIN IMMEDIATE")
    try:
        if fresh:  # version 1 at once, then the steps after it
            _run(db, TABLES + ORDERS)
            version = 1
        for step in MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version = {VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _run(db: sqlite3.Connection, script: str) -> None:
    """Statements one by one (``executescript`` would commit the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v0_to_v1(db: sqlite3.Connection) -> None:
    """Orders from one JSON document each to columns and tables; every other table as it was."""
    _run(db, TABLES)
    old = db.execute("SELECT name FROM sqlite_master WHERE name = 'orders'").fetchone()
    if old is not None:
        db.execute("ALTER TABLE orders RENAME TO orders_v0")
    _run(db, ORDERS)
    if old is None:
        return
    for (doc_text,) in db.execute("SELECT doc FROM orders_v0").fetchall():
        doc = json.loads(doc_text)
        db.execute(
            "INSERT INTO orders (id, state, side, price, amount, tif, created, offer_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc["id"],
                doc["status"],
                doc["side"],
                doc["price"],
                doc["amount"],
                doc["tif"],
                doc["created"],
                doc.get("offer_id"),
            ),
        )
        for n, receipt in enumerate(doc.get("fills", [])):
            db.execute(
                "INSERT INTO order_fills (order_id, n, fill_id, receipt) VALUES (?, ?, ?, ?)",
                (doc["id"], n, receipt["fill_id"], json.dumps(receipt)),
            )
        for n, bid in enumerate(doc.get("in_doubt", [])):
            db.execute(
                "INSERT INTO order_in_doubt (order_id, bid_id, n, bid) VALUES (?, ?, ?, ?)",
                (doc["id"], bid["bid_id"], n, json.dumps(bid)),
            )
    db.execute("DROP TABLE orders_v0")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """The refusals table, the ``for_offer`` links and their indexes."""
    _run(db, V2)


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """Bids on manual offers (#9.1); nothing else changes."""
    _run(db, V3)


def _v3_to_v4(db: sqlite3.Connection) -> None:
    """Gossip envelope marks (#8); nothing else changes."""
    _run(db, V4)


def _v4_to_v5(db: sqlite3.Connection) -> None:
    """Each own offer's expiry, from the newest version's signed document."""
    _run(db, V5)
    rows = db.execute(
        "SELECT o.id, v.record FROM own_offers o "
        "JOIN own_versions v ON v.id = o.id AND v.seq = o.seq"
    ).fetchall()
    for offer_id, record in rows:
        expires = json.loads(json.loads(record)["v"])["expires"]
        db.execute("UPDATE own_offers SET expires = ? WHERE id = ?", (expires, offer_id))


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v0_to_v1,
    _v1_to_v2,
    _v2_to_v3,
    _v3_to_v4,
    _v4_to_v5,
]
