"""The node's domain errors: what went wrong, in the domain's words; the edges pick statuses.

Every error the node reports to a user or a peer is one of these: a snake_case
``code`` (the class's), a ``message`` in the API's units ("bid for 5.00000000
BTC, 0.30000000 left", never satoshis) and ``details``, always a JSON object
or absent. Nothing here knows HTTP: the REST edge maps classes to statuses in
one table (``http/status.py``); a Grenache RPC edge sends ``rpc_error(exc)``
("ERR_<CODE>: message") and the same ``body()``.

The classes group by meaning, and callers branch on those groups, never on
numbers or message text: ``Refusal`` (the owner knows the offer and decided
not to fill: a bid refused so was never filled), ``PeerFailure`` (another node
did not give a usable answer), ``InvalidInput`` (the request itself is wrong).

An error that crossed the wire comes back as the same class (``from_wire``),
so a taker's node relays an owner's refusal as it was given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from p2p_offers.money import MoneyError, format_btc, format_usd, parse_btc

if TYPE_CHECKING:
    from p2p_offers.bids import Bid

_BY_CODE: dict[str, type[DomainError]] = {}


class DomainError(Exception):
    code: ClassVar[str] = "error"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] | None = dict(details) if details else None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any] | None) -> DomainError:
        return cls(message, details)

    def body(self) -> dict[str, Any]:
        """``{"error": {"code", "message", "details"?}}``: the one shape every edge sends."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def from_wire(code: object, message: object, details: object) -> DomainError:
    """An error another node sent, as the class its code names (``RemoteError`` if unknown)."""
    text = str(message) if isinstance(message, str) else "no message"
    extra = details if isinstance(details, dict) else None
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        return RemoteError(str(code)[:64], text, extra)
    return cls.from_details(text, extra)


def rpc_error(exc: DomainError) -> str:
    """The Grenache ``err`` string of an error: ``ERR_<CODE>: message``."""
    return f"ERR_{exc.code.upper()}: {exc.message}"


# -- the request is wrong ---------------------------------------------------------------------


class InvalidInput(DomainError):
    """Bad input: ``details = {"fields": [{"field", "message"}]}`` says which and why."""

    code = "invalid_input"

    @classmethod
    def fields(cls, problems: list[tuple[str, str]]) -> InvalidInput:
        names = ", ".join(field for field, _ in problems)
        details = {"fields": [{"field": f, "message": m} for f, m in problems]}
        return cls(f"invalid input: {names}", details)


class InvalidJson(InvalidInput):
    code = "invalid_json"


class InvalidSignature(InvalidInput):
    code = "invalid_signature"


class InvalidBid(InvalidInput):
    code = "invalid_bid"


class InvalidTerms(InvalidInput):
    code = "invalid_terms"


class Unauthorized(DomainError):
    code = "unauthorized"


class NotFound(DomainError):
    code = "not_found"


class MethodNotAllowed(DomainError):
    code = "method_not_allowed"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, details)
        allowed = (details or {}).get("allowed")
        self.allowed: list[str] = list(allowed) if isinstance(allowed, list) else []


class BodyTooLarge(DomainError):
    code = "body_too_large"


class Misdirected(DomainError):
    """An identify challenge for an address this node does not listen at
    (``network/identity.py``): signing it would let whoever listens there pass as us."""

    code = "misdirected"


class NotOwner(DomainError):
    code = "not_owner"

    @classmethod
    def of(cls, offer_id: str) -> NotOwner:
        return cls(f"offer {offer_id} belongs to another node", {"offer_id": offer_id})


def unknown(what: str, ident: str) -> NotFound:
    return NotFound(f"unknown {what} {ident}", {what: ident})


# -- the state does not allow it (an owner's refusal of a bid is final) -----------------------


class Refusal(DomainError):
    """The state of an offer does not allow the request; a bid refused so was never filled."""

    code = "conflict"


class OfferNotOpen(Refusal):
    code = "offer_not_open"


class OfferTaken(Refusal):
    code = "offer_taken"


class OfferExpired(Refusal):
    code = "offer_expired"


