"""The last gossip envelope time accepted per sender, so a restarted node still refuses replays.

An envelope is refused unless its ``at`` is above the last one accepted from its
sender (``node/network/gossip.py``). Kept only in memory, that mark was lost on a
restart, and an envelope captured before it could be replayed once within the
clock window. Only marks inside that window matter (older envelopes are refused
by the window itself), so the table holds one row per recent sender.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2p_offers.node.storage.database import Database

Mark = tuple[str, int]  # (sender's client id, envelope time in its ms)


class EnvelopeMarks:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, marks: Iterable[Mark], older_than_ms: int) -> None:
        """Raise each sender's mark (never lower it); forget marks below ``older_than_ms``."""
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO envelope_marks (sender, at) VALUES (?, ?) "
                "ON CONFLICT (sender) DO UPDATE SET at = excluded.at WHERE excluded.at > at",
                list(marks),
            )
            tx.execute("DELETE FROM envelope_marks WHERE at < ?", (older_than_ms,))

    def load(self, older_than_ms: int) -> dict[str, int]:
        rows = self.db.rows("SELECT sender, at FROM envelope_marks WHERE at >= ?", (older_than_ms,))
        return {r[0]: r[1] for r in rows}
