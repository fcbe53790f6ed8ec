"""Our own offers: every version we signed, per record, and what each chain's head is.

A version is never changed once written; a record's history is capped
(``HISTORY_MAX``, as peers cap theirs) by pruning the oldest versions, while
its newest seq stays in ``own_offers``, so a pruned history can never lead to
a seq being signed twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from p2p_offers.node.storage.database import Database, Row, Tx
from p2p_offers.offers import OPEN, SignedOffer
from p2p_offers.records import Record

HISTORY_MAX = 64  # versions kept per record (peers keep as many)


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


_HEAD = (
    "SELECT o.root, o.ttl_ms, o.published_seq, v.record FROM own_offers o "
    "JOIN own_versions v ON v.id = o.id AND v.seq = o.seq"
)


class OwnOffers:
    def __init__(self, db: Database, history_max: int = HISTORY_MAX) -> None:
        self.db = db
        self.history_max = history_max

    def save(self, tx: Tx, versions: Iterable[OwnVersion]) -> None:
        for v in versions:
            signed, offer = v.signed, v.signed.offer
            tx.execute(
                "INSERT INTO own_offers (id, root, seq, status, ttl_ms, expires) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "seq = excluded.seq, status = excluded.status, ttl_ms = excluded.ttl_ms, "
                "expires = excluded.expires",
                (signed.id, v.root, signed.seq, offer.status, v.ttl_ms, offer.expires),
            )
            tx.execute(
                "INSERT INTO own_versions (id, seq, record) VALUES (?, ?, ?)",
                (signed.id, signed.seq, json.dumps(signed.record.to_json())),
            )
            if signed.seq > self.history_max:
                tx.execute(
                    "DELETE FROM own_versions WHERE id = ? AND seq <= ?",
                    (signed.id, signed.seq - self.history_max),
                )

    def get(self, offer_id: str) -> OwnRow | None:
        row = self.db.one(_HEAD + " WHERE o.id = ?", (offer_id,))
        return _own_row(row) if row else None

    def open_heads(self) -> list[OwnRow]:
        """Every chain's open head: what a restarted node manages and republishes."""
        return [_own_row(r) for r in self.db.rows(_HEAD + " WHERE o.status = ?", (OPEN,))]

    def closed_alive(self, now_ms: int) -> list[OwnRow]:
        """Records we closed (filled, cancelled) whose newest version has not expired: the
        closes a peer may still need to hear of from us."""
        rows = self.db.rows(_HEAD + " WHERE o.expires > ? AND o.status != ?", (now_ms, OPEN))
        return [_own_row(r) for r in rows]

    def unpublished(self) -> list[OwnRow]:
        rows = self.db.rows(_HEAD + " WHERE o.published_seq < o.seq")
        return [_own_row(r) for r in rows]

    def history(self, offer_id: str) -> list[SignedOffer]:
        rows = self.db.rows(
            "SELECT record FROM own_versions WHERE id = ? ORDER BY seq", (offer_id,)
        )
        return [_signed(r[0]) for r in rows]

    def mark_published(self, items: Iterable[tuple[str, int]]) -> None:
        """Note what the DHT holds. A hint: one lost (power cut) only means the version is
        put again after a restart, which the DHT answers as already held; so not fsynced."""
        rows = [(seq, offer_id) for offer_id, seq in items]
        if not rows:
            return
        with self.db.transaction(durable=False) as tx:
            tx.executemany(
                "UPDATE own_offers SET published_seq = MAX(published_seq, ?) WHERE id = ?", rows
            )


def _signed(record_json: str) -> SignedOffer:
    # Our own disk: written by us after signing, so not verified again.
    return SignedOffer.from_record(Record.from_json(json.loads(record_json)), verify=False)


def _own_row(row: Row) -> OwnRow:
    root, ttl_ms, published_seq, record_json = row
    return OwnRow(OwnVersion(_signed(record_json), root, ttl_ms), published_seq)
