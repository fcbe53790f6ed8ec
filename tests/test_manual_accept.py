"""#9.1: minimum takes and manual accept, on two in-process nodes (``fakes``)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fakes import AppTransport, MemoryDht
from node_helpers import wait_until
from test_node_in_process import pair

from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.network.transport import NotDelivered
from p2p_offers.node.runtime import Node
from p2p_offers.node.storage.receipts import Role

__all__ = ["pair"]


def offer_on_both(ca: Any, b: Any, **terms: Any) -> dict[str, Any]:
    body = {"side": "sell", "price_usd": "30000", "amount_btc": "1", **terms}
    created = ca.post("/offers", json=body)
    assert created.status_code == 201, created.json
    offer: dict[str, Any] = created.json
    wait_until(lambda: b.index.get(offer["id"]), 10, "the offer to reach b")
    return offer


def test_an_auto_offer_refuses_a_bid_below_its_minimum_on_both_sides(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, min_amount_btc="0.5")
    assert offer["accept"] == "auto" and offer["min_amount_btc"] == "0.50000000"
    small = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.25"})
    assert small.status_code == 409 and small.json["error"]["code"] == "below_minimum"
    assert small.json["error"]["details"]["min_amount_btc"] == "0.50000000"
    # the owner refuses it too (a taker that skips its own check): sign one past b's check
    from p2p_offers.bids import make_bid

    bid = make_bid(
        b.key,
        offer_id=offer["id"],
        offer_seq=1,
        maker=a.client_id,
        amount=25_000_000,
        price=3_000_000,
        now_ms=a.clock(),
    )
    refused = ca.post("/peer/bids", json=bid.to_wire())
    assert refused.status_code == 409 and refused.json["error"]["code"] == "below_minimum"
    took = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.6"})
    assert took.status_code == 201, took.json
    # the remainder (0.4) is below the minimum: only whole
    rest = wait_until(lambda: b.index.get(took.json["remainder"]), 10, "the remainder on b")
    assert rest.signed.offer.min_amount == 50_000_000
    part = cb.post(f"/offers/{rest.signed.id}/bids", json={"amount_btc": "0.3"})
    assert part.status_code == 409 and part.json["error"]["code"] == "below_minimum"
    whole = cb.post(f"/offers/{rest.signed.id}/bids", json={"amount_btc": "0.4"})
    assert whole.status_code == 201, whole.json


def bid_pending(cb: Any, offer_id: str, amount: str) -> dict[str, Any]:
    held = cb.post(f"/offers/{offer_id}/bids", json={"amount_btc": amount})
    assert held.status_code == 202, held.json
    assert held.json["status"] == "pending" and held.json["role"] == "taker"
    body: dict[str, Any] = held.json
    return body


def test_a_manual_bid_is_pending_then_accepted_in_part_and_the_taker_learns_it(pair) -> None:
    (_a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    assert offer["accept"] == "manual"
    held = bid_pending(cb, offer["id"], "0.4")
    bid_id = held["bid_id"]
    listed = ca.get(f"/offers/{offer['id']}/bids").json["bids"]
    assert [(x["bid_id"], x["status"], x["role"]) for x in listed] == [(bid_id, "pending", "maker")]
    assert listed[0]["expires"] == held["expires"]  # the taker keeps the owner's expiry
    assert cb.get(f"/bids/{bid_id}").json["status"] == "pending"
    assert b.taker.resolve_pending() == 0  # asked again: still pending
    # the owner's node alone may decide: b (not the owner) is 403
    assert cb.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={}).status_code == 403
    accepted = ca.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={"amount_btc": "0.3"})
    assert accepted.status_code == 200, accepted.json
    receipt = accepted.json
    assert receipt["amount_btc"] == "0.30000000" and receipt["remainder"]
    again = ca.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={})
    assert again.status_code == 409 and again.json["error"]["code"] == "bid_not_pending"
    # the same path as an auto bid: the remainder, the maker's fill and ledger entry
    detail = ca.get(f"/offers/{offer['id']}").json
    assert detail["status"] == "filled" and detail["fill"]["amount_btc"] == "0.30000000"
    assert [f["fill_id"] for f in detail["fills"]] == [receipt["fill_id"]]
    rest = ca.get(f"/offers/{receipt['remainder']}").json
    assert rest["accept"] == "manual" and rest["amount_btc"] == "0.70000000"
    assert ca.get("/ledger/verify").json["ok"] is True
    # the taker's node learns it on its next round of asking
    assert b.taker.resolve_pending() == 1
    seen = cb.get(f"/bids/{bid_id}").json
    assert seen["status"] == "accepted" and seen["accepted_btc"] == "0.30000000"
    assert seen["receipt"] == receipt
    assert [r.receipt.fill_id for r in b.receipts.all()] == [receipt["fill_id"]]
    mine = ca.get(f"/offers/{offer['id']}/bids").json["bids"]
    assert [(x["status"], x["accepted_btc"]) for x in mine] == [("accepted", "0.30000000")]


def test_a_rejected_bid_is_final_on_both_sides(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    bid_id = bid_pending(cb, offer["id"], "0.5")["bid_id"]
    rejected = ca.post(f"/offers/{offer['id']}/bids/{bid_id}/reject", json={})
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    late = ca.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={})
    assert late.status_code == 409 and late.json["error"]["code"] == "bid_not_pending"
    assert b.taker.resolve_pending() == 1
    assert cb.get(f"/bids/{bid_id}").json["status"] == "rejected"
    assert a.receipts.all() == [] and b.receipts.all() == []


def test_a_pending_bid_expires_and_cannot_be_accepted(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    held = bid_pending(cb, offer["id"], "0.5")
    real = a.clock
    a.clock = a.maker.clock = lambda: real() + 301_000  # five minutes and a second on
    try:
        listed = ca.get(f"/offers/{offer['id']}/bids").json["bids"]
        assert [x["status"] for x in listed] == ["expired"]
        late = ca.post(f"/offers/{offer['id']}/bids/{held['bid_id']}/accept", json={})
        assert late.status_code == 409 and late.json["error"]["details"]["status"] == "expired"
    finally:
        a.clock = a.maker.clock = real
    # written expired: even with the clock back, it stays expired
    assert ca.get(f"/bids/{held['bid_id']}").json["status"] == "expired"
    assert b.taker.resolve_pending() == 1
    assert cb.get(f"/bids/{held['bid_id']}").json["status"] == "expired"


def test_orders_never_match_a_manual_offer(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer_on_both(ca, b, accept="manual")
    order = cb.post(
        "/orders", json={"side": "buy", "price_usd": "30000", "amount_btc": "0.5", "tif": "ioc"}
    )
    assert order.status_code == 201, order.json
    assert order.json["fills"] == [] and a.receipts.all() == []


def test_unknown_or_foreign_bids_are_404(pair) -> None:
    (_a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    other = offer_on_both(ca, b, accept="manual", price_usd="30001")
    bid_id = bid_pending(cb, offer["id"], "0.5")["bid_id"]
    # a bid accepted through another chain of the owner's is not found there
    wrong = ca.post(f"/offers/{other['id']}/bids/{bid_id}/accept", json={})
    assert wrong.status_code == 404
    assert cb.get("/bids/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12).status_code == 404


def test_concurrent_accepts_of_different_pending_bids_never_overfill(pair) -> None:
    """8 threads accept 8 pending bids of 0.3 BTC on a 1 BTC manual offer at once: exactly
    three fit (0.9), the other five find too little left (409), and the offer's chain adds up."""
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    bid_ids = [bid_pending(cb, offer["id"], "0.3")["bid_id"] for _ in range(8)]
    start = threading.Barrier(len(bid_ids))

    def accept(bid_id: str) -> tuple[int, dict[str, Any]]:
        client = ca.application.test_client()
        start.wait()
        r = client.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={})
        return r.status_code, r.json

    with ThreadPoolExecutor(len(bid_ids)) as pool:
        results = list(pool.map(accept, bid_ids))
    codes = sorted(code for code, _ in results)
    assert codes == [200] * 3 + [409] * 5, results
    assert {body["error"]["code"] for code, body in results if code == 409} == {
        "insufficient_amount"
    }
    filled = sum(f.receipt.amount for f in a.receipts.all())
    assert filled == 90_000_000
    head = a.maker.held(offer["id"])
    assert head is not None and head.signed.offer.amount == 10_000_000
    statuses = sorted(x["status"] for x in ca.get(f"/offers/{offer['id']}/bids").json["bids"])
    assert statuses == ["accepted"] * 3 + ["pending"] * 5  # the others may still be taken
    assert b.taker.resolve_pending() == 3
    assert sum(f.receipt.amount for f in b.receipts.all()) == 90_000_000


