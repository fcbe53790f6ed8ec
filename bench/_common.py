"""What every node benchmark shares: a real network on free ports, an async REST client,
percentile summaries and the one-JSON-object output.

Benchmarks drive the node over HTTP from one asyncio loop (aiohttp) rather than from
threads: polling many nodes tightly from threads would serialize on the GIL and blur the
millisecond timings being measured. The network is started through ``p2p_offers.cluster``,
the same code as ``start-all`` and the integration tests, so a benchmark measures the
processes a user runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from p2p_offers.cluster import Cluster, Proc, free_ports, local_network

with contextlib.suppress(ImportError):  # uvloop: lower client overhead where it exists
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# -- the network -----------------------------------------------------------------------------


@dataclass
class Network:
    """A running local network: grapes, nodes, and the Cluster that owns the processes."""

    cluster: Cluster
    grapes: list[Proc]
    nodes: list[Proc]
    data_root: Path
    node_extra: Sequence[str] = ()
    extra_nodes: list[Proc] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.nodes]

    def spawn_node(self, grape: int = 0) -> Proc:
        """Start one more node on ``grapes[grape]`` without waiting for it to be ready."""
        port = free_ports(1)[0]
        proc = self.cluster.node(
            port, self.grapes[grape].url, self.data_root / f"node-{port}", self.node_extra
        )
        self.extra_nodes.append(proc)
        return proc


@contextlib.contextmanager
def network(nodes: int, grapes: int = 3, node_extra: Sequence[str] = ()) -> Iterator[Network]:
    """``grapes`` grapes and ``nodes`` nodes on free ports in a temp dir; all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="p2p-bench-") as tmp:
        root = Path(tmp)
        ports = free_ports(2 * grapes + nodes)
        dht, api, node_ports = ports[:grapes], ports[grapes : 2 * grapes], ports[2 * grapes :]
        with Cluster(root / "logs") as cluster:
            grape_procs, node_procs = local_network(
                cluster, grapes, nodes, dht, api, node_ports, root, node_extra=node_extra
            )
            net = Network(cluster, grape_procs, node_procs, root, node_extra)
            try:
                yield net
            except BaseException:  # the temp dir goes away: show the logs while they exist
                for proc in [*grape_procs, *node_procs, *net.extra_nodes]:
                    log(f"--- {proc.name} ({proc.log_path.name})\n{proc.log_tail(20)}")
                raise


def cpu_s(procs: list) -> float:
    """CPU seconds (user + system) the given processes have used so far (Linux ``/proc``).

    Reported per order, it says what an order costs the machine in total: with
    everything on one host, throughput is capped by the cores divided by that.
    """
    total = 0
    for proc in procs:
        try:
            with open(f"/proc/{proc.popen.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, AttributeError, IndexError, ValueError):
            return float("nan")
    return total / os.sysconf("SC_CLK_TCK")


MESSAGE_FAMILIES = {  # counter family -> the label that says which message
    "node_dht_requests": "kind",
    "node_peer_calls": "action",
    "node_intake_records": "outcome",  # records received, each verified
    "node_events": "event",  # ledger replication's "pulled" counts entries
}


async def messages(session: aiohttp.ClientSession, urls: Sequence[str]) -> collections.Counter:
    """Messages the nodes at ``urls`` have sent (and records taken in) so far, summed,
    keyed ``family:label``.

    Diffed around a run it says what one operation costs the network in messages,
    which is what CPU per operation is mostly made of.
    """
    total: collections.Counter = collections.Counter()
    texts = await asyncio.gather(*(_text(session, f"{url}/metrics") for url in urls))
    for text in texts:
        for family in text_string_to_metric_families(text):
            label = MESSAGE_FAMILIES.get(family.name)
            for sample in family.samples if label else ():
                if sample.name.endswith("_total"):
                    total[f"{family.name}:{sample.labels[label]}"] += sample.value
    return total


async def _text(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as resp:
        return await resp.text()


# -- REST client -----------------------------------------------------------------------------


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any, what: str) -> None:
        super().__init__(f"{what}: HTTP {status}: {body}")
        self.status = status
        self.body = body


@contextlib.asynccontextmanager
async def http(connections: int = 128) -> AsyncIterator[aiohttp.ClientSession]:
    """One pooled session; keep-alive matters, a fresh TCP connect per poll costs more than
    the propagation being measured."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    """(status, decoded JSON body or None); never raises for an HTTP error status."""
    async with session.request(method, url, json=body) as resp:
        data = await resp.read()
        try:
            return resp.status, json.loads(data) if data else None
        except ValueError:
            return resp.status, data.decode(errors="replace")


async def expect(
    session: aiohttp.ClientSession, method: str, url: str, body: Any = None, status: int = 200
) -> Any:
    got, data = await call(session, method, url, body)
    if got != status:
        raise ApiError(got, data, f"{method} {url}")
    return data


async def create_offer(
    session: aiohttp.ClientSession,
    node: str,
    amount_btc: str,
    price_usd: str = "30000.00",
    side: str = "sell",
) -> dict[str, Any]:
    """POST /offers (SPEC §7). Benchmarks post sells only, so no two offers ever cross."""
    body = {"side": side, "price_usd": price_usd, "amount_btc": amount_btc}
    return await expect(session, "POST", f"{node}/offers", body, status=201)


async def open_offers(
    session: aiohttp.ClientSession, node: str, owner: str | None = None
) -> list[dict[str, Any]]:
    """The open part of a node's book (filtered server-side, re-checked here)."""
    query = "?status=open" + (f"&owner={owner}" if owner else "")
    data = await expect(session, "GET", f"{node}/offers{query}")
    return [o for o in data["offers"] if o["status"] == "open"]


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.005
) -> float:
    """Await ``check()`` until true; returns the elapsed seconds, raises on timeout."""
    start = time.perf_counter()
    while not await check():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
    return time.perf_counter() - start


# -- statistics and output ---------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarize(samples_ms: Sequence[float]) -> dict[str, float | None]:
    if not samples_ms:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 2),
        "p99_ms": round(percentile(samples_ms, 99), 2),
        "max_ms": round(max(samples_ms), 2),
        "mean_ms": round(statistics.fmean(samples_ms), 2),
    }


def median_of(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-key median over repeated rounds: one slow round on a noisy machine does not decide."""
    keys = [
        k for k, v in rounds[0].items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    return {k: round(statistics.median(r[k] for r in rounds if r[k] is not None), 3) for k in keys}


def base_parser(description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; medians reported")
    return parser


def run_bench(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
) -> None:
    """Parse the flags, run the async benchmark, print its one JSON object with the wall time."""
    args = parser.parse_args()
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["wall_s"] = round(time.perf_counter() - started, 1)
    emit(result)


def emit(result: dict[str, Any]) -> None:
    """The benchmark's whole output: one JSON object on stdout (progress goes to stderr)."""
    print(json.dumps(result, sort_keys=False))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
