"""The REST API's shapes (SPEC §7): pydantic models for what comes in and what goes out.

Request models validate every input and name the offending fields; response
models document the replies (the OpenAPI document is generated from both).
Replies are built by the ``*_view`` functions below rather than through the
models, because the node serves thousands of offers per page; a test checks
that every view validates against its model, so the two cannot drift.

The field types they are made of (ids, money) are ``field_types``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    model_validator,
)

from p2p_offers import money
from p2p_offers.bids import MAX_BID_BATCH, MAX_SEQ
from p2p_offers.book import Side
from p2p_offers.fields import MAX_MS
from p2p_offers.node.config import MAX_OFFER_TTL_S, MIN_OFFER_TTL_S
from p2p_offers.node.http.field_types import (
    AmountBtc,
    BtcString,
    Hex64,
    Id,
    OptionalBtc,
    OptionalUsd,
    Owner,
    PriceUsd,
    Sig,
    Status,
    Strict,
    UsdString,
)
from p2p_offers.node.offers.stp import Stp
from p2p_offers.offers import Accept

# -- requests ------------------------------------------------------------------------------


STP_FIELD: Any = Field(
    None,
    description="self-trade prevention: an offer that would cross this node's own resting "
    "offers is refused 409 self_cross naming them; cancel_resting cancels those first",
)


class CreateOffer(Strict):
    side: Side
    price_usd: PriceUsd
    amount_btc: AmountBtc
    ttl_s: int | None = Field(
        None,
        ge=MIN_OFFER_TTL_S,
        le=MAX_OFFER_TTL_S,
        description=f"seconds between refreshes while the node runs ({MIN_OFFER_TTL_S} to "
        f"{MAX_OFFER_TTL_S}); the offer expires that long after the node stops refreshing it",
    )
    stp: Stp | None = STP_FIELD
    accept: Accept = Field(
        Accept.AUTO,
        description="auto: the first valid bid is filled at once; manual: each bid is held "
        "pending (202) until this node accepts or rejects it (/offers/<id>/bids)",
    )
    min_amount_btc: OptionalBtc = Field(
        None,
        description="the smallest take; an offer (or a remainder) holding less "
        "than it can only be taken whole (so more than amount_btc: all or nothing)",
    )


class UpdateOffer(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    price_usd: OptionalUsd = None
    amount_btc: OptionalBtc = None

    @model_validator(mode="after")
    def _something(self) -> UpdateOffer:
        if self.price_usd is None and self.amount_btc is None:
            raise ValueError("give price_usd, amount_btc or both")
        return self


class PlaceBid(Strict):
    amount_btc: AmountBtc
    price_usd: OptionalUsd = Field(
        None,
        description="the price the taker saw: the bid fills at this price or not "
        "at all (409 price_changed if the offer's price is another)",
    )


class OffersQuery(Strict):
    side: Side | None = None
    status: Status | None = None
    owner: Owner | None = None
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


class Announcement(Strict):
    """One hint: a record's address and, usually, the record (else it is read from the DHT).

    The record is verified in full by the intake (signature, address, document);
    one that is not a record is counted ``malformed`` there, never refused here.
    """

    hash: str = Field(description="sha1(k ‖ salt) in hex; anything else is counted malformed")
    record: dict[str, Any] | None = Field(None, description="the record; else read from the DHT")


class AnnounceBatch(Strict):
    announcements: list[Announcement] = Field(max_length=1000)


class AnnounceBody(RootModel[Announcement | AnnounceBatch]):
    """``{"hash", "record"?}`` as the spec says, or a batch ``{"announcements": [...]}``."""

    def items(self) -> list[Announcement]:
        if isinstance(self.root, AnnounceBatch):
            return self.root.announcements
        return [self.root]


class BidIn(Strict):
    """A signed bid (``p2p_offers.bids.Bid``): exactly the ranges ``Bid.from_wire`` takes."""

    bid_id: Id
    offer_id: Id
    offer_seq: int = Field(ge=0, le=MAX_SEQ)
    maker: Hex64
    amount: int = Field(ge=1, le=money.MAX_AMOUNT_SATS, description="satoshis")
    price: int = Field(ge=1, le=money.MAX_PRICE_CENTS, description="cents per BTC")
    taker: Hex64
    ts: int = Field(
        ge=0,
        le=MAX_MS,
        description="ms; the owner refuses (409 bid_expired) a bid more than 60 s from its clock",
    )
    sig: Sig


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
    accept: Accept
    min_amount_btc: BtcString | None


class VersionOut(BaseModel):
    seq: int
    status: Status
    price_usd: UsdString
    amount_btc: BtcString
    expires: int


class OfferFillOut(BaseModel):
    """A fill an offer made: its receipt, the offer's record it traded for, and how."""

    role: Literal["maker", "taker"] = Field(
        description="maker: a bid filled on the record; taker: this node took another "
        "owner's older crossing offer with the record's amount (uncrossing)"
    )
    record: str = Field(description="the offer record that traded (the one asked about)")
    fill_id: str
    bid_id: str
    offer_id: str = Field(description="the record the receipt's maker filled")
    amount_btc: BtcString
    price_usd: UsdString
    maker: str
    taker: str
    remainder: str | None
    ts: int
    sig: str