def test_pending_bids_survive_restarts_of_both_nodes(tmp_path) -> None:
    dht, transport = MemoryDht(), AppTransport()
    ports = free_ports(2)

    def start(name: str, port: int) -> tuple[Node, Any]:
        config = NodeConfig(
            port=port, grape="http://127.0.0.1:1", data_dir=tmp_path / name, sync_interval_s=0.5
        )
        node = Node(config, dht=dht, transport=transport)
        app = create_app(config, node)
        transport.add(f"127.0.0.1:{port}", app)
        node.start()
        return node, app.test_client()

    (a, ca), (b, cb) = start("a", ports[0]), start("b", ports[1])
    try:
        offer = offer_on_both(ca, b, accept="manual")
        bid_id = bid_pending(cb, offer["id"], "0.5")["bid_id"]
    finally:
        a.stop()
        b.stop()
    (a, ca), (b, cb) = start("a", ports[0]), start("b", ports[1])
    try:
        assert [x["bid_id"] for x in ca.get(f"/offers/{offer['id']}/bids").json["bids"]] == [bid_id]
        assert cb.get(f"/bids/{bid_id}").json["status"] == "pending"
        accepted = ca.post(f"/offers/{offer['id']}/bids/{bid_id}/accept", json={})
        assert accepted.status_code == 200, accepted.json
    finally:
        a.stop()
        b.stop()
    (a, ca), (b, cb) = start("a", ports[0]), start("b", ports[1])
    try:
        b.taker.resolve_pending()
        seen = cb.get(f"/bids/{bid_id}").json
        assert seen["status"] == "accepted" and seen["receipt"] == accepted.json
        assert ca.get(f"/bids/{bid_id}").json["status"] == "accepted"
    finally:
        a.stop()
        b.stop()


