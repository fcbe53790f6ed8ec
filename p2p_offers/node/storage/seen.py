"""The last seq seen per foreign record, so a restarted node still knows old versions as old."""

from __future__ import annotations

from collections.abc import Iterable

from p2p_offers.node.storage.database import Database

Floor = tuple[str, str, int, int]  # (offer id, owner, seq, expires)


class Seen:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, items: Iterable[Floor], now_ms: int) -> None:
        """Remember (id, owner, seq, expires) of foreign records; forget expired ones."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO seen (id, owner, seq, expires) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, seq = excluded.seq, "
                "expires = excluded.expires WHERE excluded.seq > seen.seq",
                list(items),
            )
            tx.execute("DELETE FROM seen WHERE expires <= ?", (now_ms,))

    def load(self, now_ms: int) -> list[Floor]:
        rows = self.db.rows("SELECT id, owner, seq, expires FROM seen WHERE expires > ?", (now_ms,))
        return [(r[0], r[1], r[2], r[3]) for r in rows]