class OfferDetail(OfferOut):
    history: list[VersionOut]
    fills: list[OfferFillOut] = Field(
        description="the fills this record made, oldest first (a remainder split off it, "
        "named by fill.remainder, lists its own). An own record lists them all: the bid "
        "filled on it, and what uncrossing took for it as a taker (a record uncrossing used "
        "up ends cancelled, with those fills here); another owner's lists the fill on it "
        "that this node's ledger holds"
    )


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


class AcceptBid(Strict):
    amount_btc: OptionalBtc = Field(
        None, description="accept this much of the bid (at most its amount); left out: all"
    )


class RejectBid(Strict):
    """An empty object: every POST takes a JSON body (nothing to say yet about a reject)."""


class ManualBidOut(BaseModel):
    """A bid on a manual offer, as its owner (role maker) or its taker (role taker) holds it."""

    bid_id: str
    offer_id: str = Field(description="the record the taker bid on")
    role: Literal["maker", "taker"]
    status: Literal["pending", "accepted", "rejected", "expired"]
    amount_btc: BtcString = Field(description="what the taker bid for")
    price_usd: UsdString
    maker: str
    taker: str
    created: int
    expires: int = Field(description="ms: a bid still pending then is expired")
    accepted_btc: BtcString | None = Field(description="what the accept filled, if accepted")
    receipt: ReceiptOut | None = Field(description="the owner's signed receipt, once accepted")


class ManualBidList(BaseModel):
    bids: list[ManualBidOut]


class PendingWire(BaseModel):
    """An owner's answer to a bid on its manual offer: held pending until it decides."""

    bid_id: str
    status: Literal["pending"]
    expires: int


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


class IdentifyProbe(Strict):
    """Who listens here? A fresh challenge and the address the prober dialled, which the
    answer's signature covers (``node/network/identity.py``)."""

    challenge: str = Field(pattern=r"^[0-9a-f]{32}$", description="16 random bytes, hex")
    address: str = Field(
        min_length=3,
        max_length=300,
        pattern=r"^\S+:\d{1,5}$",
        description="host:port the prober dialled; must be one this node listens at",
    )


class Identity(BaseModel):
    client_id: Hex64
    sig: Sig = Field(description="Ed25519 over {address, challenge, client_id}, kind identify")


class AnnounceResult(BaseModel):
    outcomes: dict[str, int]


class GossipEnvelope(Strict):
    """Gossip messages from one node, authenticated for the receiver
    (``node/network/gossip.py``): the messages' own shapes are checked by
    ``p2p_offers.gossip.wire``."""

    sender: Hex64 = Field(alias="from", description="the sending node's client_id (its key)")
    to: Hex64 = Field(description="the receiving node's client_id")
    at: int = Field(ge=0, le=2**53, description="the sender's clock, ms; grows per sender")
    mac: Hex64 = Field(
        description="keyed blake2b-256 of the envelope under the X25519 secret of sender "
        "and receiver (docs/gossip.md)"
    )
    messages: list[dict[str, Any]] = Field(max_length=1024)


class GossipResult(BaseModel):
    taken: int


class DhtHealth(BaseModel):
    """How this node stands with its grapes (docs/hardening.md)."""

    model_config = ConfigDict(extra="allow")
    grape: str = Field(description="the grape requests go to first (the one that answered last)")
    grapes: list[str]
    announced: bool = Field(description="every name announced, none failed since")
    last_error: str | None = Field(description="why announcing fails, while it does")
    put_error: str | None = Field(description="why DHT puts fail, while they do")


class Health(BaseModel):
    model_config = ConfigDict(extra="allow")
    status: Literal["ok"]
    client_id: str
    synced: bool
    offers: dict[str, int]
    peers: int
    announcements: dict[str, dict[str, int]]
    dht: DhtHealth


class ErrorBody(BaseModel):
    code: str = Field(description="snake_case; see docs/errors.md")
    message: str = Field(description="what went wrong, amounts in BTC and USD")
    details: dict[str, Any] | None = Field(
        None, description="always an object when present; its keys depend on the code"
    )


class ErrorOut(BaseModel):
    error: ErrorBody


class BidBatch(Strict):
    """Bids one taker sends an owner together (``node/network/batching.py``)."""

    bids: list[BidIn] = Field(min_length=1, max_length=MAX_BID_BATCH)


class BidResult(BaseModel):
    """One bid's answer: exactly one of the three, as ``POST /peer/bids`` would answer it."""

    receipt: ReceiptWire | None = None
    pending: PendingWire | None = None
    error: ErrorBody | None = None


class BidBatchResult(BaseModel):
    results: list[BidResult] = Field(description="one per bid sent, in order")
