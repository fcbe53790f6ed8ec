"""Grenache RPC against REST on one real node: latency, throughput and the node's CPU per call.

Why: the issue asks for a Grenache edge and for cheaper hops; this puts the two edges of
the same node side by side in one run, the same operations through the same handlers
(``registry.invoke``), so the difference is the transport: aiohttp on its own loop plus a
handler pool (RPC) against waitress + Flask routing (REST).

Both are driven from this process by synchronous clients on keep-alive ``http.client``
connections (``PeerRPCClient`` for RPC, one connection per thread for REST), so the
client side costs about the same; the node's CPU per call is the server side alone.
Per operation and edge:

* sequential: ``--calls`` calls one after another; p50/p99 latency in ms;
* concurrent: ``--threads`` threads sharing ``--calls`` calls; req/s and the node's CPU
  (user + system, from /proc) per call in ms.

Operations: ``getBook`` (GET /book), ``getOffer`` (GET /offers/<id>) and ``createOffer``
(POST /offers: a DHT put and a durable SQLite write, fewer calls). Medians over
``--rounds``; ``ratio`` fields are RPC / REST (below 1: RPC is faster / cheaper).

``client``: this process's CPU per sequential ``getBook`` call for the RPC client on
``grenache.HttpTransport`` (http.client, one write per request) against the same
client on a urllib3 pool, the choice ``HttpTransport`` was made by.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import base_parser, cpu_s, log, median_of, network, summarize

from p2p_offers.grenache import BaseTransport, MaybeDelivered, NotDelivered, PeerRPCClient
from p2p_offers.link import Link

Call = Callable[[], Any]


def timed(call: Call, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def concurrent(call: Call, n: int, threads: int, node: Any) -> dict[str, float]:
    left = [n]
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            call()

    cpu0 = cpu_s([node])
    start = time.perf_counter()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    cpu = cpu_s([node]) - cpu0
    return {"req_per_s": round(n / wall, 1), "node_cpu_ms_per_call": round(cpu * 1000 / n, 3)}


def measure(call: Call, calls: int, threads: int, node: Any) -> dict[str, Any]:
    call()  # warm: connections open, lookups cached
    seq = summarize(timed(call, calls))
    return {
        "p50_ms": seq["p50_ms"],
        "p99_ms": seq["p99_ms"],
        **concurrent(call, calls, threads, node),
    }


class Urllib3Transport(BaseTransport):
    """The alternative measured: the same wire on a urllib3 pool."""

    def __init__(self) -> None:
        import urllib3

        self.pool = urllib3.PoolManager(maxsize=16, retries=False)

    def post(self, address: str, body: bytes, headers: Any, timeout: float) -> tuple[int, bytes]:
        try:
            resp = self.pool.request(
                "POST", f"http://{address}/", body=body, headers=dict(headers), timeout=timeout
            )
        except Exception as exc:  # the bench only needs a failure to be loud
            raise (NotDelivered if "refused" in str(exc) else MaybeDelivered)(str(exc)) from None
        return resp.status, resp.data


def client_cpu_us(client: PeerRPCClient, service: str, calls: int) -> float:
    payload = {"action": "getBook", "args": [{}]}
    client.request(service, payload)
    start = time.process_time()
    for _ in range(calls):
        client.request(service, payload)
    return round((time.process_time() - start) * 1e6 / calls, 1)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    with network(1, grapes=1) as net:
        node = net.nodes[0]
        host, _, port = node.url.removeprefix("http://").rpartition(":")
        local = threading.local()

        def fetch(method: str, path: str, payload: Any = None) -> tuple[int, bytes]:
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=30)
            body = None if payload is None else json.dumps(payload).encode()
            headers = {} if body is None else {"Content-Type": "application/json"}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()

        health = json.loads(fetch("GET", "/health")[1])
        service = f"p2p_offers:owner:{health['client_id']}"
        link = Link(net.grapes[0].url)
        client = PeerRPCClient(link)
        body = {"side": "sell", "price_usd": "30000.00", "amount_btc": "0.01"}
        offer = json.loads(fetch("POST", "/offers", body)[1])  # one to read back

        def rest(method: str, path: str, payload: Any = None, status: int = 200) -> Call:
            def call() -> Any:
                got, data = fetch(method, path, payload)
                assert got == status, data
                return data

            return call

        def rpc(action: str, arg: dict[str, Any]) -> Call:
            payload = {"action": action, "args": [arg]}
            return lambda: client.request(service, payload, timeout=30)

        ops: dict[str, tuple[Call, Call, int]] = {
            "getBook": (rpc("getBook", {}), rest("GET", "/book"), args.calls),
            "getOffer": (
                rpc("getOffer", {"id": offer["id"]}),
                rest("GET", f"/offers/{offer['id']}"),
                args.calls,
            ),
            "createOffer": (
                rpc("createOffer", body),
                rest("POST", "/offers", body, 201),
                max(args.calls // 5, 20),
            ),
        }
        results: dict[str, Any] = {}
        for name, (rpc_call, rest_call, n) in ops.items():
            rounds: dict[str, list[dict[str, Any]]] = {"rpc": [], "rest": []}
            for r in range(args.rounds):
                for edge, call in (("rpc", rpc_call), ("rest", rest_call)):
                    got = measure(call, n, args.threads, node)
                    log(f"{name} round {r + 1} {edge}: {got}")
                    rounds[edge].append(got)
            rpc_m, rest_m = median_of(rounds["rpc"]), median_of(rounds["rest"])
            results[name] = {
                "calls": n,
                "rpc": rpc_m,
                "rest": rest_m,
                "ratio": {k: round(rpc_m[k] / rest_m[k], 3) if rest_m[k] else None for k in rpc_m},
            }
        other = PeerRPCClient(link, Urllib3Transport())
        cpu: dict[str, list[float]] = {"http.client": [], "urllib3": []}
        for _ in range(args.rounds):
            cpu["http.client"].append(client_cpu_us(client, service, args.calls))
            cpu["urllib3"].append(client_cpu_us(other, service, args.calls))
        log(f"client CPU us per call: {cpu}")
        results["client_cpu_us_per_call"] = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
        other.close()
        client.close()
        link.close()
    print(
        json.dumps(
            {
                "bench": "rpc",
                "threads": args.threads,
                "rounds": args.rounds,
                "ops": results,
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
