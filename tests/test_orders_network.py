"""Orders, uncrossing and the replicated ledger across real processes (3 grapes, 3 nodes).

The network is shared by the module; every test works in its own price band
and the ``clean_books`` fixture cancels every open offer afterwards, so one
test's resting orders never trade with the next test's. Waiting is always a
bounded poll for the state the test asserts (``settle``), never a sleep.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from node_helpers import Net, data_dir_of, stored_fills, wait_until

from p2p_offers.cluster import Proc
from p2p_offers.money import format_btc, format_usd, parse_btc, parse_usd


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[Net]:
    network = Net(tmp_path_factory.mktemp("orders"), node_extra=["--sync-interval", "1"])
    yield network
    network.close()


@pytest.fixture(autouse=True)
def clean_books(net: Net) -> Iterator[None]:
    yield
    cancel_all(net, net.nodes)


def cancel_all(net: Net, procs: list[Proc]) -> None:
    """Cancel every open offer of ``procs`` until no node shows any of them.

    Cancelling repeats: an uncrossing that was under way may still give back
    a reserved amount as a new offer after the first pass.
    """
    owners = {net.ids[p.url] for p in procs}

    def gone() -> bool:
        for proc in procs:
            own = net.get(proc, f"/offers?status=open&owner={net.ids[proc.url]}")["offers"]
            for offer in own:
                net.call(proc, "DELETE", f"/offers/{offer['id']}")
        return not any(
            o["owner"] in owners
            for p in net.nodes
            for o in net.get(p, "/offers?status=open")["offers"]
        )

    wait_until(gone, 15, "every cancelled offer gone everywhere")


# -- helpers -----------------------------------------------------------------------------------


def place(
    net: Net, proc: Proc, side: str, price: str, amount: str, tif: str = "gtc", **extra: Any
) -> dict:
    body = {"side": side, "price_usd": price, "amount_btc": amount, "tif": tif, **extra}
    resp = net.call(proc, "POST", "/orders", body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def post_offer(net: Net, proc: Proc, side: str, price: str, amount: str) -> dict:
    return net.create(proc, side=side, price=price, amount=amount)


def seen_by_all(net: Net, offer_ids: list[str]) -> bool:
    return all(net.offer(p, i) is not None for p in net.nodes for i in offer_ids)


def crossed_pairs(offers: list[dict]) -> list[tuple[str, str]]:
    """Open (buy, sell) pairs where the buy pays at least the ask: of different owners, which
    uncrossing resolves, or of one owner, which must never happen (#10.2: self_cross)."""
    buys = [o for o in offers if o["side"] == "buy"]
    sells = [o for o in offers if o["side"] == "sell"]
    return [
        (b["id"], s["id"])
        for b in buys
        for s in sells
        if parse_usd(b["price_usd"]) >= parse_usd(s["price_usd"])
    ]


def quiet(health: dict) -> bool:
    """Nothing queued or running on the order worker, nothing left to publish."""
    orders = health["orders"]
    return not (orders["queued"] or orders["busy"] or health["publisher"]["pending"])


def snapshot(net: Net, procs: list[Proc]) -> tuple[dict[str, Any] | None, str]:
    """Every node's trades and open book if all are quiet, agree, verify and nothing crosses;
    else None and what is not so yet (for the message of a settle that times out)."""
    healths = {p.url: net.get(p, "/health") for p in procs}
    busy = [(url, h["orders"], h["publisher"]) for url, h in healths.items() if not quiet(h)]
    if busy:
        return None, f"not quiet: {busy}"
    trades = [net.get(p, "/trades")["trades"] for p in procs]
    if any(t != trades[0] for t in trades):
        return None, f"trades differ: {[len(t) for t in trades]} per node"
    books = [
        sorted((o["id"], o["seq"]) for o in net.get(p, "/offers?status=open")["offers"])
        for p in procs
    ]
    if any(b != books[0] for b in books):
        every = set().union(*map(set, books))
        return None, f"books differ: {[sorted(every - set(b)) for b in books]} missing per node"
    open_offers = net.get(procs[0], "/offers?status=open")["offers"]
    if crossed := crossed_pairs(open_offers):
        return None, f"crossed: {crossed}"
    reports = [net.get(p, "/ledger/verify") for p in procs]
    if not all(r["ok"] for r in reports):
        return None, f"ledger does not verify: {reports}"
    return {"trades": trades[0], "open": open_offers, "verify": reports}, "settled"


def settle(net: Net, procs: list[Proc] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Poll (every 0.2 s, bounded) until the network is quiet and consistent; return its state.

    The state must be seen twice in a row: an uncrossing between reserving and
    bidding looks consistent for a moment (the reserved offer is gone, the
    trade not made yet), and so does the instant before an announcement lands.
    """
    procs = procs or net.nodes
    deadline = time.monotonic() + timeout
    last = None
    while True:
        state, why = snapshot(net, procs)
        if state is not None and state == last:  # the same twice: not a passing moment
            return state
        last = state
        if time.monotonic() > deadline:
            raise AssertionError(f"network did not settle within {timeout}s: {why}")
        time.sleep(0.2)


def sats(value: str) -> int:
    return parse_btc(value)


# -- single orders -------------------------------------------------------------------------------


def test_order_fills_fully_then_partially_and_rests_then_ioc(net: Net) -> None:
    a, b, c = net.nodes
    ask1 = post_offer(net, a, "sell", "100.00", "0.3")
    ask2 = post_offer(net, b, "sell", "101.00", "0.2")
    wait_until(lambda: seen_by_all(net, [ask1["id"], ask2["id"]]), 5, "the asks")

    full = place(net, c, "buy", "101", "0.4")
    assert full["status"] == "filled" and full["offer"] is None
    assert [(f["maker"], f["price_usd"], f["amount_btc"]) for f in full["fills"]] == [
        (net.ids[a.url], "100.00", "0.30000000"),  # best price first
        (net.ids[b.url], "101.00", "0.10000000"),  # at the maker's price
    ]
    assert {f["taker"] for f in full["fills"]} == {net.ids[c.url]}

    wait_until(lambda: net.offer(c, ask1["id"])["status"] == "filled", 5, "ask1 filled at c")
    part = place(net, c, "buy", "101", "0.3")
    assert part["status"] == "partial" and [f["amount_btc"] for f in part["fills"]] == [
        "0.10000000"
    ]
    rest = part["offer"]
    assert (rest["status"], rest["side"], rest["price_usd"]) == ("open", "buy", "101.00")
    assert rest["amount_btc"] == "0.20000000" and rest["owner"] == net.ids[c.url]

    wait_until(lambda: seen_by_all(net, [rest["id"]]), 5, "the rest")
    ioc = place(net, a, "sell", "100", "0.5", tif="ioc")
    assert ioc["status"] == "partial" and ioc["offer"] is None
    assert [(f["price_usd"], f["amount_btc"]) for f in ioc["fills"]] == [("101.00", "0.20000000")]
    nothing = place(net, a, "sell", "999", "0.5", tif="ioc")
    assert (nothing["status"], nothing["fills"], nothing["offer"]) == ("cancelled", [], None)

    assert net.get(c, f"/orders/{part['id']}")["fills"] == part["fills"]
    listed = {o["id"] for o in net.get(c, "/orders")["orders"]}
    assert {full["id"], part["id"]} <= listed

    state = settle(net)
    ids = {t["fill_id"] for t in state["trades"]}
    for made in (full, part, ioc):
        assert {f["fill_id"] for f in made["fills"]} <= ids
    assert state["trades"][0]["fill_id"] == ioc["fills"][0]["fill_id"]  # newest first


def test_an_order_never_trades_with_its_own_nodes_offers(net: Net) -> None:
    a, b, _ = net.nodes
    own = post_offer(net, a, "sell", "200.00", "0.1")
    theirs = post_offer(net, b, "sell", "201.00", "0.1")
    wait_until(lambda: seen_by_all(net, [own["id"], theirs["id"]]), 5, "the asks")
    # a GTC buy at 202 could rest above a's own ask: refused before it trades (#10.2)
    refused = net.call(a, "POST", "/orders", {"side": "buy", "price_usd": "202", "amount_btc": "1"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "self_cross"
    assert refused.json()["error"]["details"] == {"offers": [own["id"]]}
    assert net.offer(b, theirs["id"])["status"] == "open"  # nothing traded
    # an own buy above the own ask cannot be posted either, nor can an own ask be repriced so
    cross = net.call(a, "POST", "/offers", {"side": "buy", "price_usd": "200", "amount_btc": "1"})
    assert cross.status_code == 409 and cross.json()["error"]["details"] == {"offers": [own["id"]]}
    low_bid = net.create(a, side="buy", price="150.00", amount="0.1")
    moved = net.call(a, "PATCH", f"/offers/{own['id']}", {"price_usd": "149"})
    assert moved.status_code == 409 and moved.json()["error"]["code"] == "self_cross"
    assert moved.json()["error"]["details"] == {"offers": [low_bid["id"]]}
    net.call(a, "DELETE", f"/offers/{low_bid['id']}")

    # with "stp": "cancel_resting" the own ask is cancelled, and the order trades and rests
    order = place(net, a, "buy", "202", "0.15", stp="cancel_resting")
    assert [(f["offer_id"], f["amount_btc"]) for f in order["fills"]] == [
        (theirs["id"], "0.10000000")
    ]
    assert order["status"] == "partial" and order["offer"]["amount_btc"] == "0.05000000"
    assert net.offer(a, own["id"])["status"] == "cancelled"  # skipped, never taken, cancelled
    settle(net)  # and no node shows a crossed book, of one owner or of two


def at_once(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` on threads released together by a barrier; their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_orders_racing_for_one_offer_move_on_to_the_next(net: Net) -> None:
    a, b, c = net.nodes
    for low in (300, 310, 320):
        high = low + 1
        asks = [post_offer(net, a, "sell", f"{p}.00", "0.1") for p in (low, high)]
        ids = [x["id"] for x in asks]
        wait_until(lambda ids=ids: seen_by_all(net, ids), 5, "the asks")
        results = at_once(
            *(lambda p=p, h=high: place(net, p, "buy", f"{h}", "0.1", tif="ioc") for p in (b, c))
        )
        # both filled: whoever lost the better ask went on to the other one
        assert {r["status"] for r in results} == {"filled"}
        assert sorted(r["fills"][0]["price_usd"] for r in results) == [f"{low}.00", f"{high}.00"]
    settle(net)


# -- uncrossing ----------------------------------------------------------------------------------


def test_offers_posted_at_once_from_two_nodes_uncross(net: Net) -> None:
    a, b, c = net.nodes
    before = {t["fill_id"] for t in settle(net)["trades"]}
    for price in (400, 410, 420):
        ask, bid = at_once(
            lambda price=price: post_offer(net, a, "sell", f"{price}.00", "0.3"),
            lambda price=price: post_offer(net, b, "buy", f"{price + 1}.00", "0.2"),
        )
        state = settle(net)
        new = [t for t in state["trades"] if t["fill_id"] not in before]
        before |= {t["fill_id"] for t in new}
        older, newer = sorted((ask, bid), key=lambda o: (o["priority"], o["id"]))
        assert len(new) == 1, new
        (trade,) = new
        assert trade["offer_id"] == older["id"] and trade["price_usd"] == older["price_usd"]
        assert (trade["maker"], trade["taker"]) == (older["owner"], newer["owner"])
        assert trade["amount_btc"] == "0.20000000"
        left = [o for o in state["open"] if o["owner"] == ask["owner"] and o["side"] == "sell"]
        assert [o["amount_btc"] for o in left] == ["0.10000000"]
        assert not [o for o in state["open"] if o["owner"] == bid["owner"] and o["side"] == "buy"]
        cancel_all(net, net.nodes)
    for proc in (a, b, c):
        assert net.get(proc, "/health")["ledger"]["forks"] == 0


# -- many orders at once -------------------------------------------------------------------------


def random_orders(rng: random.Random, count: int, centre: int) -> list[dict]:
    """Orders around ``centre`` USD, a few dollars apart, so most of them cross something."""
    return [
        {
            "side": rng.choice(("buy", "sell")),
            "price_usd": format_usd(100 * (centre + rng.randint(-5, 5))),
            "amount_btc": format_btc(rng.randint(1, 50) * 100_000),
            "tif": "ioc" if rng.random() < 0.2 else "gtc",
            # a GTC rest may cross the node's own resting offers: cancel those (#10.2)
            "stp": "cancel_resting",
        }
        for _ in range(count)
    ]


def fire(
    procs: list[Proc],
    orders: dict[str, list[dict]],
    threads_per_node: int = 3,
    on_reply: Callable[[], None] | None = None,
) -> list[tuple[Proc, dict, dict]]:
    """Send every node its orders, ``threads_per_node`` at a time, all nodes at once."""
    local = threading.local()
    done: list[tuple[Proc, dict, dict]] = []
    lock = threading.Lock()
    work = [(p, body) for p in procs for body in orders[p.url]]
    random.Random(1).shuffle(work)

    def one(item: tuple[Proc, dict]) -> None:
        proc, body = item
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            resp = session.post(f"{proc.url}/orders", json=body, timeout=60)
        except requests.RequestException:
            return  # its node was killed under it: it proves nothing either way
        if resp.status_code == 202:  # the node would not hold the request: poll it
            url = f"{proc.url}/orders/{resp.json()['id']}"
            wait_until(lambda: session.get(url).json()["status"] != "pending", 60, "the order")
            resp = session.get(url)
        assert resp.status_code in (200, 201), resp.text
        with lock:
            done.append((proc, body, resp.json()))
        if on_reply is not None:
            on_reply()

    with ThreadPoolExecutor(threads_per_node * len(procs)) as pool:
        list(pool.map(one, work))
    return done


def check_everything(net: Net, procs: list[Proc], done: list[tuple[Proc, dict, dict]]) -> dict:
    """The invariants of a quiet network after a storm of orders; returns the settled state."""
    state = settle(net, procs, timeout=60)
    trades = state["trades"]
    by_fill = {t["fill_id"]: t for t in trades}
    assert len(by_fill) == len(trades), "a fill id twice"
    assert len({t["bid_id"] for t in trades}) == len(trades), "a bid filled twice"
    assert len({t["offer_id"] for t in trades}) == len(trades), "a record filled twice"
    owner_proc = {net.ids[p.url]: p for p in procs}

    # per order: what it got + what it rests = what was asked; fills within the limit
    for proc, body, order in done:
        amount, limit = sats(body["amount_btc"]), parse_usd(body["price_usd"])
        filled = sum(sats(f["amount_btc"]) for f in order["fills"])
        for fill in order["fills"]:
            assert by_fill[fill["fill_id"]] == fill  # in the replicated ledger, as received
            assert fill["taker"] == net.ids[proc.url] != fill["maker"]
            price = parse_usd(fill["price_usd"])
            assert price <= limit if body["side"] == "buy" else price >= limit
        rested = 0
        if order["offer"] is not None:
            history = net.get(proc, f"/offers/{order['offer']['id']}")["history"]
            rested = sats(history[0]["amount_btc"])
            assert body["tif"] == "gtc" and order["status"] in ("partial", "resting")
        # a bid left in doubt (its owner died mid-answer) may have filled: never re-planned
        doubt = sum(sats(b["amount_btc"]) for b in order["in_doubt"])
        got = filled + doubt
        assert got + rested == amount if body["tif"] == "gtc" else got <= amount
        expected = "filled" if filled == amount else "partial" if filled else None
        assert order["status"] == (expected or ("resting" if rested else "cancelled"))

    # per offer record: the maker filled exactly what the receipt says, once, within its amount
    for trade in trades:
        maker = owner_proc.get(trade["maker"])
        if maker is None:
            continue
        record = net.offer(maker, trade["offer_id"])
        assert record["status"] == "filled" and record["fill"]["bid_id"] == trade["bid_id"]
        assert record["fill"]["amount_btc"] == trade["amount_btc"]
        if trade["remainder"]:
            rest = net.offer(maker, trade["remainder"])
            assert sats(rest["history"][0]["amount_btc"]) == sats(record["amount_btc"]) - sats(
                trade["amount_btc"]
            )
        else:
            assert record["amount_btc"] == trade["amount_btc"]

    # every receipt any node holds, as maker or taker, is in the ledger everybody holds
    for proc in procs:
        for role in ("maker", "taker"):
            for fill_id in stored_fills(data_dir_of(proc), role):
                assert fill_id in by_fill
    return state


def storm(net: Net, per_node: int, centre: int) -> None:
    rng = random.Random(centre)
    orders = {p.url: random_orders(rng, per_node, centre) for p in net.nodes}
    before = len(settle(net)["trades"])
    done = fire(net.nodes, orders)
    assert len(done) == per_node * len(net.nodes)
    state = check_everything(net, net.nodes, done)
    assert len(state["trades"]) - before >= per_node  # it really was a crossing storm
    for proc in net.nodes:
        health = net.get(proc, "/health")
        assert health["ledger"]["forks"] == health["ledger"]["gaps"] == 0


def test_random_crossing_orders_from_three_nodes_converge(net: Net) -> None:
    storm(net, per_node=40, centre=50_000)


@pytest.mark.slow
def test_random_crossing_orders_soak(net: Net) -> None:
    storm(net, per_node=200, centre=60_000)


def test_a_node_killed_mid_run_catches_up_its_ledger(net: Net) -> None:
    """SIGKILL a trading node mid-storm, restart it: it holds every trade, its own included."""
    late = net.add_node(grape=1, extra=["--sync-interval", "1"])
    procs = [*net.nodes, late]
    rng = random.Random(7)
    orders = {p.url: random_orders(rng, 25, 70_000) for p in procs}
    replies = threading.Event()
    count = {"n": 0}

    def progress() -> None:
        count["n"] += 1
        if count["n"] == 30:
            replies.set()

    killed_at: list[int] = []

    def killer() -> None:
        replies.wait(60)
        net.cluster.stop(late, signal.SIGKILL)
        killed_at.append(time.time_ns() // 1_000_000)

    thread = threading.Thread(target=killer)
    thread.start()
    done = fire(procs, orders, threads_per_node=2, on_reply=progress)
    thread.join()
    assert not late.alive
    given = set(stored_fills(data_dir_of(late), "maker"))  # what it promised before dying

    restarted_at = time.time_ns() // 1_000_000
    net.restart(late)
    try:
        state = check_everything(net, procs, done)
        missed = [t for t in state["trades"] if killed_at[0] < t["ts"] < restarted_at]
        assert missed, "nothing traded while it was down: the test proved nothing"
        feeds = {f["owner"]: f["height"] for f in state["verify"][0]["feeds"]}
        assert feeds.get(net.ids[late.url], 0) >= len(given)
        mine = {t["fill_id"] for t in state["trades"] if t["maker"] == net.ids[late.url]}
        assert given <= mine  # no receipt it gave out is missing from its feed
        assert net.get(late, "/health")["ledger"]["pulled"] > 0
        for proc, _, order in done:  # its orders survived the crash, as they were answered
            if proc is late:
                assert net.get(late, f"/orders/{order['id']}")["fills"] == order["fills"]
    finally:
        cancel_all(net, [late])
        net.cluster.stop(late)
