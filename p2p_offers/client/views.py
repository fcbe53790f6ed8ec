"""What the trading commands print for a person: the API's replies as text.

Pure functions of the replies (no I/O), so the commands and ``watch`` share them
and tests can read them without a node.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from p2p_offers.client import render


def book_text(book: dict[str, Any]) -> str:
    """A price ladder: asks from the highest down, the spread, bids from the highest down."""
    asks, bids = book.get("asks", []), book.get("bids", [])
    rows: list[list[Any]] = [
        ["ask", a["price_usd"], a["amount_btc"], a["count"]] for a in reversed(asks)
    ]
    rows.append(["", "", "", ""])
    rows += [["bid", b["price_usd"], b["amount_btc"], b["count"]] for b in bids]
    text = render.table(rows, ["side", "price_usd", "amount_btc", "offers"])
    lines = text.split("\n")
    gap = 1 + len(asks)
    lines[gap] = f"  {spread(asks, bids)}"
    if not asks and not bids:
        return "the book is empty"
    return "\n".join(lines)


def spread(asks: list[dict[str, Any]], bids: list[dict[str, Any]]) -> str:
    if not asks or not bids:
        return "-- no spread: one side is empty --"
    try:
        gap = Decimal(asks[0]["price_usd"]) - Decimal(bids[0]["price_usd"])
    except (InvalidOperation, KeyError, TypeError):
        return "--"
    return f"-- spread {gap} USD --" if gap >= 0 else f"-- crossed by {-gap} USD --"


def offers_text(offers: list[dict[str, Any]], me: str | None) -> str:
    if not offers:
        return "no offers"
    rows = [
        [
            o["id"],
            o["side"],
            o["price_usd"],
            o["amount_btc"],
            o["status"],
            render.short(o["owner"], me),
            render.clock(o["expires"]),
        ]
        for o in offers
    ]
    return render.table(
        rows, ["id", "side", "price_usd", "amount_btc", "status", "owner", "expires"]
    )


def offer_text(offer: dict[str, Any], me: str | None = None) -> str:
    pairs: list[tuple[str, Any]] = [
        ("id", offer["id"]),
        ("side", offer["side"]),
        ("price_usd", offer["price_usd"]),
        ("amount_btc", offer["amount_btc"]),
        ("status", offer["status"]),
        ("owner", offer["owner"] + (" (this node)" if offer["owner"] == me else "")),
        ("parent", offer.get("parent")),
        ("seq", offer["seq"]),
        ("created", render.clock(offer["created"])),
        ("expires", render.clock(offer["expires"])),
    ]
    fill = offer.get("fill")
    if fill:
        pairs += [
            ("filled_btc", fill["amount_btc"]),
            ("taker", fill["taker"]),
            ("remainder", fill.get("remainder")),
        ]
    text = render.fields(pairs)
    history = offer.get("history")
    if history:
        rows = [
            [v["seq"], v["status"], v["price_usd"], v["amount_btc"], render.clock(v["expires"])]
            for v in history
        ]
        text += "\n\n" + render.table(rows, ["seq", "status", "price_usd", "amount_btc", "expires"])
    return text


def receipt_text(r: dict[str, Any]) -> str:
    return render.fields(
        [
            ("filled", f"{r['amount_btc']} BTC at {r['price_usd']} USD"),
            ("offer", r["offer_id"]),
            ("remainder", r.get("remainder") or "none (the offer is used up)"),
            ("maker", r["maker"]),
            ("taker", r["taker"]),
            ("fill_id", r["fill_id"]),
            ("time", render.clock(r["ts"])),
        ]
    )


def order_text(order: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [
        ("id", order["id"]),
        ("status", order["status"]),
        ("side", order["side"]),
        ("price_usd", order["price_usd"]),
        ("amount_btc", order["amount_btc"]),
        ("tif", order["tif"]),
        ("rests_as", order["offer"]["id"] if order.get("offer") else None),
    ]
    if order.get("offer"):
        pairs.append(("rest_btc", f"{order['offer']['amount_btc']} ({order['offer']['status']})"))
    text = render.fields(pairs)
    if order.get("fills"):
        text += "\n\nfills\n" + trades_text(order["fills"], None)
    if order.get("in_doubt"):
        rows = [[b["bid_id"], b["offer_id"], b["amount_btc"]] for b in order["in_doubt"]]
        text += "\n\nin doubt (sent, not answered yet; resent until settled)\n"
        text += render.table(rows, ["bid_id", "offer_id", "amount_btc"])
    return text


def orders_text(orders: list[dict[str, Any]]) -> str:
    if not orders:
        return "no orders"
    rows = [
        [
            o["id"],
            o["side"],
            o["price_usd"],
            o["amount_btc"],
            o["tif"],
            o["status"],
            len(o["fills"]),
            o["offer"]["id"] if o.get("offer") else "",
        ]
        for o in orders
    ]
    header = ["id", "side", "price_usd", "amount_btc", "tif", "status", "fills", "rests_as"]
    return render.table(rows, header)


def trades_text(trades: list[dict[str, Any]], me: str | None) -> str:
    if not trades:
        return "no trades"
    rows = [
        [
            render.clock(t["ts"]),
            t["price_usd"],
            t["amount_btc"],
            render.short(t["maker"], me),
            render.short(t["taker"], me),
            t["offer_id"],
        ]
        for t in trades
    ]
    return render.table(rows, ["time", "price_usd", "amount_btc", "maker", "taker", "offer_id"])


def account_text(account: Any) -> str:
    """Any JSON object: scalars as fields, lists of objects as tables under their name."""
    scalars = [(k, v) for k, v in render.flatten(account) if not _is_rows(v)]
    parts = [render.fields(scalars)] if scalars else []
    for key, value in render.flatten(account):
        if _is_rows(value):
            header = list(dict.fromkeys(k for row in value for k in row))
            rows = [[_cell(row.get(h)) for h in header] for row in value]
            parts.append(f"{key}\n" + render.table(rows, header))
    return "\n\n".join(parts) or "(empty)"


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _cell(value: Any) -> Any:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else value
