"""The node across real processes: 3 grapes and 3 nodes shared by this module.

Tests that need a node to die or restart add their own node to the shared
network, so the three base nodes stay healthy for every test.
"""

from __future__ import annotations

import copy
import hashlib
import signal

import pytest
from node_helpers import Net, data_dir_of, stored_fills, wait_until

from p2p_offers.money import parse_btc


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("net"), node_extra=["--sync-interval", "1"])
    yield network
    network.close()


def visible_everywhere(net: Net, offer_id: str, seq: int, procs=None) -> bool:
    for proc in procs or net.nodes:
        seen = net.offer(proc, offer_id)
        if seen is None or seen["seq"] < seq:
            return False
    return True


def test_offer_propagates_to_every_node(net: Net) -> None:
    a, b, c = net.nodes
    offer = net.create(a, price="30123.45", amount="0.5")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1), 5, "propagation")
    for proc in (b, c):
        seen = net.offer(proc, offer["id"])
        assert seen["owner"] == net.ids[a.url] and seen["price_usd"] == "30123.45"
        assert seen["status"] == "open"
        book = net.get(proc, "/book")
        assert {"price_usd": "30123.45", "amount_btc": "0.50000000", "count": 1} in book["asks"]
    peers = net.get(a, "/peers")["peers"]
    assert {p["client_id"] for p in peers} == {net.ids[b.url], net.ids[c.url]}


def test_partial_fill_chain_down_to_zero(net: Net) -> None:
    """Four bids all naming the ORIGINAL id walk the chain; the fifth finds it taken."""
    a, b, c = net.nodes
    offer = net.create(a, amount="1")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1), 5, "propagation")
    receipts = []
    for i in range(4):
        taker = (b, c)[i % 2]
        resp = net.bid(taker, offer["id"], "0.25")
        assert resp.status_code == 201, resp.text
        receipts.append((taker, resp.json()))
    late = net.bid(b, offer["id"], "0.00000001")
    assert late.status_code == 409 and late.json()["error"]["code"] == "offer_taken"

    # the receipts name the records actually filled: the original, then each remainder
    chain = [r["offer_id"] for _, r in receipts]
    assert chain[0] == offer["id"] and len(set(chain)) == 4
    assert [r["remainder"] for _, r in receipts] == [*chain[1:], None]

    # every node converges on the same final state of every record in the chain
    def final_everywhere() -> bool:
        for proc in net.nodes:
            for rec_id in chain:
                seen = net.offer(proc, rec_id)
                if seen is None or seen["status"] != "filled":
                    return False
        return True

    wait_until(final_everywhere, 5, "the chain filled everywhere")
    root = net.offer(b, offer["id"])
    assert root["fill"]["remainder"] == chain[1] and root["fill"]["amount_btc"] == "0.25000000"
    for proc in net.nodes:
        assert not [
            o
            for o in net.get(proc, f"/offers?status=open&owner={net.ids[a.url]}")["offers"]
            if o["id"] in chain
        ]
    last = net.offer(c, chain[-1])
    assert last["parent"] == chain[-2] and last["priority"] == offer["priority"]

    # receipts are recorded on both sides
    maker_fills = stored_fills(data_dir_of(a), "maker")
    for taker, receipt in receipts:
        assert receipt["fill_id"] in maker_fills
        assert receipt["fill_id"] in stored_fills(data_dir_of(taker), "taker")
    assert sum(parse_btc(r["amount_btc"]) for _, r in receipts) == parse_btc("1")


def test_forged_replayed_and_malformed_announcements_change_nothing(net: Net) -> None:
    a, b, _ = net.nodes
    offer = net.create(a, amount="0.3")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1, [b]), 5, "propagation")
    page = net.get(a, "/peer/offers?limit=5000")
    original = next(r for r in page["records"] if r["salt"] == offer["id"])
    assert net.bid(b, offer["id"], "0.1").status_code == 201
    wait_until(lambda: visible_everywhere(net, offer["id"], 2, [b]), 5, "the fill")
    before = net.get(b, "/health")["announcements"].get("announce", {})  # none yet if gossiping

    hash_ = hashlib.sha1(bytes.fromhex(original["k"]) + original["salt"].encode()).hexdigest()
    forged = copy.deepcopy(original)
    forged["v"] = forged["v"].replace('"status":"open"', '"status":"cancelled"')
    forged["seq"] = 99
    sends = [
        {"hash": hash_, "record": original},  # replay of seq 1 after seq 2
        {"hash": hash_, "record": forged},  # a higher seq the owner never signed
        {"hash": hash_, "record": {"v": 1}},
        {"hash": "f" * 40},  # nothing in the DHT under it
    ]
    outcomes = [net.call(b, "POST", "/peer/announce", s).json()["outcomes"] for s in sends]
    assert outcomes == [{"stale": 1}, {"forged": 1}, {"malformed": 1}, {"unknown": 1}]
    assert net.call(b, "POST", "/peer/announce", {"junk": True}).status_code == 400

    after = net.get(b, "/health")["announcements"]["announce"]
    for outcome in ("stale", "forged", "unknown"):
        assert after.get(outcome, 0) == before.get(outcome, 0) + 1
    assert after["malformed"] == before.get("malformed", 0) + 2
    seen = net.offer(b, offer["id"])
    assert (seen["seq"], seen["status"]) == (2, "filled")


