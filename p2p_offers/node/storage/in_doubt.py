"""Bids we sent whose answer never came: they may have been filled, so they are kept."""

from __future__ import annotations

import json

from p2p_offers.bids import Bid
from p2p_offers.node.storage.database import Database


class BidsInDoubt:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(
        self, bid: Bid, now_ms: int, for_offer: str | None = None, side: str | None = None
    ) -> bool:
        """Keep ``bid`` (sent for our offer ``for_offer``, if any, as a ``side`` taker);
        False if it was in doubt already."""
        with self.db.transaction() as tx:
            cursor = tx.execute(
                "INSERT INTO bids_in_doubt (bid_id, created, bid, for_offer, side) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (bid_id) DO NOTHING",
                (bid.bid_id, now_ms, json.dumps(bid.to_wire()), for_offer, side),
            )
            return cursor.rowcount == 1

    def remove(self, bid_id: str) -> bool:
        """Forget a settled bid; False if it was not in doubt."""
        with self.db.transaction() as tx:
            return tx.execute("DELETE FROM bids_in_doubt WHERE bid_id = ?", (bid_id,)).rowcount > 0

    def __contains__(self, bid_id: object) -> bool:
        return self.db.one("SELECT 1 FROM bids_in_doubt WHERE bid_id = ?", (bid_id,)) is not None

    def all(self) -> list[Bid]:
        """Oldest first."""
        return [bid for bid, _, _ in self.entries()]

    def entries(self) -> list[tuple[Bid, str | None, str | None]]:
        """(bid, the own offer it was sent for or None, our side), oldest first."""
        rows = self.db.rows(
            "SELECT bid, for_offer, side FROM bids_in_doubt ORDER BY created, bid_id"
        )
        return [(Bid.from_wire(json.loads(r[0])), r[1], r[2]) for r in rows]

    def count(self) -> int:
        row = self.db.one("SELECT count(*) FROM bids_in_doubt")
        return int(row[0]) if row else 0
