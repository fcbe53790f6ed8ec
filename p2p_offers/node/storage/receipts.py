"""Fill receipts we gave (as the maker) or got (as the taker), with the bids they answer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from p2p_offers.bids import Bid, Receipt
from p2p_offers.node.storage.database import Database, Row, Tx


class Role(StrEnum):
    MAKER = "maker"  # we filled the bid
    TAKER = "taker"  # we sent it


@dataclass(frozen=True, slots=True)
class StoredFill:
    bid: Bid
    receipt: Receipt
    role: Role
    for_offer: str | None = None  # a taker fill made for one of our offers (uncrossing)
    side: str | None = None  # our side in the trade: "buy" or "sell" BTC (None: not recorded)

    @property
    def record(self) -> str | None:
        """Our offer record this fill traded for: the one filled (maker), or ``for_offer``."""
        return self.receipt.offer_id if self.role == Role.MAKER else self.for_offer


class BidRecorded(Exception):
    """The bid id already has a receipt in this role: answer from the record instead."""


class Receipts:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, tx: Tx, fill: StoredFill) -> bool:
        """Record ``fill``; False (and nothing written) if its bid already has a receipt."""
        cursor = tx.execute(
            "INSERT INTO receipts "
            "(bid_id, role, fill_id, offer_id, bid, receipt, ts, for_offer, side) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bid_id, role) DO NOTHING",
            (
                fill.bid.bid_id,
                fill.role,
                fill.receipt.fill_id,
                fill.receipt.offer_id,
                json.dumps(fill.bid.to_wire()),
                json.dumps(fill.receipt.to_wire()),
                fill.receipt.ts,
                fill.for_offer,
                fill.side,
            ),
        )
        return cursor.rowcount == 1

    def insert_new(self, tx: Tx, fill: StoredFill) -> None:
        """Record ``fill``, raising ``BidRecorded`` (the caller rolls back) if it is not new."""
        if not self.insert(tx, fill):
            raise BidRecorded(fill.bid.bid_id)

    def add(self, fill: StoredFill) -> bool:
        """The taker's copy of a receipt, durable on return (group-committed with those of
        other bids in flight); False for a known bid."""
        return self.db.grouped(lambda tx: self.insert(tx, fill))

    def get(self, bid_id: str, role: Role) -> StoredFill | None:
        row = self.db.one(
            f"SELECT {_COLUMNS} FROM receipts WHERE bid_id = ? AND role = ?", (bid_id, role)
        )
        return _fill(row) if row else None

    def all(self, role: Role | None = None) -> list[StoredFill]:
        if role is None:
            rows = self.db.rows(f"SELECT {_COLUMNS} FROM receipts ORDER BY ts, fill_id")
        else:
            rows = self.db.rows(
                f"SELECT {_COLUMNS} FROM receipts WHERE role = ? ORDER BY ts, fill_id", (role,)
            )
        return [_fill(r) for r in rows]

    def of_record(self, offer_id: str) -> list[StoredFill]:
        """The fills our record ``offer_id`` made, oldest first: the bid we filled on it
        (maker), and what uncrossing took for it (taker). Indexed."""
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM receipts WHERE offer_id = ? AND role = 'maker' "
            f"UNION ALL SELECT {_COLUMNS} FROM receipts WHERE for_offer = ? AND role = 'taker'",
            (offer_id, offer_id),
        )
        fills = [_fill(r) for r in rows]
        return sorted(fills, key=lambda f: (f.receipt.ts, f.receipt.fill_id))


_COLUMNS = "bid, receipt, role, for_offer, side"


def _fill(row: Row) -> StoredFill:
    bid, receipt, role, for_offer, side = row
    return StoredFill(
        Bid.from_wire(json.loads(bid)),
        Receipt.from_wire(json.loads(receipt)),
        Role(role),
        for_offer,
        side,
    )
