"""Restart: 3 nodes holding 100 open offers; the time from restart until a node lists them all.

Why (issue 10.1): before the fix a restarted node listed only its own offers until their
owners refreshed them (minutes), because the "seen" floor it restored rejected the
unchanged current version of every foreign offer. Two cases, each timed from spawning
the processes (interpreter start, key load, announce, first sync) until GET /offers lists
every open offer: one node restarted while the others run, and all three restarted at
once (the grapes keep running, as they would under `make start-all` restarted node by
node; with everything restarted, the grapes' start adds to this). Nodes run with the
default sync interval (15 s): a figure far below it shows the first sync did the work.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
from _common import (
    ApiError,
    base_parser,
    create_offer,
    http,
    log,
    median_of,
    network,
    open_offers,
    run_bench,
    wait_for,
)

from p2p_offers.cluster import Proc


async def lists_all(session: aiohttp.ClientSession, url: str, ids: set[str]) -> bool:
    try:
        return {o["id"] for o in await open_offers(session, url)} >= ids
    except (aiohttp.ClientError, OSError, ApiError):
        return False


async def restart(net, session, procs: list[Proc], ids: set[str], timeout: float) -> float:
    """Stop ``procs`` (SIGTERM), start them again; seconds until each lists ``ids``."""
    for proc in procs:
        net.cluster.stop(proc)
    start = time.perf_counter()
    for proc in procs:
        net.cluster.start(proc)
    await asyncio.gather(*(wait_for(lambda p=p: lists_all(session, p.url, ids), timeout, 0.02)
                           for p in procs))  # fmt: skip
    return time.perf_counter() - start


async def run(args) -> dict:
    with network(3) as net:
        async with http() as session:
            ids = set()
            for i in range(args.offers):
                url = net.urls[i % len(net.urls)]
                ids.add((await create_offer(session, url, "0.01", f"{30000 + i}.00"))["id"])
            for url in net.urls:
                await wait_for(lambda u=url: lists_all(session, u, ids), 60, 0.05)
            rounds = []
            for r in range(args.rounds):
                one = await restart(net, session, [net.nodes[r % 3]], ids, args.timeout)
                every = await restart(net, session, net.nodes, ids, args.timeout)
                result = {"one_node_s": round(one, 3), "all_nodes_s": round(every, 3)}
                log(f"round {r + 1}: {result}")
                rounds.append(result)
    return {
        "bench": "node_restart",
        "nodes": 3,
        "offers": args.offers,
        "sync_interval_s": 15.0,
        "rounds": rounds,
        "median": median_of(rounds),
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=120.0, help="per restart, seconds")
    run_bench(parser, run)


if __name__ == "__main__":
    main()
