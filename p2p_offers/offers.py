"""The offer document (SPEC §5) and its lifecycle, as pure values and functions.

An offer version is a frozen ``Offer``; every change (update, cancel, refresh,
fill) returns a new ``Offer`` and never touches the old one, so the node's
shell can compute a transition, sign it, make it durable and only then let
anybody see it. Each version becomes one BEP44 record with ``salt = id`` and
``seq`` one higher than the version it replaces.

Documents from other nodes are untrusted, so ``parse`` checks every field and
the relations between fields (a filled offer has a fill, the fill is not larger
than the offer, a partial fill names its remainder ...). A record that passes
``SignedOffer.from_record`` is safe to put in a book.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from nacl.signing import SigningKey

from p2p_offers import fields, records
from p2p_offers.book import SIDES
from p2p_offers.fields import DocError
from p2p_offers.records import Record

PAIR = "BTC/USD"


class OfferStatus(StrEnum):
    """An offer record's status: the one definition."""

    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"


OPEN, FILLED, CANCELLED = OfferStatus.OPEN, OfferStatus.FILLED, OfferStatus.CANCELLED
STATUSES = (OPEN, FILLED, CANCELLED)
FIRST_SEQ = 1


class Accept(StrEnum):
    """How an offer takes bids: ``auto`` fills the first valid one (the default), ``manual``
    holds each as pending until its owner accepts or rejects it."""

    AUTO = "auto"
    MANUAL = "manual"


ACCEPTS = (Accept.AUTO, Accept.MANUAL)

_KEYS = {"id", "pair", "side", "price", "amount", "status", "parent", "priority"}
_KEYS |= {"created", "expires", "fill"}
# Optional, and present only when not the default (so records signed before they existed
# stay valid and canonical, and a default has exactly one spelling: left out).
_OPTIONAL = frozenset({"accept", "min_amount"})
# codec.canonical_json's encoding: sorted keys, no spaces, UTF-8 (see Offer.to_json)
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_FILL_KEYS = {"bid_id", "amount", "taker", "remainder"}


