"""The user's REST endpoints of the exchange layer (SPEC §6-7): orders, trades, the ledger."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, current_app

from p2p_offers.bids import Receipt
from p2p_offers.money import format_btc
from p2p_offers.node import errors
from p2p_offers.node.http import exchange_schemas as x
from p2p_offers.node.http.registry import Api
from p2p_offers.node.http.views import (
    account_fill_view,
    offer_view,
    order_view,
    receipt_view,
    usd_e10,
)
from p2p_offers.node.storage.receipts import StoredFill
from p2p_offers.node.trading.account import account as compute_account
from p2p_offers.node.trading.order import Order, OrderStatus
from p2p_offers.offers import OPEN

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
    summary="Every trade in every verified feed this node holds, newest first; filters "
    "maker (or owner), taker (both take me), side, since and until (ms)",
    query=x.TradesQuery,
    response=x.TradeList,
)
def trades(node: Node, query: x.TradesQuery) -> Response:
    maker, owner = node.owner(query.maker), node.owner(query.owner)
    if maker is not None and owner is not None and maker != owner:
        return Response('{"trades":[]}', mimetype="application/json")
    found = node.ledger.trades(
        maker or owner,
        query.limit,
        taker=node.owner(query.taker),
        side=query.side,
        since=query.since,
        until=query.until,
    )
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


@exchange.route(
    "GET",
    "/account",
    summary="This node's own account: open offers and exposure per side, fills as maker "
    "and as taker (direct bids, orders, uncrossing), and the net position from them",
    query=x.AccountQuery,
    response=x.AccountOut,
)
def account(node: Node, query: x.AccountQuery) -> dict[str, Any]:
    mine = [h.signed for h in node.index.select(status=OPEN, owner=node.client_id)]
    acc = compute_account(mine, node.receipts.all(), node.side_of_offer)
    newest = query.limit

    def listed(fills: list[StoredFill]) -> list[dict[str, Any]]:
        last = fills[::-1][:newest]
        return [account_fill_view(f, acc.sides.get(f.receipt.fill_id)) for f in last]

    return {
        "client_id": node.client_id,
        "open_offers": [offer_view(s) for s in mine],
        "exposure": {
            side: {
                "count": e.count,
                "amount_btc": format_btc(e.sats),
                "value_usd": usd_e10(e.usd_e10),
            }
            for side, e in acc.exposure.items()
        },
        "fills": {
            "maker": listed(acc.maker),
            "taker": listed(acc.taker),
            "maker_count": len(acc.maker),
            "taker_count": len(acc.taker),
        },
        "position": {
            "btc": format_btc(acc.btc_sats),
            "usd": usd_e10(acc.usd_e10),
            "fills": len(acc.sides),
            "unknown_side": acc.unknown_side,
        },
    }
