"""The trading commands of ``p2p-offers``: book, offers, offer, bid, order, trades, account, watch.

Each talks to one node's REST API (``--node``, default ``$P2P_OFFERS_NODE`` or
127.0.0.1:4000) and prints aligned tables for a person or, with ``--json``,
the API's JSON for a script. Exit codes: 0 done, 1 the node refused (its error
code and message on stderr), 2 a usage error, 3 the node cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from p2p_offers.client import render
from p2p_offers.client.api import ApiError, NodeApi, Unreachable, node_url
from p2p_offers.client.sse import EventSource, ServerEvent, StreamRefused
from p2p_offers.client.views import (
    account_text,
    book_text,
    offer_text,
    offers_text,
    order_text,
    orders_text,
    receipt_text,
    trades_text,
)

OK, API_ERROR, USAGE, UNREACHABLE = 0, 1, 2, 3
COMMANDS = ("book", "offers", "offer", "bid", "order", "trades", "account", "watch")
DEFAULT_NODE = "http://127.0.0.1:4000"
WATCH_TRADES = 10  # trades ``watch`` keeps on screen
REDRAW_S = 0.2  # ``watch`` redraws at most this often while events pour in


class Usage(Exception):
    """A usage error found after parsing (exit 2)."""


# -- the parser -----------------------------------------------------------------------------


def add_commands(sub: Any) -> None:
    """Add the trading commands to ``p2p-offers``' subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--node",
        default=os.environ.get("P2P_OFFERS_NODE", DEFAULT_NODE),
        help="the node's URL, host:port or port (default $P2P_OFFERS_NODE or %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    common.add_argument(
        "--token",
        default=os.environ.get("P2P_OFFERS_API_TOKEN"),
        help="bearer token for placing and changing (default $P2P_OFFERS_API_TOKEN)",
    )
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request")

    def leaf(parent: Any, name: str, help_: str, run: Callable[..., int]) -> Any:
        p = parent.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(client_run=run)
        return p

    p = leaf(sub, "book", "the book: depth per price level, asks over bids", cmd_book)
    p.add_argument("--levels", type=int, help="price levels per side")

    p = leaf(sub, "offers", "offers this node knows (open ones: the network's book)", cmd_offers)
    p.add_argument("--side", choices=("buy", "sell"))
    p.add_argument("--status", choices=("open", "filled", "cancelled"), default="open")
    p.add_argument("--all", action="store_true", help="any status (also recently closed)")
    p.add_argument("--owner", help="only this owner's (a public key)")
    p.add_argument("--mine", action="store_true", help="only this node's own")
    p.add_argument("--limit", type=int)

    offer = sub.add_parser("offer", help="place, show, change or cancel one offer")
    actions = offer.add_subparsers(dest="action", required=True, metavar="ACTION")
    for side in ("buy", "sell"):
        p = leaf(actions, side, f"place an offer to {side}: PRICE_USD AMOUNT_BTC", cmd_offer_place)
        p.add_argument("price_usd")
        p.add_argument("amount_btc")
        p.add_argument("--ttl", type=int, help="lifetime between refreshes, s")
        p.set_defaults(side=side)
    p = leaf(actions, "show", "one offer and the versions the node has seen", cmd_offer_show)
    p.add_argument("offer_id")
    p = leaf(actions, "update", "change an open offer's price and/or amount", cmd_offer_update)
    p.add_argument("offer_id")
    p.add_argument("--price", dest="price_usd")
    p.add_argument("--amount", dest="amount_btc")
    p = leaf(actions, "cancel", "cancel an open offer", cmd_offer_cancel)
    p.add_argument("offer_id")

    p = leaf(sub, "bid", "bid on another node's offer: OFFER_ID AMOUNT_BTC", cmd_bid)
    p.add_argument("offer_id")
    p.add_argument("amount_btc")

    order = sub.add_parser("order", help="place, show or list orders")
    actions = order.add_subparsers(dest="action", required=True, metavar="ACTION")
    for side in ("buy", "sell"):
        p = leaf(actions, side, f"a limit order to {side}: PRICE_USD AMOUNT_BTC", cmd_order_place)
        p.add_argument("price_usd")
        p.add_argument("amount_btc")
        p.add_argument("--tif", choices=("gtc", "ioc"), default="gtc")
        p.set_defaults(side=side)
    p = leaf(actions, "show", "one order", cmd_order_show)
    p.add_argument("order_id")
    p = leaf(actions, "list", "this node's orders, newest first", cmd_order_list)
    p.add_argument("--limit", type=int)

    p = leaf(sub, "trades", "trades in every ledger the node holds, newest first", cmd_trades)
    p.add_argument("--owner", help="only this maker's")
    p.add_argument("--mine", action="store_true", help="only those this node made or took")
    p.add_argument("--limit", type=int, default=50)

    leaf(sub, "account", "this node's balances and open positions (GET /account)", cmd_account)

    p = leaf(sub, "watch", "follow the book and the trades live (GET /events)", cmd_watch)
    p.add_argument("--levels", type=int, default=10, help="price levels per side")
    p.add_argument("--count", type=int, help="stop after this many events (scripts, tests)")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run a parsed trading command; its exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        api = NodeApi(node_url(args.node), args.token, args.timeout)
        code: int = args.client_run(api, args, out)
        return code
    except (Usage, ValueError) as exc:
        print(f"p2p-offers: {exc}", file=err)
        return USAGE
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=err)
        for line in _detail_lines(exc.details):
            print(f"  {line}", file=err)
        return API_ERROR
    except Unreachable as exc:
        print(f"error: {exc}", file=err)
        return UNREACHABLE
    except KeyboardInterrupt:
        return OK


