"""REST endpoints of the exchange layer (SPEC §6-7): orders, trades, the ledger and its peer side.

Declared like the node's other endpoints (``api.Api``), so their pydantic
models validate the input and appear in ``GET /openapi.json``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from flask import Response, current_app
from pydantic import BaseModel, ConfigDict, Field

from p2p_offers import money
from p2p_offers.bids import Receipt
from p2p_offers.node import errors
from p2p_offers.node.api import Api
from p2p_offers.node.feeds import MAX_PAGE_LIMIT, PAGE_LIMIT
from p2p_offers.node.models import (
    AmountBtc,
    BtcString,
    Hex64,
    OfferOut,
    PriceUsd,
    ReceiptOut,
    Side,
    Strict,
    UsdString,
    offer_view,
    receipt_view,
)
from p2p_offers.node.orders import PENDING, Order

exchange = Api("exchange")

OrderStatus = Literal["pending", "filled", "partial", "resting", "cancelled"]


# -- models ----------------------------------------------------------------------------------


class CreateOrder(Strict):
    side: Side
    price_usd: PriceUsd
    amount_btc: AmountBtc
    tif: Literal["gtc", "ioc"] = Field(
        "gtc", description="gtc: post the unfilled rest as an offer; ioc: drop it"
    )


class BidInDoubtOut(BaseModel):
    bid_id: str
    offer_id: str
    amount_btc: BtcString


class OrderOut(BaseModel):
    id: str
    side: Side
    price_usd: UsdString
    amount_btc: BtcString
    tif: Literal["gtc", "ioc"]
    status: OrderStatus = Field(
        description="filled: all of it traded; partial: some traded (the rest rests if "
        "offer is set, else it was dropped); resting: none traded, all rests; cancelled: "
        "none traded, nothing rests (IOC); pending: still queued or being worked"
    )
    fills: list[ReceiptOut]
    offer: OfferOut | None = Field(description="the offer the rest was posted as, as it is now")
    in_doubt: list[BidInDoubtOut] = Field(
        description="bids sent without an answer: they may have filled, so their amount was "
        "neither re-planned nor rested"
    )


class OrderList(BaseModel):
    orders: list[OrderOut]


class OrdersQuery(Strict):
    limit: int = Field(100, ge=1, le=10_000)


class TradesQuery(Strict):
    owner: Hex64 | None = Field(None, description="only this maker's trades")
    limit: int | None = Field(None, ge=1, le=1_000_000)


class TradeList(BaseModel):
    trades: list[ReceiptOut] = Field(description="every maker's receipts, newest first")


class FeedCheck(BaseModel):
    owner: str
    height: int
    head: str
    ok: bool


class ReceiptCheck(BaseModel):
    checked: int
    missing: list[str] = Field(description="receipts we hold that are not in their maker's feed")
    mismatched: list[str] = Field(description="receipts that differ from their feed's copy")


class LedgerVerifyOut(BaseModel):
    ok: bool
    feeds: list[FeedCheck]
    receipts: ReceiptCheck


class FeedState(BaseModel):
    owner: str
    height: int
    head: str


class PeerFeeds(BaseModel):
    node: str
    feeds: list[FeedState]


class PeerLedgerQuery(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: int = Field(1, ge=1, alias="from", description="first height wanted")
    limit: int = Field(PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT)


class PeerLedgerPage(BaseModel):
    owner: str
    height: int = Field(description="the height this node holds of the feed")
    entries: list[dict[str, Any]] = Field(description="signed entries, oldest first")


# -- views -----------------------------------------------------------------------------------


def order_view(node: Any, order: Order) -> dict[str, Any]:
    offer = node.service.own(order.offer_id) if order.offer_id else None
    return {
        "id": order.id,
        "side": order.side,
        "price_usd": money.format_usd(order.price),
        "amount_btc": money.format_btc(order.amount),
        "tif": order.tif,
        "status": order.status,
        "fills": [receipt_view(r) for r in order.fills],
        "offer": offer_view(offer) if offer is not None else None,
        "in_doubt": [
            {"bid_id": b.bid_id, "offer_id": b.offer_id, "amount_btc": money.format_btc(b.amount)}
            for b in order.in_doubt
        ],
    }


# -- orders ----------------------------------------------------------------------------------


@exchange.route(
    "POST",
    "/orders",
    summary="A limit order: trades against the book best-first, the GTC rest is posted",
    body=CreateOrder,
    response=OrderOut,
    status=201,
    auth=True,
)
def create_order(node: Any, body: CreateOrder) -> Any:
    order = node.exchange.orders.submit(body.side, body.price_usd, body.amount_btc, body.tif)
    view = order_view(node, order)
    if order.status == PENDING:  # could not wait for it: 202, poll GET /orders/<id>
        accepted = current_app.json.response(view)
        accepted.status_code = 202
        return accepted
    return view


@exchange.route(
    "GET",
    "/orders",
    summary="This node's orders, newest first",
    query=OrdersQuery,
    response=OrderList,
)
def list_orders(node: Any, query: OrdersQuery) -> dict[str, Any]:
    return {"orders": [order_view(node, o) for o in node.exchange.orders.latest(query.limit)]}


@exchange.route("GET", "/orders/<order_id>", summary="One order", response=OrderOut, errors=(404,))
def get_order(node: Any, order_id: str) -> dict[str, Any]:
    order = node.exchange.orders.get(order_id)
    if order is None:
        raise errors.not_found("order", order_id)
    return order_view(node, order)


# -- trades and the ledger -------------------------------------------------------------------


@exchange.route(
    "GET",
    "/trades",
    summary="Every trade in every verified feed this node holds, newest first",
    query=TradesQuery,
    response=TradeList,
)
def trades(node: Any, query: TradesQuery) -> Response:
    found = node.exchange.ledger.trades(query.owner, query.limit)
    items = ",".join(
        json.dumps(receipt_view(Receipt.from_wire(r)), separators=(",", ":")) for r in found
    )
    return Response(f'{{"trades":[{items}]}}', mimetype="application/json")


@exchange.route(
    "GET",
    "/ledger/verify",
    summary="Every feed recomputed from the stored entries; our receipts checked against them",
    response=LedgerVerifyOut,
)
def verify_ledger(node: Any) -> dict[str, Any]:
    return node.exchange.ledger.verify(node.store.fills())


# -- peer side -------------------------------------------------------------------------------


@exchange.route(
    "GET",
    "/peer/ledger",
    summary="The feeds this node holds: owner, height and head hash of each",
    response=PeerFeeds,
)
def peer_feeds(node: Any) -> dict[str, Any]:
    return {
        "node": node.client_id,
        "feeds": [
            {"owner": s.owner, "height": s.height, "head": s.head}
            for s in node.exchange.ledger.states()
        ],
    }


@exchange.route(
    "GET",
    "/peer/ledger/<owner>",
    summary="Signed entries of one feed from a height on, for peers catching up",
    query=PeerLedgerQuery,
    response=PeerLedgerPage,
)
def peer_ledger(node: Any, owner: str, query: PeerLedgerQuery) -> Response:
    ledger = node.exchange.ledger
    entries = ",".join(ledger.raw_entries(owner, query.start, query.limit))
    height = ledger.state(owner).height
    body = f'{{"owner":{json.dumps(owner)},"height":{height},"entries":[{entries}]}}'
    return Response(body, mimetype="application/json")