def bid_events(node: Node) -> list[tuple[str, str]]:
    """(role, status) of the ``bid`` events in the node's event ring, oldest first."""
    found = []
    for event in list(node.events._ring):
        if event.type == "bid":
            data = json.loads(event.frame().decode().split("data: ", 1)[1])
            found.append((data["bid"]["role"], data["bid"]["status"]))
    return found


def test_bids_received_sent_and_decided_are_events(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, accept="manual")
    first = bid_pending(cb, offer["id"], "0.2")["bid_id"]
    second = bid_pending(cb, offer["id"], "0.2")["bid_id"]
    assert ca.post(f"/offers/{offer['id']}/bids/{first}/accept", json={}).status_code == 200
    assert ca.post(f"/offers/{offer['id']}/bids/{second}/reject", json={}).status_code == 200
    assert bid_events(a) == [
        ("maker", "pending"),
        ("maker", "pending"),
        ("maker", "accepted"),
        ("maker", "rejected"),
    ]
    b.taker.resolve_pending()
    assert bid_events(b) == [
        ("taker", "pending"),
        ("taker", "pending"),
        ("taker", "accepted"),
        ("taker", "rejected"),
    ]


def test_a_bid_that_never_reached_the_owner_is_not_kept_pending(pair) -> None:
    (a, b), (ca, cb), transport = pair
    offer = offer_on_both(ca, b, accept="manual")

    def unreachable(address: str, action: str, payload: Any) -> None:
        if action == "bid":
            raise NotDelivered("down")

    transport.intercept = unreachable
    lost = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.5"})
    assert lost.status_code == 502 and lost.json["error"]["code"] == "owner_unreachable"
    assert b.manual_bids.pending(Role.TAKER) == [] and a.manual_bids.pending(Role.MAKER) == []
