"""The user's REST endpoints of the exchange layer (SPEC §6-7): orders, trades, the ledger."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, current_app

from p2p_offers.bids import Receipt
from p2p_offers.node import errors
from p2p_offers.node.http import exchange_schemas as x
from p2p_offers.node.http.registry import Api
from p2p_offers.node.http.views import order_view, receipt_view
from p2p_offers.node.trading.order import Order, OrderStatus

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

exchange = Api("exchange")


def _view(node: Node, order: Order) -> dict[str, Any]:
    return order_view(order, node.maker.own(order.offer_id) if order.offer_id else None)


@exchange.route(
    "POST",
    "/orders",
    summary="A limit order: trades against the book best-first, the GTC rest is posted; "
    "202 if it is still queued when the wait runs out (poll GET /orders/<id>). A GTC order "
    "whose limit crosses this node's own resting offers is 409 self_cross naming them, "
    'before it trades, unless "stp": "cancel_resting" (they are cancelled before the rest '
    "is posted)",
    body=x.CreateOrder,
    response=x.OrderOut,
    status=201,
    raises=(errors.SelfCross,),
    accepted=True,
    auth=True,
)
def create_order(node: Node, body: x.CreateOrder) -> Any:
    order = node.desk.submit(body.side, body.price_usd, body.amount_btc, body.tif, body.stp)
    view = _view(node, order)
    if order.status == OrderStatus.PENDING:
        accepted = current_app.json.response(view)
        accepted.status_code = 202
        return accepted
    return view


@exchange.route(
    "GET",
    "/orders",
    summary="This node's orders, newest first",
    query=x.OrdersQuery,
    response=x.OrderList,
)
def list_orders(node: Node, query: x.OrdersQuery) -> dict[str, Any]:
    return {"orders": [_view(node, o) for o in node.desk.latest(query.limit)]}


@exchange.route(
    "GET", "/orders/<order_id>", summary="One order", response=x.OrderOut, raises=(errors.NotFound,)
)
def get_order(node: Node, order_id: str) -> dict[str, Any]:
    order = node.desk.get(order_id)
    if order is None:
        raise errors.unknown("order", order_id)
    return _view(node, order)


@exchange.route(
    "GET",
    "/trades",
    summary="Every trade in every verified feed this node holds, newest first",
    query=x.TradesQuery,
    response=x.TradeList,
)
def trades(node: Node, query: x.TradesQuery) -> Response:
    found = node.ledger.trades(query.owner, query.limit)
    items = ",".join(
        json.dumps(receipt_view(Receipt.from_wire(r)), separators=(",", ":")) for r in found
    )
    return Response(f'{{"trades":[{items}]}}', mimetype="application/json")


@exchange.route(
    "GET",
    "/ledger/verify",
    summary="Every feed recomputed from the stored entries; our receipts checked against them",
    response=x.LedgerVerifyOut,
)
def verify_ledger(node: Node) -> dict[str, Any]:
    return node.ledger.verify(node.receipts.all())
