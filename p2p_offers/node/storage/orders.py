"""Orders in columns (state, side, price, amounts, tif, rest), fills and bids in doubt in tables.

Queries are indexed: the pending ones (at start), the newest (listing), those
holding a bid in doubt (when it settles), one by id.
"""

from __future__ import annotations

import json

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import Tif
from p2p_offers.node.storage.database import Database, Row, Tx
from p2p_offers.node.trading.order import Order, OrderStatus

_COLUMNS = "id, state, side, price, amount, tif, created, offer_id"


class Orders:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, order: Order) -> None:
        """The order as it is now, fills and bids in doubt included, in one transaction."""
        with self.db.transaction() as tx:
            self._save(tx, order)

    @staticmethod
    def _save(tx: Tx, order: Order) -> None:
        tx.execute(
            f"INSERT INTO orders ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, offer_id = excluded.offer_id",
            (
                order.id,
                order.status,
                order.side,
                order.price,
                order.amount,
                order.tif,
                order.created,
                order.offer_id,
            ),
        )
        tx.execute("DELETE FROM order_fills WHERE order_id = ?", (order.id,))
        tx.executemany(
            "INSERT INTO order_fills (order_id, n, fill_id, receipt) VALUES (?, ?, ?, ?)",
            [(order.id, n, r.fill_id, json.dumps(r.to_wire())) for n, r in enumerate(order.fills)],
        )
        tx.execute("DELETE FROM order_in_doubt WHERE order_id = ?", (order.id,))
        tx.executemany(
            "INSERT INTO order_in_doubt (order_id, bid_id, n, bid) VALUES (?, ?, ?, ?)",
            [
                (order.id, b.bid_id, n, json.dumps(b.to_wire()))
                for n, b in enumerate(order.in_doubt)
            ],
        )

    def get(self, order_id: str) -> Order | None:
        found = self._load(f"SELECT {_COLUMNS} FROM orders WHERE id = ?", (order_id,))
        return found[0] if found else None

    def latest(self, limit: int) -> list[Order]:
        return self._load(
            f"SELECT {_COLUMNS} FROM orders ORDER BY created DESC, id DESC LIMIT ?", (limit,)
        )

    def pending(self) -> list[Order]:
        return self._load(
            f"SELECT {_COLUMNS} FROM orders WHERE state = ? ORDER BY created, id",
            (OrderStatus.PENDING,),
        )

    def holding(self, bid_id: str) -> list[Order]:
        """Orders that list ``bid_id`` among their bids in doubt."""
        return self._load(
            f"SELECT {_COLUMNS} FROM orders WHERE id IN "
            "(SELECT order_id FROM order_in_doubt WHERE bid_id = ?)",
            (bid_id,),
        )

    def _load(self, sql: str, args: tuple[object, ...]) -> list[Order]:
        with self.db.snapshot() as tx:  # an order's row, fills and doubts from one state
            orders = [_order(row) for row in tx.execute(sql, args).fetchall()]
            rows = {
                order.id: (
                    tx.execute(
                        "SELECT receipt FROM order_fills WHERE order_id = ? ORDER BY n",
                        (order.id,),
                    ).fetchall(),
                    tx.execute(
                        "SELECT bid FROM order_in_doubt WHERE order_id = ? ORDER BY n",
                        (order.id,),
                    ).fetchall(),
                )
                for order in orders
            }
        for order in orders:
            fills, bids = rows[order.id]
            order.fills = [Receipt.from_wire(json.loads(r[0])) for r in fills]
            order.in_doubt = [Bid.from_wire(json.loads(r[0])) for r in bids]
            if order.status != OrderStatus.PENDING:
                order.done.set()
        return orders


def _order(row: Row) -> Order:
    order_id, state, side, price, amount, tif, created, offer_id = row
    order = Order(order_id, side, price, amount, Tif(tif), created, OrderStatus(state))
    order.offer_id = offer_id
    return order
