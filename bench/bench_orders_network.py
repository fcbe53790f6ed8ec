"""Crossing orders across 3 nodes: orders/s, trades/s, order latency, and the ledger at the end.

Why measured this way: an order is done when its node has walked the book and every
maker it hit has made the fill durable and signed a receipt, so the clock runs from
``POST /orders`` sent to its reply, and throughput counts replies. Each node first rests
liquidity on both sides (offers of ``--seed-btc`` at a spread of price levels), then
``--concurrency`` clients per node send small limit orders that cross it: buys above the
best ask, sells below the best bid, random sizes, GTC or IOC. Orders never match their
own node's offers (self-trade prevention), so every fill is a bid to another node.
A GTC order crossing its node's own resting offers is refused ``self_cross`` unless it
says ``"stp": "cancel_resting"``, and every GTC order here crosses the node's own seeded
offers (they sit at the same levels as the other nodes'), so GTC orders say it: without
it half the requests were refused 409 and never traded (their CPU was charged to the
orders that did, and each cost its client a 10 ms pause). An order that fills cancels
nothing; only a rest cancels the node's own offers it would cross.
A node works its orders one at a time (SPEC §6), so per-node throughput is the inverse
of one order's service time and the three nodes add up.

After the run the benchmark waits until every node's ``GET /trades`` lists every fill
any order got and ``GET /ledger/verify`` is ok on every node: the trades are not counted
as done until every node holds and has verified them. That wait is reported
(``ledger_converged_s``) but not charged to throughput.

Target (issue 4): >= 300 crossing orders/s on 3 nodes, every trade in every node's
verified ledger.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from dataclasses import dataclass, field

import aiohttp
from _common import (
    base_parser,
    call,
    cpu_s,
    create_offer,
    expect,
    http,
    log,
    median_of,
    network,
    open_offers,
    run_bench,
    summarize,
    wait_for,
)

from p2p_offers.money import format_btc, format_usd

TARGET_ORDERS_PER_S = 300
LEVELS = 20  # seeded price levels per side and node


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    crossing: int = 0  # orders with at least one fill
    fills: list[dict] = field(default_factory=list)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)
    last_reply: float = 0.0


async def seed(session: aiohttp.ClientSession, urls: list[str], centre: int, btc: str) -> None:
    """Rest ``LEVELS`` asks above and bids below ``centre`` USD on every node; wait until seen."""
    made = []
    for url in urls:
        for level in range(1, LEVELS + 1):
            for side, price in (("sell", centre + level), ("buy", centre - level)):
                made.append(create_offer(session, url, btc, format_usd(100 * price), side))
    offers = await asyncio.gather(*made)
    want = {o["id"] for o in offers}

    async def everywhere() -> bool:
        books = await asyncio.gather(*(open_offers(session, u) for u in urls))
        return all(want <= {o["id"] for o in book} for book in books)

    await wait_for(everywhere, 30, interval=0.05)


async def client(
    session: aiohttp.ClientSession,
    url: str,
    centre: int,
    deadline: float,
    rng: random.Random,
    tally: Tally,
) -> None:
    """Send crossing orders back to back until the deadline."""
    while time.perf_counter() < deadline:
        side = rng.choice(("buy", "sell"))
        reach = rng.randint(1, 3 * LEVELS // 4)  # how deep into the other side it may go
        price = centre + reach if side == "buy" else centre - reach
        body = {
            "side": side,
            "price_usd": format_usd(100 * price),
            "amount_btc": format_btc(rng.randint(10, 200) * 10_000),  # 0.001 .. 0.02 BTC
        }
        if rng.choice(("gtc", "ioc")) == "gtc":
            body.update(tif="gtc", stp="cancel_resting")
        else:
            body["tif"] = "ioc"
        sent = time.perf_counter()
        try:
            status, order = await call(session, "POST", f"{url}/orders", body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures[type(exc).__name__] += 1
            continue
        if status == 202:  # the node would not hold the request: poll until it is done
            order_url = f"{url}/orders/{order['id']}"
            while order["status"] == "pending":
                await asyncio.sleep(0.005)
                order = await expect(session, "GET", order_url)
        elif status != 201:
            tally.failures[str(status)] += 1
            await asyncio.sleep(0.01)
            continue
        tally.last_reply = time.perf_counter()
        tally.latencies_ms.append((tally.last_reply - sent) * 1000)
        tally.statuses[order["status"]] += 1
        if order["fills"]:
            tally.crossing += 1
            tally.fills.extend(order["fills"])


async def ledger_converged(
    session: aiohttp.ClientSession, urls: list[str], fill_ids: set[str], timeout: float
) -> tuple[float, bool, int]:
    """(seconds, every fill in every node's verified ledger, trades held) once it holds."""
    start = time.perf_counter()
    held = 0

    async def check() -> bool:
        nonlocal held
        lists = await asyncio.gather(*(expect(session, "GET", f"{u}/trades") for u in urls))
        sets = [{t["fill_id"] for t in body["trades"]} for body in lists]
        held = len(sets[0])
        if not all(s == sets[0] for s in sets) or not fill_ids <= sets[0]:
            return False
        reports = await asyncio.gather(
            *(expect(session, "GET", f"{u}/ledger/verify") for u in urls)
        )
        return all(r["ok"] for r in reports)

    try:
        await wait_for(check, timeout, interval=0.25)
        return time.perf_counter() - start, True, held
    except TimeoutError:
        return time.perf_counter() - start, False, held


async def clear_books(session: aiohttp.ClientSession, urls: list[str], owners: list[str]) -> None:
    """Cancel every open offer until no node lists any, so rounds never trade with each other.

    One pass is not enough: an uncrossing still under way when the round ends
    may give back a reserved amount as a new offer after it.
    """

    async def empty() -> bool:
        for url, owner in zip(urls, owners, strict=True):
            mine = await open_offers(session, url, owner)
            cancels = (call(session, "DELETE", f"{url}/offers/{o['id']}") for o in mine)
            await asyncio.gather(*cancels)
        books = await asyncio.gather(*(open_offers(session, u) for u in urls))
        return not any(books)

    await wait_for(empty, 30, interval=0.1)


async def one_round(session: aiohttp.ClientSession, net, owners: list[str], args, r: int) -> dict:
    urls = net.urls
    centre = 50_000 + 1_000 * r  # a fresh band per round
    await seed(session, urls, centre, args.seed_btc)
    tally = Tally()
    rng = random.Random(args.seed + r)
    cpu_before = (cpu_s(net.nodes), cpu_s(net.grapes))
    start = time.perf_counter()
    await asyncio.gather(
        *(
            client(session, url, centre, start + args.duration, random.Random(rng.random()), tally)
            for url in urls
            for _ in range(args.concurrency)
        )
    )
    elapsed = (tally.last_reply or time.perf_counter()) - start
    cpu_nodes, cpu_grapes = cpu_s(net.nodes) - cpu_before[0], cpu_s(net.grapes) - cpu_before[1]
    fill_ids = {f["fill_id"] for f in tally.fills}
    converged_s, in_every_ledger, held = await ledger_converged(
        session, urls, fill_ids, args.converge_timeout
    )
    health = await asyncio.gather(*(expect(session, "GET", f"{u}/health") for u in urls))
    await clear_books(session, urls, owners)
    lat = summarize(tally.latencies_ms)
    orders = len(tally.latencies_ms)
    return {
        "orders": orders,
        "crossing_orders": tally.crossing,
        "trades": len(tally.fills),
        "elapsed_s": round(elapsed, 3),
        "crossing_orders_per_s": round(tally.crossing / elapsed, 1) if elapsed else 0.0,
        "orders_per_s": round(orders / elapsed, 1) if elapsed else 0.0,
        "trades_per_s": round(len(tally.fills) / elapsed, 1) if elapsed else 0.0,
        "order_latency_p50_ms": lat["p50_ms"],
        "order_latency_p99_ms": lat["p99_ms"],
        "order_latency_max_ms": lat["max_ms"],
        "cpu_ms_per_order_nodes": round(1000 * cpu_nodes / orders, 2) if orders else None,
        "cpu_ms_per_order_grapes": round(1000 * cpu_grapes / orders, 2) if orders else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "statuses": dict(tally.statuses),
        "failures": dict(tally.failures),
        "duplicate_fill_ids": len(tally.fills) - len(fill_ids),
        "ledger_converged_s": round(converged_s, 2),
        "every_trade_in_every_verified_ledger": in_every_ledger,
        "trades_held_per_node": held,
        "taking_refused": sum(
            n for h in health for k, n in h["taking"].items() if k.startswith("refused_")
        ),
        "ledger_forks_or_gaps": sum(h["ledger"]["forks"] + h["ledger"]["gaps"] for h in health),
    }


async def run(args) -> dict:
    with network(3) as net:
        async with http(args.concurrency * 6) as session:
            owners = [(await expect(session, "GET", f"{u}/health"))["client_id"] for u in net.urls]
            rounds = []
            for r in range(args.rounds):
                result = await one_round(session, net, owners, args, r)
                log(f"round {r + 1}: {result}")
                rounds.append(result)
    median = median_of(rounds)
    ledgers_ok = all(r["every_trade_in_every_verified_ledger"] for r in rounds)
    return {
        "bench": "orders_network",
        "nodes": 3,
        "cpus": os.cpu_count(),
        "concurrency_per_node": args.concurrency,
        "duration_s": args.duration,
        "rounds": rounds,
        "median": median,
        "every_trade_in_every_verified_ledger": ledgers_ok,
        "target_crossing_orders_per_s": TARGET_ORDERS_PER_S,
        "met": ledgers_ok and median["crossing_orders_per_s"] >= TARGET_ORDERS_PER_S,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4, help="clients per node")
    parser.add_argument("--duration", type=float, default=10.0, help="per round, s")
    parser.add_argument("--seed-btc", default="1", help="size of each seeded offer")
    parser.add_argument("--seed", type=int, default=4, help="random seed")
    parser.add_argument("--converge-timeout", type=float, default=60.0)
    run_bench(parser, run)


if __name__ == "__main__":
    main()
