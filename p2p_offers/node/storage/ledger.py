"""The ledger's tables: verified feed entries (ours and every other maker's) and forks seen."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from p2p_offers.codec import canonical_json
from p2p_offers.ledger import ForkError, LedgerEntry
from p2p_offers.node.storage.database import Database, Tx


@dataclass(frozen=True, slots=True)
class FeedState:
    owner: str
    height: int
    head: str


class LedgerRows:
    def __init__(self, db: Database) -> None:
        self.db = db
        # The side ("buy"/"sell") of the maker's offer a receipt filled, if this node knows
        # it (the receipt does not say); stored with the entry for /trades?side=. Runs inside
        # a write transaction: it must not touch the database.
        self.side_of: Callable[[str], str | None] = lambda offer_id: None

    # -- writes ----------------------------------------------------------------------------

    def insert(self, tx: Tx, entry: LedgerEntry) -> str:
        """Store one (verified) entry and return its hash.

        The hash is ``ledger.entry_hash`` computed from the very text stored, so
        the entry is canonicalized once instead of once for the hash and again
        for the text (this runs for every entry every node replicates).
        """
        receipt = entry["receipt"]
        text = canonical_json(entry)
        hash_ = hashlib.sha256(text).hexdigest()
        tx.execute(
            "INSERT INTO ledger_entries "
            "(owner, height, hash, fill_id, ts, entry, offer_id, taker, side) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry["owner"],
                entry["height"],
                hash_,
                receipt["fill_id"],
                receipt["ts"],
                text.decode(),
                receipt["offer_id"],
                receipt["taker"],
                self.side_of(receipt["offer_id"]),
            ),
        )
        return hash_

    @staticmethod
    def head(tx: Tx, owner: str) -> LedgerEntry | None:
        """``owner``'s newest entry, read inside a write transaction."""
        row = tx.one(
            "SELECT entry FROM ledger_entries WHERE owner = ? ORDER BY height DESC LIMIT 1",
            (owner,),
        )
        return json.loads(row[0]) if row else None

    def add(self, entries: Iterable[LedgerEntry]) -> None:
        with self.db.transaction() as tx:
            for entry in entries:
                self.insert(tx, entry)

    def record_fork(self, fork: ForkError) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO ledger_forks (owner, height, held, offered) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (owner, height) DO NOTHING",
                (
                    fork.held["owner"],
                    fork.held["height"],
                    json.dumps(fork.held),
                    json.dumps(fork.offered),
                ),
            )

    # -- reads -----------------------------------------------------------------------------

    def state(self, owner: str) -> FeedState:
        row = self.db.one(
            "SELECT height, hash FROM ledger_entries WHERE owner = ? ORDER BY height DESC LIMIT 1",
            (owner,),
        )
        return FeedState(owner, row[0], row[1]) if row else FeedState(owner, 0, "")

    def states(self) -> list[FeedState]:
        rows = self.db.rows(
            "SELECT owner, MAX(height), hash FROM ledger_entries GROUP BY owner ORDER BY owner"
        )
        return [FeedState(*row) for row in rows]

    def raw_entries(self, owner: str, start: int, limit: int) -> list[str]:
        """Entries from height ``start`` on, as the canonical JSON they were signed as."""
        rows = self.db.rows(
            "SELECT entry FROM ledger_entries WHERE owner = ? AND height >= ? "
            "ORDER BY height LIMIT ?",
            (owner, start, limit),
        )
        return [row[0] for row in rows]

    def entries(self, owner: str) -> list[LedgerEntry]:
        return [json.loads(e) for e in self.raw_entries(owner, 1, -1)]

    def receipts(
        self,
        owner: str | None,
        limit: int | None,
        *,
        taker: str | None = None,
        side: str | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[dict[str, Any]]:
        """Receipts of every stored feed (or ``owner``'s: the maker), newest first.

        Filters: ``taker``, ``side`` (the maker's offer's, as far as this node knew it when
        it stored the entry), receipt time from ``since`` to ``until`` (ms, inclusive).
        Ties in time go by owner, then newest entry first, so every node that
        holds the same feeds lists the same trades in the same order.
        """
        where, args = [], []
        for column, op, given in (
            ("owner", "=", owner),
            ("taker", "=", taker),
            ("side", "=", side),
            ("ts", ">=", since),
            ("ts", "<=", until),
        ):
            if given is not None:
                where.append(f"{column} {op} ?")
                args.append(given)
        sql = "SELECT entry FROM ledger_entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, owner, height DESC LIMIT ?"
        rows = self.db.rows(sql, (*args, -1 if limit is None else limit))
        return [json.loads(row[0])["receipt"] for row in rows]

    def by_offer(self, offer_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Receipts of fills on these offer records, oldest first (indexed)."""
        out: list[tuple[int, str, dict[str, Any]]] = []
        for offer_id in set(offer_ids):
            for ts, fill_id, entry in self.db.rows(
                "SELECT ts, fill_id, entry FROM ledger_entries WHERE offer_id = ?", (offer_id,)
            ):
                out.append((ts, fill_id, json.loads(entry)["receipt"]))
        return [r for _, _, r in sorted(out, key=lambda t: (t[0], t[1]))]

    def by_fill(self, fill_id: str) -> list[tuple[str, dict[str, Any]]]:
        rows = self.db.rows("SELECT owner, entry FROM ledger_entries WHERE fill_id = ?", (fill_id,))
        return [(owner, json.loads(entry)["receipt"]) for owner, entry in rows]

    def forked(self) -> set[str]:
        return {row[0] for row in self.db.rows("SELECT DISTINCT owner FROM ledger_forks")}