def _detail_lines(details: dict[str, Any] | None) -> Iterator[str]:
    if not details:
        return
    problems = details.get("fields")
    if isinstance(problems, list):
        for p in problems:
            if isinstance(p, dict):
                yield f"{p.get('field')}: {p.get('message')}"
        details = {k: v for k, v in details.items() if k != "fields"}
    for key, value in render.flatten(details):
        yield f"{key}: {value}"


def _emit(args: argparse.Namespace, out: TextIO, data: Any, text: Callable[[], str]) -> int:
    print(json.dumps(data, indent=2) if args.json else text(), file=out)
    return OK


def _positive(value: int | None, name: str) -> int | None:
    if value is not None and value < 1:
        raise Usage(f"{name} must be at least 1")
    return value


# -- commands -------------------------------------------------------------------------------


def cmd_book(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    book = api.get("/book", levels=_positive(args.levels, "--levels"))
    return _emit(args, out, book, lambda: book_text(book))


def _me(api: NodeApi) -> str:
    client_id: str = api.get("/health")["client_id"]
    return client_id


def cmd_offers(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    me = _me(api)
    owner = me if args.mine else args.owner
    data = api.get(
        "/offers",
        side=args.side,
        status=None if args.all else args.status,
        owner=owner,
        limit=_positive(args.limit, "--limit"),
    )
    return _emit(args, out, data, lambda: offers_text(data["offers"], me))


def cmd_offer_place(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    body: dict[str, Any] = {
        "side": args.side,
        "price_usd": args.price_usd,
        "amount_btc": args.amount_btc,
    }
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    offer = api.post("/offers", body)
    return _emit(args, out, offer, lambda: offer_text(offer, offer["owner"]))


def cmd_offer_show(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    offer = api.get(f"/offers/{_segment(args.offer_id)}")
    return _emit(args, out, offer, lambda: offer_text(offer, _me(api)))


def cmd_offer_update(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    body = {k: getattr(args, k) for k in ("price_usd", "amount_btc") if getattr(args, k)}
    if not body:
        raise Usage("offer update: give --price, --amount or both")
    offer = api.call("PATCH", f"/offers/{_segment(args.offer_id)}", body)
    return _emit(args, out, offer, lambda: offer_text(offer, offer["owner"]))


def cmd_offer_cancel(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    offer = api.call("DELETE", f"/offers/{_segment(args.offer_id)}")
    return _emit(args, out, offer, lambda: offer_text(offer, offer["owner"]))


def cmd_bid(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    receipt = api.post(f"/offers/{_segment(args.offer_id)}/bids", {"amount_btc": args.amount_btc})
    return _emit(args, out, receipt, lambda: receipt_text(receipt))


def cmd_order_place(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    body = {
        "side": args.side,
        "price_usd": args.price_usd,
        "amount_btc": args.amount_btc,
        "tif": args.tif,
    }
    order = api.post("/orders", body)
    return _emit(args, out, order, lambda: order_text(order))


def cmd_order_show(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    order = api.get(f"/orders/{_segment(args.order_id)}")
    return _emit(args, out, order, lambda: order_text(order))


def cmd_order_list(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    data = api.get("/orders", limit=_positive(args.limit, "--limit"))
    return _emit(args, out, data, lambda: orders_text(data["orders"]))


def cmd_trades(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    me = _me(api)
    limit = _positive(args.limit, "--limit")
    data = api.get("/trades", owner=args.owner, limit=None if args.mine else limit)
    if args.mine:
        mine = [t for t in data["trades"] if me in (t["maker"], t["taker"])]
        data = {"trades": mine[:limit] if limit else mine}
    return _emit(args, out, data, lambda: trades_text(data["trades"], me))


def cmd_account(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    try:
        account = api.get("/account")
    except ApiError as exc:
        if exc.status == 404 and (exc.details or {}).get("path") == "/account":
            raise ApiError(
                404,
                exc.code,
                f"this node has no GET /account (it predates the account view): {exc.message}",
                exc.details,
            ) from None
        raise
    return _emit(args, out, account, lambda: account_text(account))


# -- watch ----------------------------------------------------------------------------------


def cmd_watch(api: NodeApi, args: argparse.Namespace, out: TextIO) -> int:
    """The book redrawn as it changes, and trades as they happen, from ``GET /events``.

    A reader thread follows the stream (reconnecting with Last-Event-ID); this
    thread refetches the book when a ``book`` event (or a ``reset``) says it
    changed, at most every ``REDRAW_S``, so a burst costs one fetch.
    """
    levels = _positive(args.levels, "--levels")
    count = _positive(args.count, "--count")
    source = EventSource(api.base_url, timeout=max(args.timeout, 30.0), session=api.session)
    inbox: queue.Queue[ServerEvent | Exception | None] = queue.Queue()
    reader = threading.Thread(target=_follow, args=(source, inbox), daemon=True)
    reader.start()
    screen = Screen(out, levels, tty=not args.json and out.isatty())
    seen = 0
    dirty, last_draw = False, 0.0  # the first draw follows the stream's hello
    try:
        while count is None or seen < count:
            if dirty and time.monotonic() - last_draw >= REDRAW_S and not args.json:
                screen.book = api.get("/book", levels=levels)
                screen.draw()
                dirty, last_draw = False, time.monotonic()
            try:
                item = inbox.get(timeout=REDRAW_S)
            except queue.Empty:
                continue
            if item is None:
                return OK
            if isinstance(item, StreamRefused):
                return _refused(item)
            if isinstance(item, Exception):
                raise Unreachable(f"lost the node at {api.base_url}: {item}")
            if item.type in ("book", "fill", "trade"):
                seen += 1
            if args.json:
                print(
                    json.dumps({"id": item.id, "event": item.type, "data": item.json()}), file=out
                )
                out.flush()
                continue
            if item.type in ("book", "reset", "hello"):
                dirty = True
            elif item.type == "trade":
                screen.trade(item.json()["trade"])
        if not args.json:  # the last events' effect on the book, then stop
            screen.book = api.get("/book", levels=levels)
            screen.draw()
        return OK
    finally:
        source.close()


def _refused(exc: StreamRefused) -> int:
    try:
        error = exc.response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise Unreachable(str(exc)) from None
    raise ApiError(exc.response.status_code, error["code"], error["message"], error.get("details"))


def _follow(source: EventSource, inbox: queue.Queue[ServerEvent | Exception | None]) -> None:
    try:
        for event in source:
            inbox.put(event)
        inbox.put(None)
    except Exception as exc:  # first connection refused or unreachable: the main thread says
        inbox.put(exc)


class Screen:
    """What ``watch`` shows: redrawn in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO, levels: int | None, tty: bool) -> None:
        self.out = out
        self.levels = levels
        self.tty = tty
        self.book: dict[str, Any] = {"asks": [], "bids": []}
        self.trades: list[dict[str, Any]] = []

    def trade(self, trade: dict[str, Any]) -> None:
        self.trades = [trade, *self.trades][:WATCH_TRADES]
        if self.tty:
            self.draw()
        else:
            line = f"trade {trade['amount_btc']} BTC at {trade['price_usd']} USD"
            print(f"{line} ({render.clock(trade['ts'])}, offer {trade['offer_id']})", file=self.out)
            self.out.flush()

    def draw(self) -> None:
        text = book_text(self.book)
        if self.tty:
            trades = trades_text(self.trades, None) if self.trades else "no trades yet"
            stamp = time.strftime("%H:%M:%S")
            self.out.write(f"\x1b[H\x1b[2J{stamp}  (Ctrl-C to stop)\n\n{text}\n\n{trades}\n")
        else:
            self.out.write(f"{text}\n\n")
        self.out.flush()


def _segment(text: str) -> str:
    """An id as one path segment: anything that would change the path is refused here."""
    if not text or any(c in text for c in "/?#%") or text in (".", ".."):
        raise Usage(f"not an id: {text!r}")
    return text
