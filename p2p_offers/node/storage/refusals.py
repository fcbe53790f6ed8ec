"""Bids this node refused as an offer's owner: a refusal is final, so it is remembered.

Without this, a bid refused with ``insufficient_amount`` could be replayed,
as the same signed bid, after the maker enlarged the offer, and be filled,
although the taker's node had settled it as unfilled. The owner keeps each
refused bid id with its signature and the refusal; the same bid again gets
the same refusal, another bid under that id is a ``duplicate_bid``.

A row is kept until ``keep_until``: ``REFUSAL_KEEP_MS`` after the later of the
bid's ``ts`` and the refusal. By then the bid is outside the window of
``bids.BID_WINDOW_MS`` for good, so a replay is refused ``bid_expired``
whatever happened to the offer: forgetting it can never lead to a fill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from p2p_offers.bids import BID_WINDOW_MS, Bid
from p2p_offers.node import errors
from p2p_offers.node.storage.database import Database, Tx

REFUSAL_KEEP_MS = 3_600_000  # an hour: a replay within it gets the very same refusal


@dataclass(frozen=True, slots=True)
class Refused:
    bid: Bid
    error: errors.DomainError


class Refusals:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, tx: Tx, refused: list[Refused], now_ms: int) -> None:
        """Remember ``refused`` in ``tx`` (a bid id refused before keeps its first refusal)."""
        tx.executemany(
            "INSERT INTO refused_bids (bid_id, sig, code, message, details, keep_until) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bid_id) DO NOTHING",
            [
                (
                    r.bid.bid_id,
                    r.bid.sig,
                    r.error.code,
                    r.error.message,
                    None if r.error.details is None else json.dumps(r.error.details),
                    max(r.bid.ts, now_ms) + BID_WINDOW_MS + REFUSAL_KEEP_MS,
                )
                for r in refused
            ],
        )
        tx.execute("DELETE FROM refused_bids WHERE keep_until <= ?", (now_ms,))

    def get(self, bid: Bid) -> errors.DomainError | None:
        """The refusal ``bid``'s id got, to answer again; ``DuplicateBid`` if it was another bid."""
        row = self.db.one(
            "SELECT sig, code, message, details FROM refused_bids WHERE bid_id = ?", (bid.bid_id,)
        )
        if row is None:
            return None
        sig, code, message, details = row
        if sig != bid.sig:
            return errors.DuplicateBid(f"bid id {bid.bid_id} was used for another bid")
        return errors.from_wire(code, message, json.loads(details) if details else None)

    def count(self) -> int:
        row = self.db.one("SELECT count(*) FROM refused_bids")
        return int(row[0]) if row else 0
