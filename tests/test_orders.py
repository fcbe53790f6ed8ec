"""Orders, uncrossing and the ledger in process (Flask test client, real grape).

What is exact and cheap to pin down without a network of nodes lives here (the
one node talks to a shared real grape): order validation and statuses, the
sweep's moving on after lost races, which offers uncrossing must act on, the
maker's feed written in the fill's transaction, and a lying peer's forged,
forked and gapped feeds being refused. The same behaviour across real node
processes is in test_orders_network.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from nacl.signing import SigningKey
from node_helpers import Clock, announcement, foreign_offer, local_node, wait_until

from p2p_offers import bids, ledger
from p2p_offers.book import Book, Entry, Tif
from p2p_offers.codec import canonical_json
from p2p_offers.fields import new_id
from p2p_offers.ledger import Feed
from p2p_offers.money import format_btc
from p2p_offers.node import errors
from p2p_offers.node.http import exchange_schemas as exchange_api
from p2p_offers.node.http import schemas as models
from p2p_offers.node.ledger.head import parse_head, sign_head
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.peers import rest_owner_service
from p2p_offers.node.storage.database import Database
from p2p_offers.node.storage.orders import Orders
from p2p_offers.node.storage.receipts import Role, StoredFill
from p2p_offers.node.trading.desk import OrderDesk
from p2p_offers.node.trading.order import Order
from p2p_offers.node.trading.sweeper import Sweeper
from p2p_offers.node.trading.uncross import Uncrosser, crossed, newer
from p2p_offers.records import Record, RecordError
from p2p_offers.records import sign as sign_record
from p2p_offers.signing import public_hex, sign_doc

TAKER = Role.TAKER

OTHER = SigningKey(b"\x07" * 32)
BUYER = SigningKey(b"\x08" * 32)
EVIL = SigningKey(b"\x09" * 32)


@pytest.fixture
def env(grape_url, tmp_path) -> Iterator[tuple[Any, Any, Any, Clock]]:
    clock = Clock()
    client, node, link = local_node(grape_url, tmp_path, clock)
    node.desk.start()
    yield client, node, link, clock
    node.desk.stop()
    node.stop()


def order(client: Any, status: int = 201, **body: Any) -> dict:
    resp = client.post(
        "/orders", json={"side": "buy", "price_usd": "30000", "amount_btc": "0.5", **body}
    )
    assert resp.status_code == status, resp.json
    if status < 300:
        exchange_api.OrderOut.model_validate(resp.json)
    return resp.json


def offer_of(client: Any, side: str = "sell", price: str = "30000", amount: str = "1") -> dict:
    resp = client.post("/offers", json={"side": side, "price_usd": price, "amount_btc": amount})
    assert resp.status_code == 201, resp.json
    return resp.json


def peer_bid(node: Any, offer: dict, amount: int) -> dict:
    bid = bids.make_bid(
        BUYER,
        offer_id=offer["id"],
        offer_seq=offer["seq"],
        maker=node.client_id,
        amount=amount,
        price=int(offer["price_usd"].replace(".", "")),
        now_ms=node.clock(),
    )
    return bid.to_wire()


# -- orders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, field",
    [
        ({"side": "hold"}, "side"),
        ({"price_usd": "1.001"}, "price_usd"),
        ({"amount_btc": "0"}, "amount_btc"),
        ({"tif": "fok"}, "tif"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_orders_reject_bad_input_naming_the_field(env, body: dict, field: str) -> None:
    resp = env[0].post("/orders", json={"side": "buy", "price_usd": "1", "amount_btc": "1", **body})
    assert resp.status_code == 400
    assert field in {d["field"] for d in resp.json["error"]["details"]["fields"]}


def test_order_with_nothing_to_cross_rests_gtc_and_drops_ioc(env) -> None:
    client = env[0]
    gtc = order(client, amount_btc="0.25")
    assert (gtc["status"], gtc["fills"], gtc["tif"]) == ("resting", [], "gtc")
    assert gtc["offer"]["status"] == "open" and gtc["offer"]["amount_btc"] == "0.25000000"
    assert gtc["offer"]["side"] == "buy" and gtc["offer"]["price_usd"] == "30000.00"

    ioc = order(client, tif="ioc", side="sell", price_usd="40000")
    assert (ioc["status"], ioc["fills"], ioc["offer"]) == ("cancelled", [], None)

    assert client.get(f"/orders/{gtc['id']}").json == gtc
    listed = client.get("/orders").json
    exchange_api.OrderList.model_validate(listed)
    assert [o["id"] for o in listed["orders"]] == [gtc["id"], ioc["id"]] or {
        o["id"] for o in listed["orders"]
    } == {gtc["id"], ioc["id"]}  # same millisecond on the fake clock: any order
    assert client.get(f"/orders/{new_id()}").status_code == 404


def test_order_never_trades_with_own_offers_and_moves_past_an_unreachable_owner(env) -> None:
    client, node, _, clock = env
    own = offer_of(client, price="29000")
    stranger = SigningKey.generate()  # never announced, in the shared grape or anywhere
    foreign = foreign_offer(stranger, clock.now)  # sells 1 BTC at 30000
    client.post("/peer/announce", json=announcement(foreign))

    # IOC: a GTC rest at 31000 would cross our own ask (#10.2: refused self_cross)
    placed = order(client, price_usd="31000", amount_btc="0.4", tif="ioc")
    assert placed["status"] == "cancelled" and placed["fills"] == []
    assert node.sweeper.stats() == {"failed_owner_unreachable": 1}
    assert client.get(f"/offers/{own['id']}").json["status"] == "open"  # untouched
    assert node.receipts.all() == []


def test_an_order_the_node_cannot_wait_for_is_answered_202_and_finishes_later(
    grape_url, tmp_path
) -> None:
    client, node, _ = local_node(grape_url, tmp_path)
    desk = node.desk
    desk.wait_s = 0.01  # and no worker yet: the order stays queued
    try:
        queued = order(client, status=202)
        assert queued["status"] == "pending" and queued["fills"] == []
        exchange_api.OrderOut.model_validate(queued)
        assert client.get(f"/orders/{queued['id']}").json["status"] == "pending"
        assert [o["id"] for o in client.get("/orders").json["orders"]] == [queued["id"]]
        assert desk.orders.get(queued["id"]) is not None  # its id was given out: on disk
        desk.start()
        wait_until(
            lambda: client.get(f"/orders/{queued['id']}").json["status"] == "resting", 5, "it"
        )
        assert desk.orders.get(queued["id"]).status == "resting"
    finally:
        desk.stop()
        node.stop()


def test_pending_orders_are_closed_when_the_node_restarts(grape_url, tmp_path) -> None:
    client, node, _ = local_node(grape_url, tmp_path)
    cut = Order(new_id(), "buy", 100, 1000, "gtc", node.clock())
    node.orders.save(cut)
    node.stop()
    client, node, _ = local_node(grape_url, tmp_path)
    node.desk.start()
    try:
        got = client.get(f"/orders/{cut.id}").json
        assert (got["status"], got["offer"]) == ("cancelled", None)
    finally:
        node.desk.stop()
        node.stop()


# -- the sweep ---------------------------------------------------------------------------------


class ScriptedTaker:
    """Stands in for ``Taker``: answers each bid from a script of errors, else fills it.

    Like a real owner, the receipt leaves a remainder when the bid takes less than
    the offer holds (as ``index`` shows it).
    """

    def __init__(
        self, script: dict[str, list[errors.DomainError]], index: OfferIndex | None = None
    ) -> None:
        self.script = script
        self.index = index
        self.calls: list[tuple[str, int]] = []

    def bid(self, offer_id: str, amount: int, for_offer: str | None = None) -> bids.Receipt:
        self.calls.append((offer_id, amount))
        queue = self.script.get(offer_id, [])
        if queue:
            raise queue.pop(0)
        bid = bids.make_bid(
            BUYER, offer_id=offer_id, offer_seq=1, maker=public_hex(OTHER), amount=amount,
            price=1, now_ms=1,
        )  # fmt: skip
        held = self.index.get(offer_id) if self.index else None
        rest = held is not None and amount < held.signed.offer.amount
        return bids.make_receipt(
            OTHER, bid, offer_id=offer_id, remainder=new_id() if rest else None, now_ms=1
        )


def sells(clock: Clock, *terms: tuple[int, int, int]) -> tuple[OfferIndex, list[str]]:
    """An index holding OTHER's sells, each (price, amount, priority)."""
    index = OfferIndex(clock)
    ids = []
    for price, amount, priority in terms:
        rec = foreign_offer(OTHER, clock.now, price=price, amount=amount, priority=priority)
        assert index.apply(rec) == "applied"
        ids.append(rec.id)
    return index, ids


