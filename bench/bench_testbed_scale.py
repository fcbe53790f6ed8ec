"""Scale on the multi-host test bed (issue 8.5/8.6): propagation, messages, memory, heal.

Per size (``--sizes``, default 10,30,50 hosts) at 80 ms RTT ± 10 ms, 1 % loss per
packet and direction, one grape and one node per host, gossip propagation:

- ``propagation``: an offer created on one host until it is open in ``GET /offers``
  on every other host (``bench_node_propagation``'s sampler, polled from the control
  namespace, which has no delay), p50/p99; ``--samples`` offers from rotating hosts;
- ``messages_per_version``: from every node's ``/health`` ``gossip`` counters over
  the sampling: version messages sent by owners for their own versions
  (``sent_by_owner``) and version messages sent by anyone (``sent_version``), per
  version published (``published``; each sample publishes two: create and cancel),
  against the targets ``<= 8`` and ``<= 8 x N``;
- ``rss_mb``: resident memory (``/proc/<pid>/status`` VmRSS) per grape and per node
  after the sampling, median and max.

Then ``heal``: 6 hosts at the same conditions split 3|3 for ``--cut-s`` seconds while
each side creates an offer and cancels one the other side holds; after the heal, the
time until every host's open book is the same, and the anti-entropy rounds that took
(``/health`` ``gossip.rounds``, largest increase over the nodes), with ``--sync-interval``
``--sync-s``. Prints one JSON object; progress goes to stderr.

Usage: ``sudo .venv/bin/python bench/bench_testbed_scale.py [--sizes 10,30,50]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from _common import create_offer, emit, expect, http, log, open_offers, summarize
from bench_node_propagation import learn_owners, settle
from bench_testbed import _cpu_s

from p2p_offers.testbed import Conditions, Host, TestBed, missing_requirements
from p2p_offers.testbed.probe import RttSample, measure_rtt

WAN = Conditions(rtt_ms=80, jitter_ms=10, loss_pct=1)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def gossip_totals(session: requests.Session, hosts: list[Host]) -> dict[str, int]:
    totals = {"published": 0, "sent_by_owner": 0, "sent_version": 0}
    for h in hosts:
        g = session.get(f"{h.node_url}/health", timeout=30).json()["gossip"]
        for k in totals:
            totals[k] += g[k]
    return totals


async def sample(
    session: Any, urls: list[str], owners: list[str], src: int, poll_s: float, timeout: float
) -> float:
    """ms from the POST until the new offer is open on every other host.

    Unlike ``bench_node_propagation.one_sample`` this waits for the offer's own id: at 1 %
    loss a previous sample's create can arrive at a host late (a lost segment, resent),
    after its cancel was seen everywhere else, and be listed for a moment.
    """
    target: list[str] = []

    async def sight(url: str) -> float:
        while True:
            found = {o["id"] for o in await open_offers(session, url, owners[src])}
            if target and target[0] in found:
                return time.perf_counter()
            await asyncio.sleep(poll_s)

    others = [u for i, u in enumerate(urls) if i != src]
    pollers = [asyncio.create_task(sight(u)) for u in others]
    await asyncio.sleep(0.002)
    t0 = time.perf_counter()
    offer = await create_offer(session, urls[src], "0.01")
    target.append(offer["id"])
    try:
        seen = await asyncio.wait_for(asyncio.gather(*pollers), timeout)
    finally:
        for task in pollers:
            task.cancel()
    await expect(session, "DELETE", f"{urls[src]}/offers/{offer['id']}")
    await settle(session, urls, owners[src], timeout)
    return (max(seen) - t0) * 1000


async def propagate(bed: TestBed, samples: int, poll_s: float) -> dict[str, Any]:
    urls = [h.node_url for h in bed.hosts]
    async with http() as session:
        owners = await learn_owners(session, urls, 60.0)
        visible = []
        for i in range(samples):
            v = await sample(session, urls, owners, i % len(urls), poll_s, 60.0)
            visible.append(v)
    return summarize(visible)


def scale(root: Path, hosts: int, samples: int, sync_s: float) -> dict[str, Any]:
    started = time.perf_counter()
    with TestBed(hosts, WAN, root / f"scale-{hosts}") as bed:
        bed.start_network(node_extra=["--sync-interval", str(sync_s)], timeout=600)
        row: dict[str, Any] = {"hosts": hosts, "start_s": round(time.perf_counter() - started, 1)}
        log(f"{hosts} hosts up in {row['start_s']} s")
        session = requests.Session()
        session.trust_env = False
        # the emulated RTT while the sampling loads the machine: is the delay line on time?
        a, b = bed.hosts[-1], bed.hosts[-2]
        probed: list[RttSample] = []
        prober = threading.Thread(
            target=lambda: probed.append(measure_rtt(a.ns, b.ns, b.addr, 100, 0.2)), daemon=True
        )
        with bed.control():
            before = gossip_totals(session, bed.hosts)
            counters0, cpu0 = bed.switch_counters(), _cpu_s(bed.delay_pid or 0)
            t0 = time.perf_counter()
            prober.start()
            # the pollers are N-1 HTTP loops on this 2-core machine: poll less often as N grows
            row["propagation"] = asyncio.run(propagate(bed, samples, 0.002 * max(1, hosts / 5)))
            row["sampling_s"] = round(time.perf_counter() - t0, 1)
            counters1, cpu1 = bed.switch_counters(), _cpu_s(bed.delay_pid or 0)
            elapsed = time.perf_counter() - t0
            after = gossip_totals(session, bed.hosts)
            prober.join()  # 100 probes 0.2 s apart: at least 20 s, past a short sampling
        rtt = probed[0] if probed else RttSample(0, [])
        row["delay_line"] = {
            "pps": round((counters1["delayed"] - counters0["delayed"]) / elapsed),
            "cpu_pct_of_one_core": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "load_avg": round(os.getloadavg()[0], 1),
            "rtt_asked_ms": WAN.rtt_ms,
            "rtt_probe_median_ms": round(rtt.median_ms, 1),
            "rtt_probe_p95_ms": round(rtt.quantile_ms(0.95), 1),
            "rtt_probe_p99_ms": round(rtt.quantile_ms(0.99), 1),
            "probes_lost": rtt.sent - rtt.received,
        }
        versions = after["published"] - before["published"]
        by_owner = (after["sent_by_owner"] - before["sent_by_owner"]) / max(1, versions)
        total = (after["sent_version"] - before["sent_version"]) / max(1, versions)
        row["messages_per_version"] = {
            "versions": versions,
            "by_owner": round(by_owner, 2),
            "total": round(total, 1),
            "total_per_host": round(total / hosts, 2),
            "target_by_owner": 8,
            "target_total": 8 * hosts,
            "met": by_owner <= 8 and total <= 8 * hosts,
        }
        p99 = row["propagation"]["p99_ms"]
        row["propagation"]["target_p99_ms"] = 4 * WAN.rtt_ms + 100
        row["propagation"]["met"] = p99 is not None and p99 <= 4 * WAN.rtt_ms + 100
        grapes = [rss_mb(h.grape.popen.pid) for h in bed.hosts if h.grape and h.grape.popen]
        nodes = [rss_mb(h.node.popen.pid) for h in bed.hosts if h.node and h.node.popen]
        row["rss_mb"] = {"grape": spread(grapes), "node": spread(nodes)}
        log(f"{hosts} hosts: {row}")
    # the delay line's own lateness over the whole run, from its last log line (delay.py)
    lines = (root / f"scale-{hosts}" / "delay.log").read_text(errors="replace").splitlines()
    row["delay_line"]["own_lateness"] = lines[-1].partition(", ")[2] if lines else None
    row["run_s"] = round(time.perf_counter() - started, 1)
    return row


def heal(root: Path, cut_s: float, sync_s: float) -> dict[str, Any]:
    with TestBed(6, WAN, root / "heal") as bed:
        bed.start_network(node_extra=["--sync-interval", str(sync_s)])
        s = requests.Session()
        s.trust_env = False
        hosts = bed.hosts
        left, right = hosts[:3], hosts[3:]

        def post(h: Host, price: str) -> dict:
            body = {"side": "sell", "price_usd": price, "amount_btc": "0.1"}
            resp = s.post(f"{h.node_url}/offers", json=body, timeout=30)
            assert resp.status_code == 201, resp.text
            return resp.json()

        def book(h: Host) -> list[tuple[str, int]]:
            got = s.get(f"{h.node_url}/offers?status=open", timeout=30).json()["offers"]
            return sorted((o["id"], o["seq"]) for o in got)

        def rounds() -> list[int]:
            return [
                s.get(f"{h.node_url}/health", timeout=30).json()["gossip"]["rounds"] for h in hosts
            ]

        with bed.control():
            doomed = [post(left[0], "30000.00"), post(right[0], "31000.00")]
            deadline = time.monotonic() + 60
            while not all(len(book(h)) == 2 for h in hosts) and time.monotonic() < deadline:
                time.sleep(0.2)
            bed.partition(left, right)
            for h in (left[1], right[1]):
                post(h, "29000.00")
            for owner, d in ((left[0], doomed[0]), (right[0], doomed[1])):
                assert s.delete(f"{owner.node_url}/offers/{d['id']}", timeout=30).status_code == 200
            time.sleep(cut_s)  # the cut lasts this long: the condition, not a measurement
            r0 = rounds()
            bed.heal()
            t0 = time.perf_counter()
            while True:
                books = [book(h) for h in hosts]
                if all(b == books[0] for b in books):
                    break
                if time.perf_counter() - t0 > 300:
                    return {"healed": False}
                time.sleep(0.1)
            healed_s = time.perf_counter() - t0
            r1 = rounds()
    spent = max(b - a for a, b in zip(r0, r1, strict=True))
    return {
        "hosts": 6,
        "cut_s": cut_s,
        "sync_interval_s": sync_s,
        "healed": True,
        "heal_s": round(healed_s, 2),
        "anti_entropy_rounds": spent,
        "target": "<= 2 rounds and <= 30 s",
        "met": spent <= 2 and healed_s <= 30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,30,50")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--sync-s", type=float, default=5.0)
    parser.add_argument("--cut-s", type=float, default=30.0)
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        emit({"bench": "testbed_scale", "skipped": reason})
        return
    started = time.perf_counter()
    result: dict[str, Any] = {
        "bench": "testbed_scale",
        "cores": os.cpu_count(),
        "load_avg_at_start": round(os.getloadavg()[0], 2),
        "conditions": {"rtt_ms": WAN.rtt_ms, "jitter_ms": WAN.jitter_ms, "loss_pct": WAN.loss_pct},
    }
    with tempfile.TemporaryDirectory(prefix="p2p-scale-") as tmp:
        root = Path(tmp)
        result["heal"] = heal(root, args.cut_s, args.sync_s)
        log(f"heal: {result['heal']}")
        result["scale"] = []
        for n in [int(x) for x in args.sizes.split(",")]:
            try:
                result["scale"].append(scale(root, n, args.samples, args.sync_s))
            except Exception as exc:  # say what did not fit, keep the rest
                result["scale"].append({"hosts": n, "failed": repr(exc)[:2000]})
                log(f"{n} hosts failed: {exc!r}")
    result["run_s"] = round(time.perf_counter() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