def test_node_started_late_gets_the_full_book(net: Net) -> None:
    a, b, c = net.nodes
    made = [net.create((a, b, c)[i % 3], price=f"{20000 + i}.00", amount="0.01") for i in range(30)]
    wait_until(lambda: visible_everywhere(net, made[-1]["id"], 1), 5, "propagation")
    late = net.add_node(grape=1)
    ids = {o["id"] for o in made}

    def has_all() -> bool:
        open_ids = {o["id"] for o in net.get(late, "/offers?status=open")["offers"]}
        return ids <= open_ids

    wait_until(has_all, 10, "the late node's sync")
    # and it is a full peer: it sees new offers and others see its offers
    mine = net.create(late, amount="0.02")
    wait_until(lambda: visible_everywhere(net, mine["id"], 1), 5, "its offer everywhere")
    fresh = net.create(a, amount="0.03")
    wait_until(lambda: visible_everywhere(net, fresh["id"], 1, [late]), 5, "news reaching it")
    net.cluster.stop(late)


def test_dead_nodes_offers_expire_and_bids_on_them_get_502(net: Net) -> None:
    a, b, c = net.nodes
    doomed = net.add_node(extra=["--offer-ttl", "2"])
    offer = net.create(doomed, amount="0.1")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1), 5, "propagation")
    net.cluster.kill(doomed)
    resp = net.bid(a, offer["id"], "0.05")
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "owner_unreachable"
    assert not stored_fills(data_dir_of(a), "taker") or all(
        f["offer_id"] != offer["id"] for f in stored_fills(data_dir_of(a), "taker").values()
    )

    def gone_everywhere() -> bool:
        return all(net.offer(p, offer["id"]) is None for p in (a, b, c))

    wait_until(gone_everywhere, 6, "expiry on every node")


def test_restart_keeps_identity_offers_and_fills(net: Net) -> None:
    a, b, _ = net.nodes
    owner = net.add_node(grape=2, extra=["--offer-ttl", "30"])
    client_id = net.ids[owner.url]
    offer = net.create(owner, amount="1")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1, [b]), 5, "propagation")
    first = net.bid(b, offer["id"], "0.4")
    assert first.status_code == 201

    assert net.cluster.stop(owner, signal.SIGTERM) == 0
    net.restart(owner)
    assert net.get(owner, "/health")["client_id"] == client_id
    root = net.offer(owner, offer["id"])
    assert root["status"] == "filled" and [v["seq"] for v in root["history"]] == [1, 2]
    remainder = net.offer(owner, first.json()["remainder"])
    assert remainder["status"] == "open" and remainder["amount_btc"] == "0.60000000"
    assert first.json()["fill_id"] in stored_fills(data_dir_of(owner), "maker")

    # after the restart it is found again and goes on filling the same chain
    second = net.bid(a, offer["id"], "0.6")
    assert second.status_code == 201, second.text
    assert second.json()["offer_id"] == remainder["id"] and second.json()["remainder"] is None
    assert len(stored_fills(data_dir_of(owner), "maker")) == 2
    net.cluster.stop(owner)


def test_taker_side_errors_over_the_network(net: Net) -> None:
    a, b, _ = net.nodes
    offer = net.create(a, amount="0.5")
    wait_until(lambda: visible_everywhere(net, offer["id"], 1, [b]), 5, "propagation")
    too_much = net.bid(b, offer["id"], "0.6")
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "insufficient_amount"
    assert net.call(b, "DELETE", f"/offers/{offer['id']}").status_code == 403
    assert net.call(a, "DELETE", f"/offers/{offer['id']}").status_code == 200
    wait_until(lambda: visible_everywhere(net, offer["id"], 2, [b]), 5, "the cancel")
    taken = net.bid(b, offer["id"], "0.1")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "offer_taken"
