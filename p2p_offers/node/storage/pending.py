"""Bids on manual offers (#9.1), durable on both sides until they are decided.

The owner keeps each bid on one of its manual offers as ``pending`` until it
accepts (a fill, through the same path as an auto bid), rejects, or lets it
expire; the taker keeps the bid it sent, with the owner's expiry, until its
resolver learns the outcome. A row's status only ever leaves ``pending``, and
only under the chain's lock (owner) or after the owner's answer (taker), so a
decided bid is never decided again.

Expiry is read, not swept: a pending row past ``expires`` *is* expired
(``effective``), and is written so the first time something acts on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum

from p2p_offers.bids import Bid
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.database import Database, Tx
from p2p_offers.node.storage.receipts import Role

DEFAULT_PENDING_MS = 300_000  # how long an owner holds a bid undecided, unless configured
MAX_PENDING_MS = 3_600_000  # and at most (a taker clamps what an owner says to it, too)


class BidStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ManualBid:
    bid: Bid
    role: Role
    root: str  # owner: the chain bid on; taker: the offer record bid on
    status: BidStatus
    created: int
    expires: int
    accepted: int | None = None  # satoshis filled by the accept

    def effective(self, now_ms: int) -> ManualBid:
        """This row as it stands at ``now_ms``: a pending one past its expiry is expired."""
        if self.status == BidStatus.PENDING and self.expires <= now_ms:
            return replace(self, status=BidStatus.EXPIRED)
        return self


_COLUMNS = "bid, role, root, status, created, expires, accepted"


def _row(r: tuple) -> ManualBid:
    bid, role, root, status, created, expires, accepted = r
    return ManualBid(
        Bid.from_wire(json.loads(bid)),
        Role(role),
        root,
        BidStatus(status),
        created,
        expires,
        accepted,
    )


class ManualBids:
    def __init__(self, db: Database) -> None:
        self.db = db
        # a row written or decided, told once committed (GET /events' ``bid``)
        self.changed: Signal[[ManualBid]] = Signal("manual bid changed")

    def insert(self, tx: Tx, rows: list[ManualBid]) -> None:
        """New rows (a bid id already held in that role keeps its first row)."""
        tx.executemany(
            f"INSERT INTO manual_bids (bid_id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bid_id, role) DO NOTHING",
            [
                (
                    m.bid.bid_id,
                    json.dumps(m.bid.to_wire()),
                    m.role,
                    m.root,
                    m.status,
                    m.created,
                    m.expires,
                    m.accepted,
                )
                for m in rows
            ],
        )
        tx.after_commit(lambda: self._tell_all(rows))

    def decide(
        self, tx: Tx, bid_id: str, role: Role, status: BidStatus, accepted: int | None = None
    ) -> bool:
        """Move a pending row to ``status``; False if it was not pending (nothing written)."""
        cur = tx.execute(
            "UPDATE manual_bids SET status = ?, accepted = ? "
            "WHERE bid_id = ? AND role = ? AND status = 'pending'",
            (status, accepted, bid_id, role),
        )
        if cur.rowcount != 1:
            return False
        tx.after_commit(lambda: self._tell(bid_id, role))
        return True

    def _tell_all(self, rows: list[ManualBid]) -> None:
        for row in rows:
            self.changed.emit(row)

    def _tell(self, bid_id: str, role: Role) -> None:
        row = self.get(bid_id, role)
        if row is not None:
            self.changed.emit(row)

    def add(self, row: ManualBid) -> None:
        with self.db.transaction() as tx:
            self.insert(tx, [row])

    def settle(
        self, bid_id: str, role: Role, status: BidStatus, accepted: int | None = None
    ) -> bool:
        with self.db.transaction() as tx:
            return self.decide(tx, bid_id, role, status, accepted)

    def drop(self, bid_id: str, role: Role) -> None:
        """Forget a row: the taker's bid that surely never reached its owner."""
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM manual_bids WHERE bid_id = ? AND role = ?", (bid_id, role))

    def expire_at(self, bid_id: str, expires: int) -> bool:
        """The taker's pending bid expires when its owner says (bounded by the caller)."""
        with self.db.transaction() as tx:
            cur = tx.execute(
                "UPDATE manual_bids SET expires = ? "
                "WHERE bid_id = ? AND role = 'taker' AND status = 'pending'",
                (expires, bid_id),
            )
            return cur.rowcount == 1

    def get(self, bid_id: str, role: Role) -> ManualBid | None:
        r = self.db.one(
            f"SELECT {_COLUMNS} FROM manual_bids WHERE bid_id = ? AND role = ?", (bid_id, role)
        )
        return None if r is None else _row(tuple(r))

    def of_root(self, root: str, role: Role = Role.MAKER) -> list[ManualBid]:
        """The bids on one chain (owner), oldest first."""
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM manual_bids WHERE root = ? AND role = ? "
            "ORDER BY created, bid_id",
            (root, role),
        )
        return [_row(tuple(r)) for r in rows]

    def pending(self, role: Role) -> list[ManualBid]:
        """Rows still pending in ``role``, oldest first (the taker's resolver asks about these)."""
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM manual_bids WHERE role = ? AND status = 'pending' "
            "ORDER BY created, bid_id",
            (role,),
        )
        return [_row(tuple(r)) for r in rows]
