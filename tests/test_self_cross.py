"""Issue #10.2: one owner never crosses the book (in process, on a real grape).

Before the fix, ``POST /offers`` took a buy above the same node's ask, and a GTC order's
rest was posted across the node's own resting offers, so every node showed a crossed book.
The real-process check is ``test_orders_network``: its storms settle only if no book is
crossed, by two owners or by one.
"""

from __future__ import annotations

from typing import Any

import pytest
from node_helpers import Clock, local_node, wait_until

from p2p_offers.money import parse_usd


@pytest.fixture
def env(grape_url, tmp_path):
    client, node, _ = local_node(grape_url, tmp_path, Clock())
    yield client, node
    node.desk.stop()
    node.stop()


def offer(client: Any, side: str, price: str, amount: str = "1", **extra: Any) -> Any:
    body = {"side": side, "price_usd": price, "amount_btc": amount, **extra}
    return client.post("/offers", json=body)


def error(resp: Any) -> tuple[int, str, Any]:
    e = resp.json["error"]
    return resp.status_code, e["code"], e.get("details")


def crossed(client: Any) -> bool:
    book = client.get("/book").json
    return bool(book["bids"] and book["asks"]) and (
        parse_usd(book["bids"][0]["price_usd"]) >= parse_usd(book["asks"][0]["price_usd"])
    )


def test_an_offer_across_the_owners_own_is_refused_naming_them(env) -> None:
    client, _ = env
    ask = offer(client, "sell", "50000").json
    ask2 = offer(client, "sell", "50100").json
    assert offer(client, "buy", "49999.99").status_code == 201  # touching nothing: fine
    resp = offer(client, "buy", "50100")
    assert error(resp) == (409, "self_cross", {"offers": [ask["id"], ask2["id"]]})
    assert "cancel_resting" in resp.json["error"]["message"]
    assert error(offer(client, "sell", "49999.99"))[1] == "self_cross"
    assert not crossed(client)
    assert client.get(f"/offers/{ask['id']}").json["status"] == "open"


def test_cancel_resting_cancels_the_crossing_own_offers_first(env) -> None:
    client, _ = env
    ask = offer(client, "sell", "50000").json
    far = offer(client, "sell", "60000").json
    placed = offer(client, "buy", "50000", stp="cancel_resting")
    assert placed.status_code == 201, placed.json
    assert client.get(f"/offers/{ask['id']}").json["status"] == "cancelled"
    assert client.get(f"/offers/{far['id']}").json["status"] == "open"  # it crossed nothing
    assert not crossed(client)
    bad = offer(client, "buy", "1", stp="cancel_everything")
    assert bad.status_code == 400 and error(bad)[1] == "invalid_input"


def test_a_price_change_across_the_owners_own_is_refused(env) -> None:
    client, _ = env
    bid = offer(client, "buy", "49000").json
    ask = offer(client, "sell", "50000").json
    moved = client.patch(f"/offers/{ask['id']}", json={"price_usd": "48000"})
    assert error(moved) == (409, "self_cross", {"offers": [bid["id"]]})
    assert client.patch(f"/offers/{ask['id']}", json={"amount_btc": "2"}).status_code == 200
    assert client.patch(f"/offers/{ask['id']}", json={"price_usd": "49000.01"}).status_code == 200
    assert not crossed(client)


def test_a_gtc_order_that_could_rest_across_own_offers_is_refused_before_it_trades(env) -> None:
    client, node = env
    node.desk.start()
    ask = offer(client, "sell", "50000").json
    gtc = client.post("/orders", json={"side": "buy", "price_usd": "50000", "amount_btc": "1"})
    assert error(gtc) == (409, "self_cross", {"offers": [ask["id"]]})
    assert client.get("/orders").json["orders"] == []  # refused: no order was made
    ioc = client.post(
        "/orders", json={"side": "buy", "price_usd": "50000", "amount_btc": "1", "tif": "ioc"}
    )
    assert ioc.status_code == 201 and ioc.json["status"] == "cancelled"  # an IOC never rests
    body = {"side": "buy", "price_usd": "50000", "amount_btc": "1", "stp": "cancel_resting"}
    rested = client.post("/orders", json=body)
    assert rested.status_code == 201 and rested.json["status"] == "resting"
    assert client.get(f"/offers/{ask['id']}").json["status"] == "cancelled"
    assert not crossed(client)


def test_a_rest_that_would_cross_an_own_offer_placed_meanwhile_is_not_posted(env) -> None:
    client, node = env
    node.desk.wait_s = 0.01  # no worker yet: the order waits in the queue
    queued = client.post("/orders", json={"side": "buy", "price_usd": "50000", "amount_btc": "1"})
    assert queued.status_code == 202
    ask = offer(client, "sell", "49000").json  # placed while the order waits
    node.desk.start()
    url = f"/orders/{queued.json['id']}"
    wait_until(lambda: client.get(url).json["status"] != "pending", 10, "the order")
    done = client.get(url).json
    assert done["status"] == "cancelled" and done["offer"] is None
    assert node.desk.stats()["rest_self_cross"] == 1
    assert client.get(f"/offers/{ask['id']}").json["status"] == "open"
    assert not crossed(client)