def test_sweep_moves_on_after_lost_races_and_never_retries_a_loser() -> None:
    clock = Clock()
    index, (best, second, third) = sells(
        clock, (100, 1000, clock.now), (101, 1000, clock.now), (102, 5000, clock.now)
    )
    taker = ScriptedTaker(
        {
            best: [errors.OfferTaken("gone")],
            second: [
                errors.InsufficientAmount("less", {"available_btc": format_btc(400)}),
            ],
        },
        index,
    )
    sweeper = Sweeper(public_hex(BUYER), index, taker)  # type: ignore[arg-type]
    receipts, left = sweeper.take("buy", 102, 1500)
    # best lost -> second (only 400 left there) -> third for the rest, re-planned
    assert taker.calls == [(best, 1000), (second, 500), (second, 400), (third, 1100)]
    assert [r.amount for r in receipts] == [400, 1100] and left == 0
    # the loser is cooling down, and second was used up: a new sweep goes to neither at once
    taker.calls.clear()
    sweeper.take("buy", 102, 100)
    assert taker.calls == [(third, 100)]


def test_a_used_up_maker_is_skipped_by_the_next_sweeps_until_our_book_hears() -> None:
    clock = Clock()
    index, (ask,) = sells(clock, (100, 1000, clock.now))
    taker = ScriptedTaker({}, index)
    sweeper = Sweeper(public_hex(BUYER), index, taker)  # type: ignore[arg-type]
    _, left = sweeper.take("buy", 100, 1000)
    assert taker.calls == [(ask, 1000)] and left == 0
    # Our book still lists the ask (the maker's filled version has not arrived yet).
    # A new sweep, as uncrossing runs right after an order rests, must not bid on it.
    taker.calls.clear()
    _, left = sweeper.take("buy", 100, 500)
    assert taker.calls == [] and left == 500


