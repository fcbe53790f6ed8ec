"""The REST API's shapes (SPEC §7): pydantic models for what comes in and what goes out.

Request models validate every input and name the offending fields; response
models document the replies (the OpenAPI document is generated from both).
Replies are built by the ``*_view`` functions below rather than through the
models, because the node serves thousands of offers per page; a test checks
that every view validates against its model, so the two cannot drift.

Money crosses the edge as decimal strings (or JSON numbers, which the app
parses as ``Decimal``, never ``float``) and is converted to integer cents and
satoshis here, exactly, once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from p2p_offers import money
from p2p_offers.bids import Receipt
from p2p_offers.node.config import MAX_OFFER_TTL_S
from p2p_offers.node.index import Version
from p2p_offers.offers import SignedOffer

Side = Literal["buy", "sell"]
Status = Literal["open", "filled", "cancelled"]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Id = Annotated[str, Field(pattern=r"^[0-9a-f-]{36}$")]

_DECIMAL_INPUT = {"anyOf": [{"type": "string"}, {"type": "number"}]}


def _money(parse: Any, unit: str, places: int) -> Any:
    schema = {**_DECIMAL_INPUT, "description": f"{unit}, > 0, at most {places} decimals"}
    return Annotated[int, BeforeValidator(parse), WithJsonSchema(schema)]


PriceUsd = _money(money.parse_usd, "USD per BTC", 2)
AmountBtc = _money(money.parse_btc, "BTC", 8)
UsdString = Annotated[str, Field(pattern=r"^\d+\.\d{2}$", examples=["30000.00"])]
BtcString = Annotated[str, Field(pattern=r"^\d+\.\d{8}$", examples=["0.50000000"])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------


class CreateOffer(Strict):
    side: Side
    price_usd: PriceUsd
    amount_btc: AmountBtc
    ttl_s: int | None = Field(
        None, ge=1, le=MAX_OFFER_TTL_S, description="lifetime between refreshes"
    )


class UpdateOffer(Strict):
    price_usd: PriceUsd | None = None
    amount_btc: AmountBtc | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateOffer:
        if self.price_usd is None and self.amount_btc is None:
            raise ValueError("give price_usd, amount_btc or both")
        return self


class PlaceBid(Strict):
    amount_btc: AmountBtc


class OffersQuery(Strict):
    side: Side | None = None
    status: Status | None = None
    owner: Hex64 | None = None
    limit: int | None = Field(None, ge=1, le=100_000)


class BookQuery(Strict):
    levels: int | None = Field(None, ge=1, le=10_000)


class PeerOffersQuery(Strict):
    cursor: Id | None = None
    limit: int = Field(500, ge=1, le=5_000)


class RecordIn(BaseModel):
    """A BEP44 record in Grenache's JSON shape; checked in full by the node, not here."""

    model_config = ConfigDict(extra="allow")
    v: str
    k: str
    sig: str
    seq: int
    salt: str


class Announcement(BaseModel):
    hash: str = Field(description="sha1(k ‖ salt) in hex")
    record: dict[str, Any] | None = Field(None, description="the record; else read from the DHT")


class AnnounceBody(BaseModel):
    """``{"hash", "record"?}`` as the spec says, or a batch ``{"announcements": [...]}``."""

    hash: str | None = None
    record: dict[str, Any] | None = None
    announcements: list[Announcement] | None = Field(None, max_length=1000)

    @model_validator(mode="after")
    def _one_form(self) -> AnnounceBody:
        if (self.hash is None) == (self.announcements is None):
            raise ValueError("give either hash (and record) or announcements")
        return self

    def items(self) -> list[Announcement]:
        if self.announcements is not None:
            return self.announcements
        return [Announcement(hash=self.hash or "", record=self.record)]


