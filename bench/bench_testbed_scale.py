"""Scale on the multi-host test bed (issue 8.5/8.6): propagation, messages, memory, heal.

Per size (``--sizes``, default 10,30,50 hosts) at 80 ms RTT ± 10 ms, 1 % loss per
packet and direction, one grape and one node per host, gossip propagation:

- ``idle_cpu``: after start-up and ``--settle-s``, each grape's and node's CPU
  (utime + stime from ``/proc/<pid>/stat``) over ``--idle-s`` with nothing asked of
  them, in % of one core: median, max and sum per kind, and the delay line's. What
  the network costs the machine before anything is measured on it;
- ``propagation``: an offer created on one host until the ``book`` event that lists
  it open has arrived from every other host, p50/p99; ``--samples`` offers from
  rotating hosts. The bench holds one ``GET /events`` stream per host (SSE, opened
  from the control namespace, which has no delay) instead of polling ``GET /offers``:
  at 50 hosts the pollers made ~2,500 requests/s, which competed with the nodes for
  the same two cores and were part of what was measured. The event is as good as a
  poll: ``OfferIndex.apply`` emits it under the index lock right after the offer
  entered the book (``EventHub.on_book``), so from then on ``GET /offers`` lists it;
  it arrives a little later than that (a streaming thread renders and writes it), so
  the figure errs on the slow side. After each sample one ``GET /offers`` per host
  confirms the offer is listed (outside the timing), and the next sample starts once
  every host has sent the cancel's ``closed`` event. A warm-up offer from every host
  comes first, waited for the same way (no polling anywhere). ``cpu_ms_per_version``:
  CPU all grapes and all nodes spent during the timed samples, per version published
  (two per sample: create, cancel), and ``..._above_idle``: less their idle rate over
  as long;
- ``messages_per_version``: from every node's ``/health`` ``gossip`` counters over
  the sampling: version messages sent by owners for their own versions
  (``sent_by_owner``) and version messages sent by anyone (``sent_version``), per
  version published (``published``; each sample publishes two: create and cancel),
  against the targets ``<= 8`` and ``<= 8 x N``; with the versions nodes got only
  from anti-entropy (``repaired``) and mesh links only one end holds (a node whose
  neighbours all pruned it without it knowing waits a digest round for every version);
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
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import requests
from _common import create_offer, emit, expect, http, log, open_offers, summarize
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
    """Every node's gossip counters summed; ``one_sided``: mesh links the other end does not
    hold (a node that counts a neighbour which pruned it gets nothing pushed from it)."""
    totals = {"published": 0, "sent_by_owner": 0, "sent_version": 0, "repaired": 0}
    meshes: dict[str, set[str]] = {}
    for h in hosts:
        health = session.get(f"{h.node_url}/health", timeout=30).json()
        g = health["gossip"]
        meshes[health["client_id"]] = set(g["neighbours"])
        for k in totals:
            totals[k] += g[k]
    totals["one_sided"] = sum(
        1 for me, mesh in meshes.items() for n in mesh if me not in meshes.get(n, {me})
    )
    totals["nodes_fed_by_nobody"] = sum(
        1 for me in meshes if not any(me in mesh for mesh in meshes.values())
    )
    return totals


class Streams:
    """One ``GET /events?types=book`` stream per host: when each (offer id, change) arrived.

    A stream that ends or is dropped by its node fails the wait (``check``) rather than
    let a sample time out on a host that will never tell.
    """

    def __init__(self, session: Any, urls: list[str]) -> None:
        self.urls = urls
        self.seen: list[dict[tuple[str, str], float]] = [{} for _ in urls]
        self._changed = asyncio.Event()
        self._ready = [asyncio.Event() for _ in urls]
        self._tasks = [asyncio.create_task(self._follow(session, i)) for i in range(len(urls))]

    async def _follow(self, session: Any, i: int) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        url = self.urls[i] + "/events"
        async with session.get(url, params={"types": "book"}, timeout=timeout) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status}")
            self._ready[i].set()
            kind = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "book":
                    data = json.loads(line[6:])
                    key = (data["offer"]["id"], data["change"])
                    self.seen[i].setdefault(key, time.perf_counter())
                    self._changed.set()
                elif line.startswith("data: ") and kind == "dropped":
                    raise RuntimeError(f"{url} dropped the stream: {line}")
        raise RuntimeError(f"{url}: the event stream ended")

    def check(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError("an event stream failed") from task.exception()

    async def ready(self) -> None:
        for event in self._ready:
            while not event.is_set():
                self.check()
                await asyncio.sleep(0.05)

    async def arrived(self, hosts: list[int], key: tuple[str, str], timeout: float) -> float:
        """When the last of ``hosts`` sent ``key`` (perf_counter); raises after ``timeout``."""
        deadline = time.perf_counter() + timeout
        while True:
            self.check()
            times = [self.seen[i].get(key) for i in hosts]
            if all(t is not None for t in times):
                return max(t for t in times if t is not None)
            left = deadline - time.perf_counter()
            if left <= 0:
                missing = sum(t is None for t in times)
                raise TimeoutError(f"{key} not seen on {missing} hosts within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


async def sample(
    session: Any, streams: Streams, urls: list[str], src: int, timeout: float
) -> float:
    """ms from the POST until every other host has sent the event listing the offer open.

    Keyed by the offer's own id: at 1 % loss a previous sample's create can arrive at a
    host late (a lost segment, resent), after its cancel was seen everywhere else.
    """
    others = [i for i in range(len(urls)) if i != src]
    t0 = time.perf_counter()
    offer = await create_offer(session, urls[src], "0.01")
    seen = await streams.arrived(others, (offer["id"], "open"), timeout)
    listed = await asyncio.gather(*(open_offers(session, urls[i], offer["owner"]) for i in others))
    missing = sum(offer["id"] not in {o["id"] for o in book} for book in listed)
    if missing:
        raise RuntimeError(f"{offer['id']}: open event sent but not listed on {missing} hosts")
    await expect(session, "DELETE", f"{urls[src]}/offers/{offer['id']}")
    await streams.arrived(others, (offer["id"], "closed"), timeout)
    return (seen - t0) * 1000


async def propagate(bed: TestBed, samples: int, idle_pct: dict[str, float]) -> dict[str, Any]:
    """A warm-up offer from every host (connections, caches, meshes; not counted), then
    ``samples`` timed ones; with the CPU all grapes and nodes spent on the timed ones."""
    urls = [h.node_url for h in bed.hosts]
    pids = {kind: _pids(bed, kind) for kind in ("grape", "node")}
    async with http() as session:
        streams = Streams(session, urls)
        try:
            await streams.ready()
            for i in range(len(urls)):
                await sample(session, streams, urls, i, 60.0)
            cpu0 = {kind: sum(map(_cpu_s, kind_pids)) for kind, kind_pids in pids.items()}
            t0 = time.perf_counter()
            visible = [
                await sample(session, streams, urls, i % len(urls), 60.0) for i in range(samples)
            ]
            cpu1 = {kind: sum(map(_cpu_s, kind_pids)) for kind, kind_pids in pids.items()}
            elapsed = time.perf_counter() - t0
        finally:
            streams.close()
    row: dict[str, Any] = summarize(visible)
    # each sample publishes two versions (create, cancel); what they cost, all hosts together
    spent = {kind: cpu1[kind] - cpu0[kind] for kind in pids}
    row["cpu_ms_per_version"] = {k: round(1000 * v / (2 * samples), 1) for k, v in spent.items()}
    # less what the same processes burn idle over as long (idle_cpu): what a version adds
    row["cpu_ms_per_version_above_idle"] = {
        k: round(1000 * (v - idle_pct[k] / 100 * elapsed) / (2 * samples), 1)
        for k, v in spent.items()
    }
    return row


def _pids(bed: TestBed, kind: str) -> list[int]:
    return [
        p.popen.pid
        for p in (bed.cluster.procs if bed.cluster else [])
        if p.kind == kind and p.popen is not None
    ]


def idle_cpu(bed: TestBed, seconds: float) -> dict[str, Any]:
    """Each grape's and node's CPU over ``seconds`` with nothing asked of them (% of a core)."""
    procs = {kind: _pids(bed, kind) for kind in ("grape", "node")}
    pids = [pid for kind in procs.values() for pid in kind]
    before = {pid: _cpu_s(pid) for pid in pids}
    delay0, t0 = _cpu_s(bed.delay_pid or 0), time.perf_counter()
    time.sleep(seconds)  # the window measured, not a wait for a condition
    elapsed = time.perf_counter() - t0
    pct = {pid: 100 * (_cpu_s(pid) - before[pid]) / elapsed for pid in pids}
    row: dict[str, Any] = {"seconds": seconds}
    for kind, kind_pids in procs.items():
        values = [pct[pid] for pid in kind_pids]
        row[kind] = {
            "median_pct": round(statistics.median(values), 2),
            "max_pct": round(max(values), 2),
            "sum_pct": round(sum(values), 1),
        }
    row["delay_line_pct"] = round(100 * (_cpu_s(bed.delay_pid or 0) - delay0) / elapsed, 1)
    row["load_avg"] = round(os.getloadavg()[0], 1)
    return row


def scale(
    root: Path, hosts: int, samples: int, sync_s: float, settle_s: float, idle_s: float
) -> dict[str, Any]:
    started = time.perf_counter()
    with TestBed(hosts, WAN, root / f"scale-{hosts}") as bed:
        bed.start_network(node_extra=["--sync-interval", str(sync_s)], timeout=600)
        row: dict[str, Any] = {"hosts": hosts, "start_s": round(time.perf_counter() - started, 1)}
        log(f"{hosts} hosts up in {row['start_s']} s")
        time.sleep(settle_s)  # the start-up syncs of every node with every other end
        row["idle_cpu"] = idle_cpu(bed, idle_s)
        log(f"{hosts} hosts idle: {row['idle_cpu']}")
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
            idle_pct = {k: row["idle_cpu"][k]["sum_pct"] for k in ("grape", "node")}
            row["propagation"] = asyncio.run(propagate(bed, samples, idle_pct))
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
            # versions a node only got from anti-entropy (a digest round, every sync
            # interval), and the mesh's shape after the sampling: see gossip_totals
            "repaired": after["repaired"] - before["repaired"],
            "one_sided_mesh_links": after["one_sided"],
            "nodes_in_no_mesh": after["nodes_fed_by_nobody"],
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
    parser.add_argument("--settle-s", type=float, default=20.0, help="after start, before idle")
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle CPU window")
    parser.add_argument("--no-heal", action="store_true", help="skip the 3|3 partition run")
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
        if not args.no_heal:
            result["heal"] = heal(root, args.cut_s, args.sync_s)
            log(f"heal: {result['heal']}")
        result["scale"] = []
        for n in [int(x) for x in args.sizes.split(",")]:
            try:
                result["scale"].append(
                    scale(root, n, args.samples, args.sync_s, args.settle_s, args.idle_s)
                )
            except Exception as exc:  # say what did not fit, keep the rest
                result["scale"].append({"hosts": n, "failed": repr(exc)[:2000]})
                log(f"{n} hosts failed: {exc!r}")
    result["run_s"] = round(time.perf_counter() - started, 1)
    emit(result)


if __name__ == "__main__":
    main()
