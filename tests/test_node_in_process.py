"""Two whole nodes in one process, on the in-memory DHT and peer transport of ``fakes``.

Every loop runs (announce, publish, sync, replicate), but no socket is opened: this is
what node unit tests can build on. The same path on real processes is in
``test_node_network``, ``test_orders_network`` and the rest.
"""

from __future__ import annotations

from typing import Any

import pytest
from fakes import AppTransport, MemoryDht
from node_helpers import trade_and_replicate, wait_until

from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.network.transport import NotDelivered
from p2p_offers.node.runtime import Node


@pytest.mark.parametrize("propagation", ["gossip", "push"])
def test_two_nodes_trade_and_replicate_without_a_grape(tmp_path, propagation) -> None:
    dht, transport = MemoryDht(), AppTransport()
    nodes, clients = [], []
    for name in ("a", "b"):
        port = free_ports(1)[0]
        config = NodeConfig(
            port=port,
            grape="http://127.0.0.1:1",
            data_dir=tmp_path / name,
            sync_interval_s=0.5,
            propagation=propagation,
        )
        node = Node(config, dht=dht, transport=transport)
        app = create_app(config, node)
        transport.add(f"127.0.0.1:{port}", app)
        nodes.append(node)
        clients.append(app.test_client())
    b = nodes[1]
    try:
        for node in nodes:
            node.start()
        receipt = trade_and_replicate(clients, b)
        rest = wait_until(lambda: b.index.get(receipt["remainder"]), 10, "the remainder on b")
        assert rest.signed.offer.amount == 75_000_000
        spread = "gossip" if propagation == "gossip" else "announce"
        assert {action for _, action in transport.calls} >= {"identify", spread, "bid"}
        assert dht.records  # the versions were put, under BEP44's rules
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def pair(tmp_path):
    """Two started nodes (a, b) on one MemoryDht and AppTransport: (nodes, clients, transport)."""
    dht, transport = MemoryDht(), AppTransport()
    nodes, clients = [], []
    for name in ("a", "b"):
        port = free_ports(1)[0]
        config = NodeConfig(
            port=port, grape="http://127.0.0.1:1", data_dir=tmp_path / name, sync_interval_s=0.5
        )
        node = Node(config, dht=dht, transport=transport)
        app = create_app(config, node)
        transport.add(f"127.0.0.1:{port}", app)
        nodes.append(node)
        clients.append(app.test_client())
    for node in nodes:
        node.start()
    yield nodes, clients, transport
    for node in nodes:
        node.stop()


def test_a_refused_bid_replayed_after_the_maker_grew_the_offer_is_refused_again(pair) -> None:
    """#11.1: b's bid is refused insufficient_amount; a grows the offer; the same signed bid,
    sent again (as anyone who saw it could), gets the same 409, never a fill."""
    (a, b), (ca, cb), transport = pair
    sent: list[Any] = []

    def keep_bids(address: str, action: str, payload: Any) -> None:
        if action == "bid":
            sent.append(payload)

    transport.intercept = keep_bids
    offer = ca.post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": "1"}).json
    wait_until(lambda: b.index.get(offer["id"]), 10, "the offer to reach b")
    refused = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "2"})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "insufficient_amount"
    assert ca.patch(f"/offers/{offer['id']}", json={"amount_btc": "5"}).status_code == 200
    (wire,) = sent
    replay = ca.post("/peer/bids", json=wire)
    assert replay.status_code == 409 and replay.json == refused.json
    assert a.receipts.all() == [] and b.receipts.all() == []
    assert ca.get(f"/offers/{offer['id']}").json["amount_btc"] == "5.00000000"


def test_an_offer_that_traded_says_so_whatever_the_path(pair) -> None:
    """#10.3: an own offer used up by uncrossing ended cancelled with fill null and nothing
    linking it to its trade; now GET /offers/<id> lists the fills every offer made."""
    (a, b), (ca, cb), _ = pair
    older = cb.post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": "2"}).json
    wait_until(lambda: a.index.get(older["id"]), 10, "b's ask on a")
    newer = ca.post("/offers", json={"side": "buy", "price_usd": "30000", "amount_btc": "0.5"}).json

    def used_up() -> dict | None:
        seen = ca.get(f"/offers/{newer['id']}").json
        return seen if seen["status"] != "open" and seen["fills"] else None

    mine = wait_until(used_up, 10, "a's buy to uncross against b's older ask")
    assert mine["status"] == "cancelled" and mine["fill"] is None  # the record's own word ...
    (fill,) = mine["fills"]  # ... and what it traded
    assert (fill["role"], fill["record"], fill["offer_id"]) == ("taker", newer["id"], older["id"])
    assert (fill["amount_btc"], fill["price_usd"]) == ("0.50000000", "30000.00")
    assert fill["maker"] == b.client_id and fill["taker"] == a.client_id

    # the maker's side: b's ask lists the fill on it, on b and (from the ledger) on a
    theirs = cb.get(f"/offers/{older['id']}").json
    assert [(f["role"], f["fill_id"]) for f in theirs["fills"]] == [("maker", fill["fill_id"])]
    assert theirs["status"] == "filled" and theirs["fill"]["remainder"]
    wait_until(
        lambda: (
            [f["fill_id"] for f in ca.get(f"/offers/{older['id']}").json["fills"]]
            == [fill["fill_id"]]
        ),
        10,
        "a to replicate b's feed",
    )

    # a direct bid on the remainder: each record lists its own fill, linked by fill.remainder
    rest = theirs["fill"]["remainder"]
    wait_until(lambda: a.index.get(rest), 10, "the remainder on a")
    direct = ca.post(f"/offers/{rest}/bids", json={"amount_btc": "0.25"})
    assert direct.status_code == 201, direct.json
    fills = cb.get(f"/offers/{rest}").json["fills"]
    assert [(f["role"], f["record"], f["amount_btc"]) for f in fills] == [
        ("maker", rest, "0.25000000")
    ]
    assert len(cb.get(f"/offers/{older['id']}").json["fills"]) == 1


