"""The exchange layer's REST shapes (SPEC §6-7): orders, trades, the ledger and its peer side."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from p2p_offers.book import Side, Tif
from p2p_offers.fields import MAX_MS
from p2p_offers.node.http.field_types import (
    AmountBtc,
    BtcString,
    Owner,
    PriceUsd,
    SignedBtc,
    SignedUsd,
    Strict,
    UsdString,
)
from p2p_offers.node.http.schemas import STP_FIELD, OfferOut, ReceiptOut
from p2p_offers.node.ledger.replicator import MAX_PAGE_LIMIT, PAGE_LIMIT
from p2p_offers.node.offers.stp import Stp
from p2p_offers.node.storage.database import MAX_INTEGER
from p2p_offers.node.trading.order import OrderStatus


class CreateOrder(Strict):
    side: Side
    price_usd: PriceUsd
    amount_btc: AmountBtc
    tif: Tif = Field(Tif.GTC, description="gtc: post the unfilled rest as an offer; ioc: drop it")
    stp: Stp | None = STP_FIELD


class BidInDoubtOut(BaseModel):
    bid_id: str
    offer_id: str
    amount_btc: BtcString


class OrderOut(BaseModel):
    id: str
    side: Side
    price_usd: UsdString
    amount_btc: BtcString
    tif: Tif
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
    owner: Owner | None = Field(None, description="only this maker's trades (as maker)")
    maker: Owner | None = Field(None, description="only this maker's trades")
    taker: Owner | None = Field(None, description="only this taker's trades")
    side: Side | None = Field(
        None,
        description="the maker's offer's side (sell: the taker bought BTC); a trade whose "
        "offer this node never held is not matched",
    )
    since: int | None = Field(None, ge=0, le=MAX_MS, description="receipt time from (ms)")
    until: int | None = Field(None, ge=0, le=MAX_MS, description="receipt time to (ms)")
    limit: int | None = Field(None, ge=1, le=1_000_000)


class AccountQuery(Strict):
    limit: int = Field(100, ge=1, le=100_000, description="newest fills listed per role")


class ExposureOut(BaseModel):
    count: int
    amount_btc: BtcString = Field(description="total open amount on this side")
    value_usd: SignedUsd = Field(description="that amount at each offer's price, exact")


class PositionOut(BaseModel):
    btc: SignedBtc = Field(description="BTC bought minus BTC sold, over every fill")
    usd: SignedUsd = Field(description="USD received minus USD paid, over every fill")
    fills: int = Field(description="fills counted")
    unknown_side: int = Field(description="fills left out: their side could not be told")


class AccountFillOut(ReceiptOut):
    side: Side | None = Field(description="our side in the trade (buy: we bought BTC)")
    for_offer: str | None = Field(description="our offer a taker fill was made for (uncrossing)")


class AccountFills(BaseModel):
    maker: list[AccountFillOut] = Field(description="bids we filled on our offers, newest first")
    taker: list[AccountFillOut] = Field(
        description="our bids that were filled (direct bids, orders, uncrossing), newest first"
    )
    maker_count: int
    taker_count: int


class AccountOut(BaseModel):
    client_id: str
    open_offers: list[OfferOut]
    exposure: dict[Side, ExposureOut] = Field(description="per side: buy and sell")
    fills: AccountFills
    position: PositionOut


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


class FeedStateOut(BaseModel):
    owner: str
    height: int
    head: str


class PeerFeeds(BaseModel):
    node: str
    feeds: list[FeedStateOut]


class PeerLedgerQuery(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: int = Field(1, ge=1, le=MAX_INTEGER, alias="from", description="first height wanted")
    limit: int = Field(PAGE_LIMIT, ge=1, le=MAX_PAGE_LIMIT)


class PeerLedgerPage(BaseModel):
    owner: str
    height: int = Field(description="the height this node holds of the feed")
    entries: list[dict[str, Any]] = Field(description="signed entries, oldest first")