class BidIn(Strict):
    """A signed bid (``p2p_offers.bids.Bid``); types here, meaning checked by the owner."""

    bid_id: Id
    offer_id: Id
    offer_seq: int
    maker: Hex64
    amount: int
    price: int
    taker: Hex64
    ts: int
    sig: str


# -- responses -----------------------------------------------------------------------------


class FillOut(BaseModel):
    bid_id: str
    amount_btc: BtcString
    taker: str
    remainder: str | None


class OfferOut(BaseModel):
    id: str
    owner: str
    side: Side
    price_usd: UsdString
    amount_btc: BtcString
    status: Status
    parent: str | None
    priority: int
    created: int
    expires: int
    seq: int
    fill: FillOut | None


class VersionOut(BaseModel):
    seq: int
    status: Status
    price_usd: UsdString
    amount_btc: BtcString
    expires: int


class OfferDetail(OfferOut):
    history: list[VersionOut]


class OfferList(BaseModel):
    offers: list[OfferOut]


class ReceiptOut(BaseModel):
    fill_id: str
    bid_id: str
    offer_id: str
    amount_btc: BtcString
    price_usd: UsdString
    maker: str
    taker: str
    remainder: str | None
    ts: int
    sig: str


class ReceiptWire(BaseModel):
    """The receipt as signed (integers), as ``POST /peer/bids`` returns it."""

    fill_id: str
    bid_id: str
    offer_id: str
    amount: int
    price: int
    maker: str
    taker: str
    remainder: str | None
    ts: int
    sig: str


class Level(BaseModel):
    price_usd: UsdString
    amount_btc: BtcString
    count: int


class BookOut(BaseModel):
    bids: list[Level] = Field(description="buy offers, highest price first")
    asks: list[Level] = Field(description="sell offers, lowest price first")


class PeerOut(BaseModel):
    address: str
    client_id: str


class PeersOut(BaseModel):
    peers: list[PeerOut]


class PeerOffersPage(BaseModel):
    node: str = Field(description="the serving node's client_id")
    records: list[RecordIn]
    next: str | None = Field(description="cursor for the next page, null on the last")


class AnnounceResult(BaseModel):
    outcomes: dict[str, int]


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok"]
    client_id: str
    synced: bool
    offers: dict[str, int]
    peers: int
    announcements: dict[str, dict[str, int]]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody


# -- views ---------------------------------------------------------------------------------


def offer_view(signed: SignedOffer) -> dict[str, Any]:
    o = signed.offer
    fill = o.fill
    return {
        "id": o.id,
        "owner": signed.owner,
        "side": o.side,
        "price_usd": money.format_usd(o.price),
        "amount_btc": money.format_btc(o.amount),
        "status": o.status,
        "parent": o.parent,
        "priority": o.priority,
        "created": o.created,
        "expires": o.expires,
        "seq": signed.seq,
        "fill": None
        if fill is None
        else {
            "bid_id": fill.bid_id,
            "amount_btc": money.format_btc(fill.amount),
            "taker": fill.taker,
            "remainder": fill.remainder,
        },
    }


def version_view(v: Version) -> dict[str, Any]:
    return {
        "seq": v.seq,
        "status": v.status,
        "price_usd": money.format_usd(v.price),
        "amount_btc": money.format_btc(v.amount),
        "expires": v.expires,
    }


def receipt_view(r: Receipt) -> dict[str, Any]:
    return {
        "fill_id": r.fill_id,
        "bid_id": r.bid_id,
        "offer_id": r.offer_id,
        "amount_btc": money.format_btc(r.amount),
        "price_usd": money.format_usd(r.price),
        "maker": r.maker,
        "taker": r.taker,
        "remainder": r.remainder,
        "ts": r.ts,
        "sig": r.sig,
    }


def level_view(level: tuple[int, int, int]) -> dict[str, Any]:
    price, amount, count = level
    return {
        "price_usd": money.format_usd(price),
        "amount_btc": money.format_btc(amount),
        "count": count,
    }