def test_my_account_trades_filters_and_a_bid_at_the_price_seen(pair) -> None:
    """#10.4: owner=me, GET /trades filters, GET /account, and price_usd on a bid."""
    (a, b), (ca, cb), _ = pair
    ask = cb.post("/offers", json={"side": "sell", "price_usd": "30000.01", "amount_btc": "1"}).json
    wait_until(lambda: a.index.get(ask["id"]), 10, "b's ask on a")
    assert [o["id"] for o in cb.get("/offers?owner=me").json["offers"]] == [ask["id"]]
    assert ca.get("/offers?owner=me").json["offers"] == []
    assert ca.get("/offers?owner=you").status_code == 400

    first = ca.post(
        f"/offers/{ask['id']}/bids", json={"amount_btc": "0.12345678", "price_usd": "30000.01"}
    )
    assert first.status_code == 201, first.json
    # an IOC order matches only what a's book holds: the remainder must have reached it
    wait_until(lambda: a.index.get(first.json["remainder"]), 10, "the remainder on a")
    ioc = {"side": "buy", "price_usd": "30001", "amount_btc": "0.1", "tif": "ioc"}
    order = ca.post("/orders", json=ioc).json
    assert order["status"] == "filled", order

    # the maker reprices: a bid at the price the taker saw is refused, never filled at another
    rest = order["fills"][0]["remainder"]
    wait_until(lambda: b.maker.held(rest) is not None, 10, "the rest on b")
    wait_until(lambda: a.index.get(rest), 10, "the rest on a")  # a bids only on what it knows
    assert cb.patch(f"/offers/{rest}", json={"price_usd": "30500"}).status_code == 200
    seen = ca.post(f"/offers/{rest}/bids", json={"amount_btc": "0.1", "price_usd": "30000.01"})
    assert seen.status_code == 409 and seen.json["error"]["code"] == "price_changed"
    assert seen.json["error"]["details"]["price_usd"] == "30500.00"
    assert len(a.receipts.all()) == 2

    wait_until(lambda: len(ca.get("/trades").json["trades"]) == 2, 10, "a to replicate b's feed")
    mine = ca.get("/trades?taker=me").json["trades"]
    assert [t["fill_id"] for t in mine] == [order["fills"][0]["fill_id"], first.json["fill_id"]]
    assert ca.get("/trades?maker=me").json["trades"] == []
    assert len(cb.get(f"/trades?maker=me&taker={a.client_id}&side=sell").json["trades"]) == 2
    assert cb.get("/trades?side=buy").json["trades"] == []
    ts = first.json["ts"]
    assert [t["fill_id"] for t in cb.get(f"/trades?since={ts}&until={ts}").json["trades"]] == [
        t["fill_id"] for t in mine if t["ts"] == ts
    ]
    assert cb.get(f"/trades?until={ts - 1}").json["trades"] == []

    # a: bought 0.22345678 BTC, paid exactly 0.12345678 x 30000.01 + 0.1 x 30000.01
    acc_a = ca.get("/account").json
    assert acc_a["client_id"] == a.client_id and acc_a["open_offers"] == []
    assert acc_a["fills"]["taker_count"] == 2 and acc_a["fills"]["maker"] == []
    assert {f["side"] for f in acc_a["fills"]["taker"]} == {"buy"}
    assert acc_a["position"] == {
        "btc": "0.22345678",
        "usd": "-6703.7056345678",
        "fills": 2,
        "unknown_side": 0,
    }
    acc_b = cb.get("/account").json
    assert acc_b["position"]["btc"] == "-0.22345678"
    assert acc_b["position"]["usd"] == "6703.7056345678"
    assert [o["id"] for o in acc_b["open_offers"]] == [rest]
    assert acc_b["exposure"]["sell"] == {
        "count": 1,
        "amount_btc": "0.77654322",
        "value_usd": "23684.56821",
    }
    assert acc_b["exposure"]["buy"] == {"count": 0, "amount_btc": "0.00000000", "value_usd": "0.00"}


def test_a_close_whose_sends_died_with_its_owner_reaches_peers_after_a_restart(pair) -> None:
    """b misses a's cancel (every call to b lost), then a restarts: its DHT put was done, so
    nothing republishes the close; only a's gossip digest (made from its index, which a
    restart now fills with the closes not yet expired) can tell b, which still lists the
    open version. Before, b kept listing it until it expired (CI: a node killed mid-run)."""
    (a, b), (ca, cb), transport = pair
    offer = ca.post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": "1"}).json
    wait_until(lambda: b.index.get(offer["id"]), 10, "a's offer on b")
    to_b = f"127.0.0.1:{b.config.port}"

    def lost(address: str, action: str, payload: Any) -> None:
        if address == to_b:
            raise NotDelivered("cut")

    transport.intercept = lost
    assert ca.delete(f"/offers/{offer['id']}").status_code == 200
    a.stop()
    again = Node(a.config, dht=a.dht, transport=transport)
    transport.add(f"127.0.0.1:{a.config.port}", create_app(a.config, again))
    try:
        again.start()
        transport.intercept = None
        held = wait_until(
            lambda: (h := b.index.get(offer["id"])) is not None and h.signed.seq == 2 and h,
            10,
            "the cancel on b",
        )
        assert held.signed.offer.status == "cancelled"
        assert offer["id"] not in {o["id"] for o in cb.get("/offers?status=open").json["offers"]}
    finally:
        again.stop()
