"""How ``tests/data/node-v0`` was made: a real network on the code of main before issue #12.

Run once, from a checkout of that code (``python tests/data/node-v0/make_fixture.py OUT``):
one grape and two nodes, A (whose data dir is the fixture) and B. It trades in
every way a node can: A's offers partly and fully filled by B's bids, an offer
updated and one cancelled, A bidding on B's offers, a GTC and an IOC order of A
that trade, an order of B filling A's resting offer, and one IOC order of A
whose bid is left in doubt (B frozen with SIGSTOP while A bids). Both nodes then
stop cleanly; A's database is checkpointed and copied with its key, and
``manifest.json`` lists what A should hold (read from its REST API before it
stopped), which ``tests/test_node_upgrade.py`` checks against the new schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

import requests

from p2p_offers.cluster import Cluster, free_ports, local_network

http = requests.Session()


def call(node, method: str, path: str, body=None, ok=(200, 201)) -> dict:
    resp = http.request(method, node.url + path, json=body, timeout=120)
    assert resp.status_code in ok, (method, path, resp.status_code, resp.text)
    return resp.json()


def wait(check, timeout: float = 30.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise SystemExit(f"timed out: {what}")


def seen(node, offer_id: str) -> bool:
    return http.get(f"{node.url}/offers/{offer_id}", timeout=5).status_code == 200


def main(out: Path) -> None:
    work = out.parent / "fixture-work"
    shutil.rmtree(work, ignore_errors=True)
    cluster = Cluster(work / "logs")
    ports = free_ports(4)
    _, (a, b) = local_network(
        cluster,
        1,
        2,
        ports[:1],
        ports[1:2],
        ports[2:],
        work,
        node_extra=["--sync-interval", "1"],
    )
    try:
        manifest = trade(cluster, a, b)
    finally:
        cluster.stop_all()
    db_path = work / f"node-{a.url.rsplit(':', 1)[1]}" / "node.sqlite3"
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA journal_mode=DELETE")
    db.close()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(db_path, out / "node.sqlite3")
    shutil.copy(db_path.parent / "key", out / "key")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(work)


def trade(cluster: Cluster, a, b) -> dict:
    a_id = call(a, "GET", "/health")["client_id"]
    b_id = call(b, "GET", "/health")["client_id"]
    m: dict = {"a": a_id, "b": b_id, "started_ms": time.time_ns() // 1_000_000}
    sell = {"side": "sell", "price_usd": "30000.00"}
    # A's offer, partly then fully filled by B (a chain of two records)
    split = call(a, "POST", "/offers", {**sell, "amount_btc": "1"})
    wait(lambda: seen(b, split["id"]), what="B sees the split offer")
    part = call(b, "POST", f"/offers/{split['id']}/bids", {"amount_btc": "0.4"})
    rest = call(b, "POST", f"/offers/{part['remainder']}/bids", {"amount_btc": "0.6"})
    # an offer changed twice, one cancelled, one left open with a short ttl (refreshed)
    edited = call(a, "POST", "/offers", {**sell, "price_usd": "31000", "amount_btc": "2"})
    call(a, "PATCH", f"/offers/{edited['id']}", {"price_usd": "31500"})
    edited = call(a, "PATCH", f"/offers/{edited['id']}", {"amount_btc": "1.5"})
    cancelled = call(a, "POST", "/offers", {**sell, "price_usd": "32000", "amount_btc": "0.1"})
    call(a, "DELETE", f"/offers/{cancelled['id']}")
    short = call(
        a, "POST", "/offers", {**sell, "price_usd": "33000", "amount_btc": "0.2", "ttl_s": 2}
    )
    # A as a taker on B's offers, directly and through a GTC and an IOC order
    b_offer = call(b, "POST", "/offers", {"side": "buy", "price_usd": "29000", "amount_btc": "1"})
    wait(lambda: seen(a, b_offer["id"]), what="A sees B's offer")
    a_bid = call(a, "POST", f"/offers/{b_offer['id']}/bids", {"amount_btc": "0.25"})
    b_ask = call(b, "POST", "/offers", {"side": "sell", "price_usd": "28000", "amount_btc": "0.5"})
    b_ask2 = call(b, "POST", "/offers", {"side": "sell", "price_usd": "28200", "amount_btc": "0.3"})
    wait(lambda: seen(a, b_ask["id"]) and seen(a, b_ask2["id"]), what="A sees B's asks")
    # GTC: takes all of b_ask at 28000, rests 0.2 as a buy at 28100 (below b_ask2: no cross)
    order = {"side": "buy", "price_usd": "28100", "amount_btc": "0.7", "tif": "gtc"}
    gtc = call(a, "POST", "/orders", order)
    # IOC: takes 0.2 of b_ask2 at 28200
    order = {"side": "buy", "price_usd": "28300", "amount_btc": "0.2", "tif": "ioc"}
    ioc = call(a, "POST", "/orders", order)
    # B's IOC sell fills half of A's resting buy: A is the maker of an order's rest
    wait(lambda: seen(b, gtc["offer"]["id"]), what="B sees A's resting order")
    order = {"side": "sell", "price_usd": "28100", "amount_btc": "0.1", "tif": "ioc"}
    b_order = call(b, "POST", "/orders", order)
    b_fills = 3  # a_bid, gtc, ioc: B made them, and its feed must reach A
    wait(
        lambda: any(
            f["owner"] == b_id and f["height"] == b_fills
            for f in call(a, "GET", "/peer/ledger")["feeds"]
        ),
        what="A replicates B's feed",
    )
    # a bid left in doubt: B frozen while A's IOC sell order bids on B's buy offer
    time.sleep(2)  # let publications settle first
    os.killpg(b.popen.pid, signal.SIGSTOP)
    try:
        pending = call(
            a,
            "POST",
            "/orders",
            {"side": "sell", "price_usd": "29000", "amount_btc": "0.05", "tif": "ioc"},
            ok=(201, 202),
        )
        doubt_order = wait(
            lambda: (o := call(a, "GET", f"/orders/{pending['id']}"))["status"] != "pending" and o,
            120,
            "the in-doubt order to finish",
        )
        health = call(a, "GET", "/health")
        assert doubt_order["in_doubt"], doubt_order
        m["a_health"] = health
        m["a_orders"] = call(a, "GET", "/orders")["orders"]
        m["a_trades"] = call(a, "GET", "/trades")["trades"]
        m["a_ledger"] = call(a, "GET", "/peer/ledger")["feeds"]
        own = [split["id"], part["remainder"], edited["id"], cancelled["id"], short["id"]]
        own += [gtc["offer"]["id"]]
        m["a_own_offers"] = {i: call(a, "GET", f"/offers/{i}") for i in own}
        m["b_offers_seen"] = [b_offer["id"], b_ask2["id"]]
        m["receipts"] = {
            "a_maker": [
                part["fill_id"],
                rest["fill_id"],
                *[f["fill_id"] for f in b_order["fills"]],
            ],
            "a_taker": [a_bid["fill_id"], *[f["fill_id"] for o in (gtc, ioc) for f in o["fills"]]],
        }
        m["orders"] = {"gtc": gtc["id"], "ioc": ioc["id"], "in_doubt": doubt_order["id"]}
        m["in_doubt_bid"] = doubt_order["in_doubt"][0]
        m["stopped_ms"] = time.time_ns() // 1_000_000
        # B dies unanswered, so A's resolver cannot settle the bid; A stops cleanly (SIGTERM)
        cluster.kill(b)
        assert cluster.stop(a, timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(b.popen.pid, signal.SIGCONT)
    return m


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
