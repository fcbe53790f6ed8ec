"""Hot offer: 3 taker nodes fire bids at one large offer at concurrency 32 in total.

Why: the owner serializes all bids on one offer chain, so this is the throughput ceiling
of a popular offer, and the place where an overfill would show. Every bid names the
ORIGINAL offer id; the owner applies it to the live remainder of the chain (SPEC §6), so
takers never chase remainder ids. The offer is sized to exactly ``--bids`` bids, so a run
that outlasts it ends on 409 ``offer_taken`` and proves the last satoshi is sold once.

Reported: accepted bids/s, CPU per accepted bid (all grapes and nodes, user + system;
far less noisy than wall time on a shared machine) over the bidding and until publication
has settled (from the first bid sent to the last receipt), and while bidding split by role
(the maker, the takers, the grapes), messages per accepted bid (grape requests and calls
to other nodes, by kind, from every node's `/metrics`, bidding until settled), 409s by code,
other failures, and the overfill: receipts summed against the offer's amount, and the
owner's own record chain (filled amounts summed along ``fill.remainder``) against the
receipts, which must agree exactly. Target (issue 3): >= 500 accepted bids/s, 0 overfill.

``--api rpc`` has the clients bid through the takers' Grenache RPC (``placeBid``, as a
``grenache-nodejs-http`` client would) instead of REST: the same bid path behind a
different edge, to see what the REST edge (waitress and Flask) costs.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
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
    messages,
    network,
    open_offers,
    run_bench,
    summarize,
    wait_for,
)

from p2p_offers.money import format_btc, parse_btc

TAKERS = 3
SETTLE_S = 0.5  # after the books agree: let trailing DHT puts and ledger pulls finish


@dataclass
class Tally:
    receipts: list[dict] = field(default_factory=list)
    conflicts: collections.Counter = field(default_factory=collections.Counter)
    failures: collections.Counter = field(default_factory=collections.Counter)
    latencies_ms: list[float] = field(default_factory=list)  # of accepted bids
    last_receipt: float = 0.0


async def bid_rest(session: aiohttp.ClientSession, taker, offer_id: str, bid_btc: str):
    """(201 and the receipt, 409 and the error code, or another status) over REST."""
    url = f"{taker.url}/offers/{offer_id}/bids"
    status, body = await call(session, "POST", url, {"amount_btc": bid_btc})
    if status == 409:
        return status, (body or {}).get("error", {}).get("code", "?")
    return status, body


async def bid_rpc(session: aiohttp.ClientSession, taker, offer_id: str, bid_btc: str):
    """The same through the node's Grenache RPC (``placeBid``), as a Grenache client sends it."""
    args = {"offer_id": offer_id, "amount_btc": bid_btc}
    frame = [str(uuid.uuid4()), "p2p_offers:node", {"action": "placeBid", "args": [args]}]
    async with session.post(f"http://{taker.rpc}/", json=frame) as resp:
        _, err, data = json.loads(await resp.read())
    if err is None:
        return 201, data
    code = err.split(":", 1)[0].removeprefix("ERR_").lower()
    return (409, code) if code in CONFLICTS else (err[:40], None)


CONFLICTS = {"offer_taken", "insufficient_amount", "stale_offer"}
APIS = {"rest": bid_rest, "rpc": bid_rpc}


