"""Grape API latency on 3 local grapes; with Node.js present, against stock grenache-grape too.

Prints one JSON object: per op (put, get from another grape, announce, re-announce,
lookup, announce->visible) the median and p95 in ms for our grapes and, when
``node``/``npm`` exist, for 3 stock ``grenache-grape@1.0.0`` processes driven by the
very same client (the requests-based ``Link``), in interleaved rounds so both see
the same machine load; ``ratio`` is ours/stock of the medians (target <= 1.0).

    .venv/bin/python bench/bench_grape.py [--rounds 5] [--n 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # devtools/ of this checkout

from devtools import npm as grenache
from p2p_offers.cluster import Cluster, free_ports
from p2p_offers.link import Link

Op = Callable[[int], None]


@contextlib.contextmanager
def our_grapes(workdir: Path) -> Iterator[list[str]]:
    dht, api = free_ports(3), free_ports(3)
    with Cluster(workdir) as cluster:
        procs = [cluster.grape(dht[i], api[i], [p for p in dht if p != dht[i]]) for i in range(3)]
        cluster.wait_ready(procs)
        yield [p.url for p in procs]


@contextlib.contextmanager
def stock_grapes(workdir: Path) -> Iterator[list[str]]:
    dht, api = free_ports(3), free_ports(3)
    procs = []
    try:
        for i in range(3):
            argv = grenache.stock_grape_argv(dht[i], api[i], [p for p in dht if p != dht[i]])
            log = open(workdir / f"stock-{i}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append((subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log))
        urls = [f"http://127.0.0.1:{port}" for port in api]
        wait_ready(urls)
        time.sleep(1.0)  # let the stock DHT tables fill, as its own tests do
        yield urls
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(10)
            log.close()


def wait_ready(urls: list[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            with contextlib.suppress(requests.RequestException):
                body = {"rid": "ready", "data": "ready"}
                if requests.post(f"{url}/lookup", json=body, timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"grape {url} not ready after {timeout}s")
            time.sleep(0.1)


def operations(urls: list[str]) -> dict[str, Op]:
    """Each op as the client sees it; 'get' and 'lookup' go through another grape than the write."""
    a, b = Link(urls[0]), Link(urls[1])
    tag = uuid.uuid4().hex[:8]
    hashes = [a.put({"v": f"bench-{tag}-get-{i}"}) for i in range(8)]
    a.announce(f"bench-{tag}-svc", 4000)

    def visible(i: int) -> None:
        name = f"bench-{tag}-vis-{i}-{uuid.uuid4().hex[:6]}"
        a.announce(name, 4000)
        while not b.lookup(name):
            pass

    return {
        "put": lambda i: a.put({"v": f"bench-{tag}-put-{i}-{uuid.uuid4().hex}"}),
        "get": lambda i: b.get(hashes[i % len(hashes)]),
        "announce": lambda i: a.announce(f"bench-{tag}-ann-{i}-{uuid.uuid4().hex[:6]}", 4000),
        "reannounce": lambda i: a.announce(f"bench-{tag}-svc", 4000),
        "lookup": lambda i: b.lookup(f"bench-{tag}-svc"),
        "announce_visible": visible,
    }


def timed(op: Op, n: int, offset: int) -> list[float]:
    samples = []
    for i in range(n):
        start = time.perf_counter()
        op(offset + i)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=60, help="samples per op per round")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-grape-")))
        impls = {"ours": stack.enter_context(our_grapes(workdir))}
        stock_reason = None
        if not grenache.node_available():
            stock_reason = "node/npm not found"
        else:
            try:
                impls["stock"] = stack.enter_context(stock_grapes(workdir))
            except (OSError, subprocess.SubprocessError) as exc:
                stock_reason = f"stock grape unavailable: {exc}"
        ops = {name: operations(urls) for name, urls in impls.items()}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in impls}
        for op in ops["ours"]:  # warm-up: connections, routing tables, closest-nodes caches
            for name in impls:
                timed(ops[name][op], 5, 10_000)
        for r in range(args.rounds):
            order = list(impls) if r % 2 == 0 else list(reversed(impls))
            for op in ops["ours"]:
                for name in order:
                    batch = timed(ops[name][op], args.n, r * args.n)
                    samples[name].setdefault(op, []).extend(batch)
    result: dict[str, object] = {
        "bench": "grape_api",
        "grapes": 3,
        "rounds": args.rounds,
        "samples_per_op": args.rounds * args.n,
    }
    for name, per_op in samples.items():
        result[name] = {op: summary(s) for op, s in per_op.items()}
    if "stock" in samples:
        result["ratio"] = {
            op: round(statistics.median(s) / statistics.median(samples["stock"][op]), 3)
            for op, s in samples["ours"].items()
        }
    else:
        result["stock"] = {"skipped": stock_reason}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
