"""Junk under ``p2p_offers:node`` (issue 11.4): does it delay an offer's propagation?

Two grapes and two nodes on loopback. ``--junk`` addresses are announced under the node
service name, each from a loopback source address of its own (so the grapes' per-announcer
bound does not drop them) and each pointing at a socket that accepts connections and never
answers: every probe of one costs its full timeout. Then, ``--samples`` times: an offer is
created on node A and node B's ``GET /offers/<id>`` is polled until it is there (ms from
the POST). Reported beside the same run without junk.

    .venv/bin/python bench/bench_junk_peers.py [--junk 200] [--samples 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from p2p_offers.cluster import Cluster, free_ports


def announce_from(source: str, grape_port: int, name: str, port: int) -> None:
    """One announce over a connection from ``source``: the grape sees that as the announcer."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", grape_port, timeout=5, source_address=(source, 0)
    )
    body = json.dumps({"rid": "junk", "data": [name, port]})
    conn.request("POST", "/announce", body, {"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()


def silent_sockets(count: int) -> list[socket.socket]:
    socks = []
    for i in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0))
        sock.listen(64)  # connections complete in the kernel; nobody ever answers
        socks.append(sock)
    return socks


def propagation(a: str, b: str, samples: int) -> list[float]:
    times = []
    for i in range(samples):
        started = time.perf_counter()
        offer = requests.post(
            f"{a}/offers",
            json={"side": "sell", "price_usd": f"{30000 + i}.00", "amount_btc": "0.01"},
            timeout=30,
        ).json()
        while not requests.get(f"{b}/offers/{offer['id']}", timeout=30).ok:
            if time.perf_counter() - started > 60:
                break
            time.sleep(0.005)
        times.append((time.perf_counter() - started) * 1000)
        requests.delete(f"{a}/offers/{offer['id']}", timeout=30)
    return times


def run(junk: int, samples: int, root: Path) -> dict[str, float]:
    with Cluster(root) as cluster:
        dht, api, nodes = free_ports(2), free_ports(2), free_ports(2)
        grapes = [cluster.grape(dht[i], api[i], [dht[1 - i]]) for i in range(2)]
        cluster.wait_ready(grapes)
        procs = [cluster.node(nodes[i], grapes[i].url) for i in range(2)]
        cluster.wait_ready(procs)
        socks = silent_sockets(junk)
        try:
            for sock in socks:
                host, port = sock.getsockname()
                announce_from(host, api[0], "p2p_offers:node", port)
            time.sleep(3)  # the nodes' peer lists refresh with the junk in them
            times = propagation(procs[0].url, procs[1].url, samples)
        finally:
            for sock in socks:
                sock.close()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "samples": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--junk", type=int, default=200)
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean = run(0, args.samples, Path(tmp) / "clean")
        junk = run(args.junk, args.samples, Path(tmp) / "junk")
    result = {
        "bench": "junk_peers",
        "junk": args.junk,
        "without_junk": clean,
        "with_junk": junk,
        "ratio_p50": round(junk["p50_ms"] / clean["p50_ms"], 2),
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