async def bidder(
    session: aiohttp.ClientSession,
    send,
    taker,
    offer_id: str,
    bid_btc: str,
    deadline: float,
    tally: Tally,
) -> None:
    """Bid until the chain is taken or time is up; in-flight bids always finish."""
    while time.perf_counter() < deadline:
        sent = time.perf_counter()
        try:
            status, body = await send(session, taker, offer_id, bid_btc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures[type(exc).__name__] += 1
            continue
        if status == 201:
            tally.receipts.append(body)
            tally.last_receipt = time.perf_counter()
            tally.latencies_ms.append((tally.last_receipt - sent) * 1000)
        elif status == 409:
            tally.conflicts[body] += 1
            if body == "offer_taken":
                return
        else:
            tally.failures[str(status)] += 1
            await asyncio.sleep(0.01)  # do not spin on a failing node


async def owner_chain(session: aiohttp.ClientSession, owner_node: str, root: str) -> dict:
    """Walk the owner's records from the root along fill.remainder; sums what it filled."""
    filled, records, open_left, offer_id = 0, 0, 0, root
    while offer_id:
        record = await expect(session, "GET", f"{owner_node}/offers/{offer_id}")
        records += 1
        fill = record.get("fill")
        if fill:
            filled += parse_btc(fill["amount_btc"])
        if record["status"] == "open":
            open_left = parse_btc(record["amount_btc"])
        offer_id = fill.get("remainder") if fill else None
    return {"filled_sats": filled, "records": records, "open_sats": open_left}


async def gone_everywhere(session: aiohttp.ClientSession, takers: list[str], owner: str) -> bool:
    """No taker lists an open offer of ``owner`` any more: publication has caught up."""
    books = await asyncio.gather(*(open_offers(session, t, owner) for t in takers))
    return not any(books)


def per_bid(cpu_seconds: float, receipts: list) -> float | None:
    return round(1000 * cpu_seconds / len(receipts), 2) if receipts else None


async def one_round(
    session: aiohttp.ClientSession,
    net,
    bids: int,
    bid_btc: str,
    concurrency: int,
    duration: float,
    api: str,
) -> dict:
    maker, takers = net.urls[0], net.urls[1 : 1 + TAKERS]
    taker_procs = net.nodes[1 : 1 + TAKERS]
    procs = [*net.nodes, *net.grapes]
    roles = {"maker": net.nodes[:1], "takers": net.nodes[1 : 1 + TAKERS], "grapes": net.grapes}
    offer_sats = bids * parse_btc(bid_btc)
    offer = await create_offer(session, maker, format_btc(offer_sats))

    async def everywhere() -> bool:
        books = await asyncio.gather(*(open_offers(session, t, offer["owner"]) for t in takers))
        return all(any(o["id"] == offer["id"] for o in book) for book in books)

    await wait_for(everywhere, 10)

    tally = Tally()
    sent_before = await messages(session, net.urls)
    cpu_before = cpu_s(procs)
    role_before = {role: cpu_s(p) for role, p in roles.items()}
    start = time.perf_counter()
    await asyncio.gather(
        *(
            bidder(
                session,
                APIS[api],
                taker_procs[i % TAKERS],
                offer["id"],
                bid_btc,
                start + duration,
                tally,
            )
            for i in range(concurrency)
        )
    )
    elapsed = (tally.last_receipt or time.perf_counter()) - start
    cpu_bidding = cpu_s(procs) - cpu_before
    by_role = {
        role: per_bid(cpu_s(p) - role_before[role], tally.receipts) for role, p in roles.items()
    }
    receipt_sats = sum(parse_btc(r["amount_btc"]) for r in tally.receipts)
    if receipt_sats == offer_sats:  # else an open remainder stays listed
        await wait_for(lambda: gone_everywhere(session, takers, offer["owner"]), 10)
    await asyncio.sleep(SETTLE_S)
    cpu_settled = cpu_s(procs) - cpu_before

    sent = await messages(session, net.urls) - sent_before
    fill_ids = {r["fill_id"] for r in tally.receipts}
    chain = await owner_chain(session, maker, offer["id"])
    return {
        "accepted": len(tally.receipts),
        "accepted_per_s": round(len(tally.receipts) / elapsed, 1) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 3),
        "exhausted": receipt_sats == offer_sats,
        "cpu_ms_per_bid": per_bid(cpu_bidding, tally.receipts),
        "cpu_ms_per_bid_settled": per_bid(cpu_settled, tally.receipts),
        **{f"cpu_ms_per_bid_{role}": ms for role, ms in by_role.items()},  # while bidding
        "bid_latency_p50_ms": summarize(tally.latencies_ms)["p50_ms"],
        "bid_latency_p99_ms": summarize(tally.latencies_ms)["p99_ms"],
        "messages_per_bid": {
            k: round(v / len(tally.receipts), 2) for k, v in sorted(sent.items()) if v
        }
        if tally.receipts
        else {},
        "conflicts_409": sum(tally.conflicts.values()),
        "conflicts_by_code": dict(tally.conflicts),
        "failures": dict(tally.failures),
        "offer_btc": format_btc(offer_sats),
        "receipts_btc": format_btc(receipt_sats),
        "overfill_sats": max(0, receipt_sats - offer_sats),
        "duplicate_fill_ids": len(tally.receipts) - len(fill_ids),
        "owner_filled_btc": format_btc(chain["filled_sats"]),
        "owner_open_btc": format_btc(chain["open_sats"]),
        "owner_records": chain["records"],
        "owner_matches_receipts": chain["filled_sats"] == receipt_sats
        and chain["filled_sats"] + chain["open_sats"] == offer_sats,
    }


async def run(args) -> dict:
    with network(1 + TAKERS) as net:
        async with http(args.concurrency * 2) as session:
            rounds = []
            for r in range(args.rounds):
                result = await one_round(
                    session, net, args.bids, args.bid_btc, args.concurrency, args.duration, args.api
                )
                log(f"round {r + 1}: {result}")
                rounds.append(result)
    overfill = sum(r["overfill_sats"] for r in rounds)
    return {
        "bench": "node_hot_offer",
        "takers": TAKERS,
        "api": args.api,
        "concurrency": args.concurrency,
        "bid_btc": args.bid_btc,
        "bids_per_offer": args.bids,
        "rounds": rounds,
        "median": median_of(rounds),
        "overfill_sats_total": overfill,
        "owner_matches_receipts": all(r["owner_matches_receipts"] for r in rounds),
        "target_accepted_per_s": 500,
        "met": overfill == 0
        and all(r["owner_matches_receipts"] for r in rounds)
        and median_of(rounds)["accepted_per_s"] >= 500,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--bids", type=int, default=2000, help="offer size, in bids")
    parser.add_argument("--bid-btc", default="0.001")
    parser.add_argument("--duration", type=float, default=20.0, help="per-round cap, s")
    parser.add_argument(
        "--api", choices=sorted(APIS), default="rest",
        help="how the bench's clients bid: REST, or Grenache RPC placeBid",
    )  # fmt: skip
    run_bench(parser, run)


if __name__ == "__main__":
    main()
