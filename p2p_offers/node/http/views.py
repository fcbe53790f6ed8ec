"""Replies as JSON-ready dicts, built directly (not through the models) for speed.

The node serves thousands of offers per page; a test checks that every view
validates against its response model in ``schemas``, so the two cannot drift.
Money leaves as decimal strings, exactly.
"""

from __future__ import annotations

from typing import Any

from p2p_offers import money
from p2p_offers.bids import Bid, Receipt
from p2p_offers.node.network.index import Version
from p2p_offers.node.storage.pending import ManualBid
from p2p_offers.node.storage.receipts import StoredFill
from p2p_offers.node.trading.order import Order
from p2p_offers.offers import SignedOffer


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
        "accept": o.accept,
        "min_amount_btc": None if o.min_amount is None else money.format_btc(o.min_amount),
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


def manual_bid_view(m: ManualBid, receipt: Receipt | None = None) -> dict[str, Any]:
    b = m.bid
    return {
        "bid_id": b.bid_id,
        "offer_id": b.offer_id,
        "role": m.role,
        "status": m.status,
        "amount_btc": money.format_btc(b.amount),
        "price_usd": money.format_usd(b.price),
        "maker": b.maker,
        "taker": b.taker,
        "created": m.created,
        "expires": m.expires,
        "accepted_btc": None if m.accepted is None else money.format_btc(m.accepted),
        "receipt": None if receipt is None else receipt_view(receipt),
    }


def offer_fill_view(role: str, record: str, r: Receipt) -> dict[str, Any]:
    """One fill an offer made: ``record`` (the offer's record it traded for) as ``role``."""
    return {"role": role, "record": record, **receipt_view(r)}


def own_fill_view(fill: StoredFill) -> dict[str, Any]:
    return offer_fill_view(fill.role, fill.record or fill.receipt.offer_id, fill.receipt)


def usd_e10(units: int) -> str:
    """USD held as units of 1e-10 (an amount times a price), exactly: 2 to 10 decimals."""
    whole, frac = divmod(abs(units), 10**10)
    digits = f"{frac:010d}".rstrip("0").ljust(2, "0")
    return f"{'-' if units < 0 else ''}{whole}.{digits}"


def account_fill_view(fill: StoredFill, side: str | None) -> dict[str, Any]:
    return {**receipt_view(fill.receipt), "side": side, "for_offer": fill.for_offer}


def level_view(level: tuple[int, int, int]) -> dict[str, Any]:
    price, amount, count = level
    return {
        "price_usd": money.format_usd(price),
        "amount_btc": money.format_btc(amount),
        "count": count,
    }


def in_doubt_view(b: Bid) -> dict[str, Any]:
    return {"bid_id": b.bid_id, "offer_id": b.offer_id, "amount_btc": money.format_btc(b.amount)}


def order_view(order: Order, offer: SignedOffer | None) -> dict[str, Any]:
    """``order`` with ``offer``: the offer its rest was posted as, as it is now."""
    return {
        "id": order.id,
        "side": order.side,
        "price_usd": money.format_usd(order.price),
        "amount_btc": money.format_btc(order.amount),
        "tif": order.tif,
        "status": order.status,
        "fills": [receipt_view(r) for r in order.fills],
        "offer": offer_view(offer) if offer is not None else None,
        "in_doubt": [in_doubt_view(b) for b in order.in_doubt],
    }
