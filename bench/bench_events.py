"""GET /events: how soon a change reaches a client's stream, and what publishing costs a node.

Latency: an offer is created on node A; the clock runs from the moment its POST /offers is
sent until the ``book`` event naming it arrives on a stream open on A itself (``on_source``)
and on one open on node B (``on_peer``: the push to B, B's checks, B's event). That is what
the web page and ``p2p-offers watch`` wait for. Each offer is cancelled before the next, so
the books stay small. Reported beside it: the POST's own round trip (``reply``).

Cost: ``EventHub.publish`` in process (what every book change, fill and trade costs the node's
thread that made it, under the index lock for book changes), with no client and with the
most clients a node serves by default (4).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
from _common import base_parser, create_offer, expect, http, log, network, run_bench, summarize

from p2p_offers.node.http.events import EventHub


async def follow(url: str, seen: dict[str, float], ready: asyncio.Event) -> None:
    """Record when each offer id first arrives in a ``book`` event on ``url``'s stream."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + "/events", params={"types": "book"}) as resp,
    ):
        ready.set()
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: ") and '"offer"' in line:
                offer_id = json.loads(line[6:])["offer"]["id"]
                seen.setdefault(offer_id, time.perf_counter())


async def latency(samples: int) -> dict[str, Any]:
    with network(nodes=2, grapes=1) as net:
        a, b = net.urls
        at_a: dict[str, float] = {}
        at_b: dict[str, float] = {}
        ready_a, ready_b = asyncio.Event(), asyncio.Event()
        readers = [
            asyncio.create_task(follow(a, at_a, ready_a)),
            asyncio.create_task(follow(b, at_b, ready_b)),
        ]
        await ready_a.wait()
        await ready_b.wait()
        on_source, on_peer, reply = [], [], []
        async with http() as session:
            for i in range(samples):
                sent = time.perf_counter()
                offer = await create_offer(session, a, "0.01", f"{30000 + i}.00")
                answered = time.perf_counter()
                deadline = time.monotonic() + 10
                while not (offer["id"] in at_a and offer["id"] in at_b) and (
                    time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.0005)
                if offer["id"] in at_a and offer["id"] in at_b:
                    on_source.append((at_a[offer["id"]] - sent) * 1000)
                    on_peer.append((at_b[offer["id"]] - sent) * 1000)
                    reply.append((answered - sent) * 1000)
                await expect(session, "DELETE", f"{a}/offers/{offer['id']}")
        for task in readers:
            task.cancel()
        log(f"{len(on_peer)} of {samples} offers seen on both streams")
        return {
            "on_source": summarize(on_source),
            "on_peer": summarize(on_peer),
            "reply": summarize(reply),
        }


def publish_cost(events: int, clients: int) -> float:
    """Microseconds per ``EventHub.publish`` with ``clients`` subscribers.

    Their queues are made large enough to hold every event, so each publish does the full
    work of handing the event to every client (a node's real queues are drained by the
    streams' threads; a drainer here would compete for the GIL with what is measured).
    """
    hub = EventHub(max_clients=clients, queue_size=events + 1)
    for _ in range(clients):
        hub.subscribe(None, None)
    render = lambda: {"x": 1}  # noqa: E731 - never rendered: nobody writes a frame here
    started = time.perf_counter()
    for _ in range(events):
        hub.publish("book", render)
    elapsed = time.perf_counter() - started
    assert hub.stats()["dropped_slow"] == 0
    return round(elapsed / events * 1e6, 2)


async def main(args: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "events", "samples": args.samples}
    result["latency"] = await latency(args.samples)
    result["publish_us"] = {
        f"{n}_clients": min(publish_cost(args.events, n) for _ in range(args.rounds))
        for n in (0, 4)
    }
    return result


if __name__ == "__main__":
    parser = base_parser(__doc__)
    parser.add_argument("--samples", type=int, default=100, help="offers timed")
    parser.add_argument("--events", type=int, default=50_000, help="publishes timed in process")
    run_bench(parser, main)