def test_sweep_respects_limit_and_filter_and_stops_when_nothing_crosses() -> None:
    clock = Clock()
    index, (cheap, dear) = sells(clock, (100, 1000, 5), (200, 1000, 1))
    taker = ScriptedTaker({})
    sweeper = Sweeper(public_hex(BUYER), index, taker)  # type: ignore[arg-type]
    _, left = sweeper.take("buy", 150, 5000)  # only the cheap one crosses
    assert taker.calls == [(cheap, 1000)] and left == 4000
    taker.calls.clear()
    _, left = sweeper.take("buy", 300, 1500, eligible=lambda e: e.priority < 3)
    assert taker.calls == [(dear, 1000)] and left == 500


class WritesKept(Orders):
    """The real repository, keeping (status, satoshis filled) of every durable write."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.writes: list[tuple[str, int]] = []

    def save(self, order: Order) -> None:
        super().save(order)
        self.writes.append((order.status, order.filled))


@pytest.mark.parametrize(
    ("amount", "writes"),
    [
        (600, [("filled", 600)]),  # one fill completes it: written once, with its close
        (1500, [("pending", 1000), ("filled", 1500)]),  # the first fill is durable at once
        (2500, [("pending", 1000), ("pending", 2000), ("partial", 2000)]),  # IOC: rest dropped
    ],
)
def test_an_order_is_written_after_each_fill_but_the_completing_one_only_with_its_close(
    tmp_path, amount: int, writes: list[tuple[str, int]]
) -> None:
    clock = Clock()
    index, _ = sells(clock, (100, 1000, 1), (101, 1000, 2))
    sweeper = Sweeper(public_hex(BUYER), index, ScriptedTaker({}, index))  # type: ignore[arg-type]
    orders = WritesKept(Database(tmp_path / "node.db"))
    desk = OrderDesk(orders, None, sweeper, clock)  # type: ignore[arg-type]  # IOC: no rest
    desk.start()
    try:
        done = desk.submit("buy", 101, amount, Tif.IOC)
        assert done.done.is_set() and orders.writes == writes
        stored = orders.get(done.id)
        assert stored is not None and stored.filled == writes[-1][1] == done.filled
        assert stored.status == done.status == writes[-1][0]
    finally:
        desk.stop()
        orders.db.close()


# -- uncrossing --------------------------------------------------------------------------------

ME, THEM = "a" * 64, "b" * 64


def test_crossed_lists_only_our_offers_that_cross_an_older_foreign_one() -> None:
    book = Book()
    book.add(Entry("old-ask", "sell", 100, 10, priority=1, owner=THEM))
    book.add(Entry("new-bid", "buy", 105, 10, priority=2, owner=ME))  # newer: ours to act on
    book.add(Entry("old-bid", "buy", 101, 10, priority=0, owner=ME))  # older: theirs to act on
    book.add(Entry("own-ask", "sell", 90, 10, priority=3, owner=ME))  # crosses only our own bids
    book.add(Entry("far-bid", "buy", 50, 10, priority=9, owner=ME))  # crosses nothing
    assert [e.id for e in crossed(book, ME)] == ["new-bid"]
    assert [e.id for e in crossed(book, THEM)] == ["old-ask"]  # newer than our old bid
    assert crossed(book, ME, usable=lambda e: e.id != "old-ask") == []
    tie = Entry("x", "buy", 1, 1, priority=7, owner=ME)
    assert newer(tie, Entry("w", "sell", 1, 1, 7, THEM)) and not newer(
        tie, Entry("y", "sell", 1, 1, 7, THEM)
    )


def test_a_foreign_version_wakes_the_uncrossing_scan_only_if_it_crosses_one_of_ours() -> None:
    clock = Clock()
    index = OfferIndex(clock)
    ours = foreign_offer(BUYER, clock.now, side="buy", price=100, amount=1000)
    assert index.apply(ours) == "applied"
    uncrosser = Uncrosser(public_hex(BUYER), index, None, None, None)  # type: ignore[arg-type]

    def wakes(signed: Any) -> bool:
        uncrosser._wake.clear()
        uncrosser.on_applied(signed)
        return uncrosser._wake.is_set()

    above = foreign_offer(OTHER, clock.now, side="sell", price=101, amount=1000)
    at = foreign_offer(OTHER, clock.now, side="sell", price=100, amount=1000)
    assert not wakes(above) and wakes(at)
    assert not wakes(foreign_offer(OTHER, clock.now, side="buy", price=200, amount=1000))
    assert not wakes(foreign_offer(OTHER, clock.now, side="sell", price=1, status="filled"))


# -- our own feed --------------------------------------------------------------------------------


def test_every_fill_is_in_our_feed_and_trades_and_verify_show_it(env) -> None:
    client, node, _, _ = env
    offer = offer_of(client, amount="0.00010000")
    receipts = []
    for amount in (1000, 2500, 6500):
        resp = client.post("/peer/bids", json=peer_bid(node, offer, amount))
        assert resp.status_code == 201, resp.json
        receipts.append(resp.json)
    page = client.get(f"/peer/ledger/{node.client_id}?from=2&limit=5").json
    exchange_api.PeerLedgerPage.model_validate(page)
    assert page["height"] == 3 and [e["height"] for e in page["entries"]] == [2, 3]
    entries = client.get(f"/peer/ledger/{node.client_id}").json["entries"]
    feed = Feed(node.client_id)
    assert feed.extend(entries) == 3
    assert [e["receipt"] for e in entries] == receipts

    trades = client.get("/trades").json
    exchange_api.TradeList.model_validate(trades)
    assert [t["fill_id"] for t in trades["trades"]] == [r["fill_id"] for r in receipts][::-1]
    assert trades["trades"][0]["amount_btc"] == "0.00006500"
    assert client.get(f"/trades?owner={public_hex(OTHER)}").json == {"trades": []}
    assert len(client.get("/trades?limit=1").json["trades"]) == 1
    report = client.get("/ledger/verify").json
    exchange_api.LedgerVerifyOut.model_validate(report)
    assert report["ok"] and report["receipts"]["checked"] == 3
    assert report["feeds"] == [
        {"owner": node.client_id, "height": 3, "head": feed.head_hash, "ok": True}
    ]
    assert client.get("/peer/ledger").json["feeds"] == [
        {"owner": node.client_id, "height": 3, "head": feed.head_hash}
    ]


def test_a_fill_whose_entry_cannot_be_written_is_not_made(env, monkeypatch) -> None:
    """Receipt and entry share one transaction: no entry, no receipt, no fill."""
    client, node, _, _ = env
    offer = offer_of(client)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ledger, "append", broken)
    resp = client.post("/peer/bids", json=peer_bid(node, offer, 1000))
    assert resp.status_code == 500
    assert node.receipts.all() == [] and client.get("/trades").json == {"trades": []}
    assert client.get(f"/offers/{offer['id']}").json["status"] == "open"
    monkeypatch.undo()
    assert client.post("/peer/bids", json=peer_bid(node, offer, 1000)).status_code == 201
    assert client.get(f"/peer/ledger/{node.client_id}").json["height"] == 1


def test_head_records_are_believed_only_when_signed_and_well_formed(env) -> None:
    client = env[0]
    head = sign_head(EVIL, 3, "ab" * 32)
    assert parse_head(head.record) == head and head.seq == 3 and head.id == "ledger"
    forged = Record(v=head.record.v.replace(b"3", b"4"), k=head.record.k, salt=b"ledger",
                    seq=4, sig=head.record.sig)  # fmt: skip
    with pytest.raises(RecordError):
        parse_head(forged)
    for v, seq in ((b'{"head":"","height":1}', 1), (b'{"head":"x","height":2}', 3)):
        with pytest.raises(ValueError):
            parse_head(sign_record(EVIL, v, seq, b"ledger"))

    def announce(record: Record) -> dict:
        body = {"hash": record.hash, "record": record.to_json()}
        return client.post("/peer/announce", json=body).json["outcomes"]

    assert announce(forged) == {"forged": 1}
    assert announce(sign_record(EVIL, b'{"head":"","height":1}', 1, b"ledger")) == {"malformed": 1}
    assert announce(head.record) == {"applied": 1}  # news: a pull is queued
    assert announce(head.record) == {"stale": 1}  # ... once


# -- other feeds, from a lying peer ------------------------------------------------------------


class FeedServer:
    """A peer serving ``GET /peer/ledger/<owner>`` from whatever chain the test gives it.

    It is the node of ``key``, an owner made fresh for each test so that its name
    in the shared grape is announced by this server and no other.
    """

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.chains: dict[str, list[dict]] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                owner = path.rsplit("/", 1)[-1]
                params = dict(p.split("=") for p in query.split("&") if p)
                start = int(params.get("from", 1))
                chain = outer.chains.get(owner, [])
                entries = [e for e in chain if e["height"] >= start][: int(params.get("limit", 9))]
                body = json.dumps({"owner": owner, "height": len(chain), "entries": entries})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def evil(env) -> Iterator[FeedServer]:
    server = FeedServer()
    env[2].announce(rest_owner_service(public_hex(server.key)), server.port, "127.0.0.1")
    yield server
    server.close()


def chain_of(key: SigningKey, n: int, tag: str = "") -> list[dict]:
    feed = Feed(public_hex(key))
    out = []
    for i in range(n):
        bid = bids.make_bid(
            BUYER, offer_id=new_id(), offer_seq=1, maker=public_hex(key), amount=100 + i,
            price=5_000_000, now_ms=1_700_000_000_000 + i,
        )  # fmt: skip
        receipt = bids.make_receipt(key, bid, offer_id=bid.offer_id, remainder=None, now_ms=i)
        out.append(feed.append(key, receipt.to_wire(), i))
    return out


def announce_head(client: Any, key: SigningKey, chain: list[dict]) -> None:
    head = sign_head(key, len(chain), ledger.entry_hash(chain[-1]))
    client.post("/peer/announce", json={"hash": head.hash, "record": head.record.to_json()})


def test_feeds_are_pulled_from_their_owner_verified_and_served_on(env, evil) -> None:
    client, node, _, _ = env
    owner = public_hex(evil.key)
    evil.chains[owner] = chain_of(evil.key, 12)
    node.replicator.start(sync_interval_s=60)
    try:
        announce_head(client, evil.key, evil.chains[owner])
        wait_until(lambda: node.replicator.height(owner) == 12, 5, "the pull")
    finally:
        node.replicator.stop()
    served = client.get(f"/peer/ledger/{owner}?from=1").json["entries"]
    assert served == evil.chains[owner]  # byte-for-byte what the owner signed
    assert len(client.get(f"/trades?owner={owner}").json["trades"]) == 12
    assert client.get("/ledger/verify").json["ok"]
    assert node.replicator.stats()["pulled"] == 12


def test_forked_gapped_and_forged_feeds_are_refused(env, evil) -> None:
    client, node, _, _ = env
    feeds = node.replicator
    key = evil.key
    owner = public_hex(key)
    honest = chain_of(key, 3)
    evil.chains[owner] = honest[:2]
    assert feeds.catch_up(owner, 2) == 2

    # a forged entry (signature does not match) at the next height: refused, not a fork
    forged = {**honest[2], "ts": honest[2]["ts"] + 1}
    assert feeds.accept(owner, [forged]) == 0
    # a batch that skips a height
    assert feeds.accept(owner, [chain_of(key, 5)[4]]) == 0
    # junk at a held height that its owner never signed: not proof of anything
    assert feeds.accept(owner, [{**honest[1], "ts": 99}]) == 0
    assert feeds.stats() | {"pulled": 0} == {
        "pulled": 0, "forks": 0, "gaps": 1, "invalid": 2, "head_mismatch": 0, "forked_feeds": 0,
    }  # fmt: skip

    # the owner signs another history from height 2 on and announces it: a proven fork
    other = honest[:1] + chain_of(key, 4)[1:]
    other[1:] = _relink(key, honest[0], other[1:])
    evil.chains[owner] = other
    announce_head(client, key, other)
    assert feeds.catch_up(owner, 4) == 2
    assert feeds.stats()["forks"] == 1 and feeds.stats()["forked_feeds"] == 1
    held, offered = node.db.rows("SELECT held, offered FROM ledger_forks")[0]
    assert json.loads(held) == honest[1] and json.loads(offered) == other[1]
    # refused from then on, and reported
    assert feeds.accept(owner, honest[2:]) == 0
    assert feeds.height(owner) == 2
    report = client.get("/ledger/verify").json
    assert not report["ok"] and report["feeds"][0]["ok"] is False


def _relink(key: SigningKey, head: dict, entries: list[dict]) -> list[dict]:
    """Re-sign ``entries`` as the continuation of ``head`` (a second history)."""
    out = []
    for entry in entries:
        head = ledger.append(key, head, entry["receipt"], entry["ts"] + 1000)
        out.append(head)
    return out


def test_taker_receipts_must_be_in_their_makers_feeds(env) -> None:
    client, node, _, _ = env
    chain = chain_of(OTHER, 2)
    receipt = bids.Receipt.from_wire(chain[1]["receipt"])
    bid = bids.make_bid(
        BUYER, offer_id=receipt.offer_id, offer_seq=1, maker=receipt.maker,
        amount=receipt.amount, price=receipt.price, now_ms=1,
    )  # fmt: skip
    node.receipts.add(StoredFill(bid, receipt, TAKER))
    report = client.get("/ledger/verify").json
    assert not report["ok"] and report["receipts"]["missing"] == [receipt.fill_id]

    # the maker's feed arrives, but it records something else under that fill id
    other_terms = {k: v for k, v in chain[1]["receipt"].items() if k != "sig"}
    other_terms["amount"] += 1
    signed = {**other_terms, "sig": sign_doc(OTHER, bids.Receipt.KIND, other_terms)}
    lying = [chain[0], ledger.append(OTHER, chain[0], signed, 5)]
    assert node.replicator.accept(public_hex(OTHER), lying) == 2
    report = client.get("/ledger/verify").json
    assert not report["ok"] and report["receipts"]["mismatched"] == [receipt.fill_id]
    assert all(f["ok"] for f in report["feeds"])  # the feed itself is well formed


# -- the API document ----------------------------------------------------------------------------


def test_openapi_documents_the_exchange_endpoints(env) -> None:
    doc = env[0].get("/openapi.json").json
    for path in ("/orders", "/orders/{order_id}", "/trades", "/ledger/verify"):
        assert path in doc["paths"]
    assert "security" not in doc["paths"]["/orders"]["post"]  # no token: nothing to send
    params = doc["paths"]["/peer/ledger/{owner}"]["get"]["parameters"]
    assert {p["name"] for p in params} == {"owner", "from", "limit"}
    for name in ("CreateOrder", "OrderOut", "TradeList", "LedgerVerifyOut"):
        assert name in doc["components"]["schemas"]


def test_health_reports_the_exchange(env) -> None:
    body = env[0].get("/health").json
    models.Health.model_validate(body)
    assert {"orders", "taking", "uncross", "ledger"} <= set(body)
    assert body["ledger"]["forks"] == 0


def test_canonical_entries_are_what_is_stored(env) -> None:
    """The feed serves the exact bytes that were signed (no re-encoding on the way)."""
    client, node, _, _ = env
    offer = offer_of(client)
    client.post("/peer/bids", json=peer_bid(node, offer, 1000))
    (raw,) = node.ledger.raw_entries(node.client_id, 1, 10)
    assert raw.encode() == canonical_json(json.loads(raw))