class BidExpired(Refusal):
    """The bid's ``ts`` is outside the owner's window (``bids.BID_WINDOW_MS``)."""

    code = "bid_expired"

    @classmethod
    def of(cls, bid: Bid, now_ms: int, window_ms: int) -> BidExpired:
        return cls(
            f"the bid is dated {bid.ts} ms, {abs(bid.ts - now_ms) / 1000:.0f} s from the owner's "
            f"clock; a bid is filled only within {window_ms // 1000} s of its ts",
            {"bid_id": bid.bid_id, "ts": bid.ts, "owner_ts": now_ms, "window_s": window_ms // 1000},
        )


class StaleOffer(Refusal):
    code = "stale_offer"

    @classmethod
    def terms(cls, offer_id: str, seq: int, price: int) -> StaleOffer:
        return cls(
            "the offer's terms changed since the version bid on",
            {"offer_id": offer_id, "seq": seq, "price_usd": format_usd(price)},
        )


class PriceChanged(StaleOffer):
    """The bid's price is not the offer's now: it was repriced since the taker saw it."""

    code = "price_changed"

    @classmethod
    def terms(cls, offer_id: str, seq: int, price: int) -> PriceChanged:
        return cls(
            f"the offer's price is {format_usd(price)} now, not the price bid",
            {"offer_id": offer_id, "seq": seq, "price_usd": format_usd(price)},
        )


class InsufficientAmount(Refusal):
    """Less is left than was asked for; ``available`` (satoshis) is what is left."""

    code = "insufficient_amount"

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.available = _sats((details or {}).get("available_btc"))

    @classmethod
    def left(cls, offer_id: str, wanted: int, available: int) -> InsufficientAmount:
        return cls(
            f"bid for {format_btc(wanted)} BTC, {format_btc(available)} left",
            {"offer_id": offer_id, "available_btc": format_btc(available)},
        )


class DuplicateBid(Refusal):
    code = "duplicate_bid"


class BelowMinimum(Refusal):
    """A bid (or a manual accept) for less than the offer's smallest take."""

    code = "below_minimum"

    @classmethod
    def of(cls, offer_id: str, wanted: int, least: int) -> BelowMinimum:
        return cls(
            f"bid for {format_btc(wanted)} BTC; the offer takes at least {format_btc(least)} BTC",
            {"offer_id": offer_id, "min_amount_btc": format_btc(least)},
        )


class BidRejected(Refusal):
    """The owner of a manual offer rejected the pending bid."""

    code = "bid_rejected"


class PendingExpired(Refusal):
    """A pending bid on a manual offer was neither accepted nor rejected in time."""

    code = "pending_expired"


class ManualOffer(Refusal):
    """An order or uncrossing met a manual offer: only its owner's accept fills one."""

    code = "manual_offer"


class BidNotPending(Refusal):
    """Accept or reject of a bid that is decided already (``details.status`` says how)."""

    code = "bid_not_pending"


class SelfCross(Refusal):
    """An offer of ours would cross our own resting offers (``details.offers`` names them)."""

    code = "self_cross"

    @classmethod
    def of(cls, side: str, price: int, offer_ids: list[str]) -> SelfCross:
        return cls(
            f"a {side} at {format_usd(price)} would cross this node's own resting offers "
            f'{", ".join(offer_ids)}; send "stp": "cancel_resting" to cancel them first',
            {"offers": offer_ids},
        )


class OwnOffer(Refusal):
    code = "own_offer"


# -- another node (or the DHT) did not answer usefully ----------------------------------------


class PeerFailure(DomainError):
    code = "peer_failure"


class OwnerUnreachable(PeerFailure):
    code = "owner_unreachable"


class BadReceipt(PeerFailure):
    code = "bad_receipt"


class BidInDoubt(PeerFailure):
    """The bid may have been filled: no answer came, and it is kept as in doubt."""

    code = "bid_in_doubt"

    def __init__(
        self, message: str, details: Mapping[str, Any] | None = None, bid: Bid | None = None
    ) -> None:
        super().__init__(message, details)
        self.bid = bid

    @classmethod
    def of(cls, bid: Bid) -> BidInDoubt:
        return cls(
            f"no answer from the owner of offer {bid.offer_id}; the bid may have been filled",
            {"bid_id": bid.bid_id, "offer_id": bid.offer_id, "amount_btc": format_btc(bid.amount)},
            bid,
        )


class RemoteError(PeerFailure):
    """Another node answered with a code this node does not know."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.remote_code = code


class DhtUnavailable(DomainError):
    code = "dht_unavailable"


class TooManyClients(DomainError):
    """Every event stream slot (``GET /events``) is taken: each holds a server thread."""

    code = "too_many_clients"


class Internal(DomainError):
    """A bug: logged with its traceback where it happened, answered without one."""

    code = "internal"


def _sats(text: object) -> int | None:
    try:
        return parse_btc(text) if isinstance(text, str) else None
    except MoneyError:
        return None