class TransitionError(ValueError):
    """A change the offer's state does not allow; ``code`` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Fill:
    bid_id: str
    amount: int  # satoshis taken by this fill
    taker: str  # taker's public key hex
    remainder: str | None  # id of the open record holding the rest, None for a full fill

    def to_doc(self) -> dict[str, Any]:
        return {
            "bid_id": self.bid_id,
            "amount": self.amount,
            "taker": self.taker,
            "remainder": self.remainder,
        }


@dataclass(frozen=True, slots=True)
class Offer:
    id: str
    side: str
    price: int  # cents per BTC
    amount: int  # satoshis this record offers
    status: str
    parent: str | None
    priority: int  # ms of the original placement; remainders keep their parent's
    created: int
    expires: int
    fill: Fill | None = None
    pair: str = PAIR
    accept: str = Accept.AUTO
    min_amount: int | None = None  # smallest take in satoshis (see ``smallest_take``)

    # -- encoding ------------------------------------------------------------------------

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "id": self.id,
            "pair": self.pair,
            "side": self.side,
            "price": self.price,
            "amount": self.amount,
            "status": self.status,
            "parent": self.parent,
            "priority": self.priority,
            "created": self.created,
            "expires": self.expires,
            "fill": None if self.fill is None else self.fill.to_doc(),
        }
        if self.accept != Accept.AUTO:
            doc["accept"] = self.accept
        if self.min_amount is not None:
            doc["min_amount"] = self.min_amount
        return doc

    def to_json(self) -> bytes:
        """The record's ``v``: canonical JSON, the exact bytes the signature covers.

        Equal to ``codec.canonical_json(self.to_doc())`` (a test holds them
        together); encoded directly since every field is a validated int or
        str, so the codec's float scan has nothing to find.
        """
        return _CANONICAL.encode(self.to_doc()).encode()

    # -- state ---------------------------------------------------------------------------

    @property
    def ends_chain(self) -> bool:
        """Nothing can be filled through this record any more: cancelled, or filled in full.

        A partly filled record does not end its chain: bids naming it go on to
        its remainder.
        """
        return self.status == CANCELLED or (self.fill is not None and self.fill.remainder is None)

    @property
    def manual(self) -> bool:
        return self.accept == Accept.MANUAL

    @property
    def smallest_take(self) -> int:
        """The least one bid may take: ``min(min_amount, amount)``.

        A remainder inherits its parent's ``min_amount`` unchanged; once it holds
        less than that, it can still be taken, but only whole, so no offer is
        ever left with satoshis nobody is allowed to take. (So a ``min_amount``
        above ``amount``, allowed, means "all or nothing".)
        """
        return 1 if self.min_amount is None else min(self.min_amount, self.amount)

    def _require_open(self) -> None:
        if self.status != OPEN:
            raise TransitionError("offer_not_open", f"offer {self.id} is {self.status}")

    def _require_live(self, now_ms: int) -> None:
        if self.expires <= now_ms:
            raise TransitionError("offer_expired", f"offer {self.id} has expired")

    # -- transitions (owner only; each result is the next seq) ----------------------------

    def update(self, now_ms: int, price: int | None = None, amount: int | None = None) -> Offer:
        """New terms. A better deal for nobody but the owner costs time priority.

        Lowering the amount keeps the offer's place in the queue (it only gives
        up size); a new price or a larger amount is a new commitment and queues
        again behind offers already there, as on any exchange.
        """
        self._require_open()
        self._require_live(now_ms)
        new_price = self.price if price is None else price
        new_amount = self.amount if amount is None else amount
        _check_terms(new_price, new_amount)
        requeue = new_price != self.price or new_amount > self.amount
        return replace(
            self,
            price=new_price,
            amount=new_amount,
            priority=now_ms if requeue else self.priority,
        )

    def cancel(self) -> Offer:
        self._require_open()
        return replace(self, status=CANCELLED)

    def refresh(self, now_ms: int, ttl_ms: int) -> Offer:
        """Extend the lifetime; owners do this at half-life so live offers never expire.

        An offer that expired stays expired: peers dropped it, and reviving it
        would trade on terms its owner let lapse.
        """
        self._require_open()
        self._require_live(now_ms)
        return replace(self, expires=max(self.expires, now_ms + ttl_ms))

    def fill_with(
        self, bid_id: str, amount: int, taker: str, now_ms: int, remainder_id: str
    ) -> tuple[Offer, Offer | None]:
        """Fill ``amount``: this record becomes filled; a partial fill opens a remainder.

        The remainder is a new record (``remainder_id``, seq 1) with the rest of
        the amount, ``parent`` = this id and this offer's priority and expiry, so
        a partial fill neither loses its place in the queue nor extends its life.
        """
        self._require_open()
        if not 0 < amount <= self.amount:
            raise TransitionError(
                "insufficient_amount", f"offer {self.id} has {self.amount} sats, bid {amount}"
            )
        rest = self.amount - amount
        remainder = None
        if rest:
            remainder = replace(
                self, id=remainder_id, amount=rest, parent=self.id, created=now_ms, fill=None
            )
        filled = replace(
            self,
            status=FILLED,
            fill=Fill(bid_id, amount, taker, remainder_id if rest else None),
        )
        return filled, remainder


def create(
    side: str,
    price: int,
    amount: int,
    now_ms: int,
    ttl_ms: int,
    id: str | None = None,
    accept: str = Accept.AUTO,
    min_amount: int | None = None,
) -> Offer:
    """A new open offer; its priority is its placement time."""
    if side not in SIDES:
        raise TransitionError("invalid_side", f"side must be one of {', '.join(SIDES)}")
    _check_terms(price, amount)
    if ttl_ms <= 0:
        raise TransitionError("invalid_ttl", "ttl must be positive")
    if accept not in ACCEPTS:
        raise TransitionError("invalid_terms", f"accept must be one of {', '.join(ACCEPTS)}")
    if min_amount is not None and min_amount <= 0:
        raise TransitionError("invalid_terms", "min_amount must be positive")
    return Offer(
        accept=accept,
        min_amount=min_amount,
        id=id or fields.new_id(),
        side=side,
        price=price,
        amount=amount,
        status=OPEN,
        parent=None,
        priority=now_ms,
        created=now_ms,
        expires=now_ms + ttl_ms,
    )


def _check_terms(price: int, amount: int) -> None:
    doc = {"price": price, "amount": amount}
    try:
        fields.price(doc)
        fields.amount(doc)
    except DocError as exc:
        raise TransitionError("invalid_terms", str(exc)) from None


# -- parsing untrusted documents ----------------------------------------------------------


def parse(v: bytes) -> Offer:
    """Parse a record's ``v``; raise ``DocError`` unless it is a valid offer in canonical form.

    Canonical means byte-equal to the offer re-encoded: one text per offer, so
    every node derives the same bytes from the same document. (This is what
    ``codec.parse_canonical_json`` checks too; it is done here directly because
    a syncing node parses thousands of offers a second, and a validated offer
    holds no floats to look for.)
    """
    try:
        doc = json.loads(v.decode(), parse_float=_no_number, parse_constant=_no_number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocError(f"invalid JSON: {exc}") from None
    offer = from_doc(doc)
    if offer.to_json() != v:
        raise DocError("document is not canonical JSON")
    return offer


def _no_number(text: str) -> Any:
    raise DocError(f"non-integer number {text!r} in document")


def from_doc(doc: object) -> Offer:
    d = fields.exact_keys(doc, _KEYS, _OPTIONAL)
    if d.get("pair") != PAIR:
        raise DocError(f"pair must be {PAIR}")
    offer = Offer(
        id=fields.uuid4(d, "id"),
        side=fields.choice(d, "side", SIDES),
        price=fields.price(d),
        amount=fields.amount(d),
        status=fields.choice(d, "status", STATUSES),
        parent=fields.uuid4(d, "parent", nullable=True),
        priority=fields.millis(d, "priority"),
        created=fields.millis(d, "created"),
        expires=fields.millis(d, "expires"),
        fill=_fill_from_doc(d.get("fill")),
        accept=fields.choice(d, "accept", ACCEPTS) if "accept" in d else Accept.AUTO,
        min_amount=fields.amount(d, "min_amount") if "min_amount" in d else None,
    )
    _check_consistent(offer)
    return offer


def _fill_from_doc(doc: object) -> Fill | None:
    if doc is None:
        return None
    d = fields.exact_keys(doc, _FILL_KEYS)
    return Fill(
        bid_id=fields.uuid4(d, "bid_id"),
        amount=fields.amount(d),
        taker=fields.public_key(d, "taker"),
        remainder=fields.uuid4(d, "remainder", nullable=True),
    )


def _check_consistent(offer: Offer) -> None:
    if offer.expires <= offer.created:
        raise DocError("expires must be after created")
    if offer.parent == offer.id:
        raise DocError("an offer cannot be its own parent")
    fill = offer.fill
    if (offer.status == FILLED) != (fill is not None):
        raise DocError("fill must be set exactly when status is filled")
    if fill is not None:
        if fill.amount > offer.amount:
            raise DocError("fill.amount exceeds amount")
        if (fill.remainder is None) != (fill.amount == offer.amount):
            raise DocError("fill.remainder must be set exactly for a partial fill")
        if fill.remainder == offer.id:
            raise DocError("an offer cannot be its own remainder")


# -- signed versions ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedOffer:
    """One offer version as a verified BEP44 record: the unit nodes store and exchange."""

    offer: Offer
    record: Record

    @property
    def id(self) -> str:
        return self.offer.id

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def owner(self) -> str:
        return self.record.k.hex() if self.record.k else ""

    @property
    def hash(self) -> str:
        return self.record.hash

    @classmethod
    def from_record(cls, record: Record, *, verify: bool = True) -> SignedOffer:
        """Believe a record only if it is a signed, mutable offer addressed by its own id.

        Raises ``RecordError`` (bad signature or sizes) or ``DocError`` (not an offer).
        """
        if not record.mutable:
            raise DocError("an offer must be a mutable record")
        if verify:
            record.verify()
        offer = parse(record.v)
        if record.salt != offer.id.encode():
            raise DocError("salt must equal the offer id")
        return cls(offer, record)


def sign(key: SigningKey, offer: Offer, seq: int) -> SignedOffer:
    """Version ``seq`` of ``offer`` as a record under ``key`` (salt = id)."""
    return SignedOffer(offer, records.sign(key, offer.to_json(), seq, offer.id.encode()))
