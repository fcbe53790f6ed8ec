"""What a grape counts, for ``GET /metrics`` in Prometheus' text format.

One ``CollectorRegistry`` per grape (benchmarks and tests run many DHT nodes in
one process, and the global registry would mix them). Counters are bumped on
the hot path, so label children are looked up once and kept: a put costs a few
dozen RPCs, each counted and timed.

- ``grape_dht_rpc_received_total{rpc}``: RPCs other nodes sent us;
- ``grape_dht_rpc_sent_total{rpc,outcome}`` and ``grape_dht_rpc_seconds{rpc}``:
  our RPCs to other nodes, answered or timed out, and how long answers took;
- ``grape_dht_contacts_checked_total{outcome}``: claimed contacts pinged before
  they may enter the routing table (#11.3), admitted or not;
- ``grape_records``, ``grape_announcements``, ``grape_contacts``: what it holds now;
- ``grape_http_requests_total{type,outcome}`` and ``grape_http_request_seconds{type}``:
  the Grape API (outcome ``ok`` or the error name it answered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

RPCS = ("ping", "store", "put", "find_node", "find_value", "announce", "find_peers")
HTTP_TYPES = ("announce", "lookup", "put", "get")
# loopback round trips are ~0.1 ms, WAN ones 20-300 ms; the RPC timeout is 0.25 s by default
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST

disable_created_metrics()  # a ``_created`` series per counter doubles the page and says little


class GrapeMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        received = Counter(
            "grape_dht_rpc_received", "DHT RPCs received from other nodes", ["rpc"],
            registry=registry,
        )  # fmt: skip
        sent = Counter(
            "grape_dht_rpc_sent", "DHT RPCs sent to other nodes", ["rpc", "outcome"],
            registry=registry,
        )  # fmt: skip
        seconds = Histogram(
            "grape_dht_rpc_seconds", "Round trip of answered DHT RPCs", ["rpc"],
            buckets=RPC_BUCKETS, registry=registry,
        )  # fmt: skip
        checked = Counter(
            "grape_dht_contacts_checked",
            "Claimed contacts pinged before entering the routing table", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self._http = Counter(
            "grape_http_requests", "Grape API requests", ["type", "outcome"], registry=registry
        )
        http_seconds = Histogram(
            "grape_http_request_seconds", "Grape API request handling time", ["type"],
            buckets=HTTP_BUCKETS, registry=registry,
        )  # fmt: skip
        names = (*RPCS, "other")
        self._received = {name: received.labels(name) for name in names}
        self._answered = {name: sent.labels(name, "answered") for name in names}
        self._timed_out = {name: sent.labels(name, "timeout") for name in names}
        self._rpc_seconds = {name: seconds.labels(name) for name in names}
        self._checked = {o: checked.labels(o) for o in ("admitted", "refused", "silent")}
        self._http_seconds = {t: http_seconds.labels(t) for t in (*HTTP_TYPES, "other")}
        self._http_children: dict[tuple[str, str], Any] = {}
        self._gauges = {
            name: Gauge(f"grape_{name}", text, registry=registry)
            for name, text in (
                ("records", "Records this node stores"),
                ("announcements", "Service announcements this node stores"),
                ("contacts", "Contacts in the routing table"),
            )
        }

    def watch(self, name: str, read: Callable[[], int]) -> None:
        """Gauge ``grape_<name>`` reads ``read()`` at every scrape."""
        self._gauges[name].set_function(read)

    def received(self, rpc: str) -> None:
        self._received.get(rpc, self._received["other"]).inc()

    def sent(self, rpc: str, answered: bool, seconds: float) -> None:
        rpc = rpc if rpc in self._answered else "other"
        if answered:
            self._answered[rpc].inc()
            self._rpc_seconds[rpc].observe(seconds)
        else:
            self._timed_out[rpc].inc()

    def checked(self, outcome: str) -> None:
        self._checked[outcome].inc()

    def http(self, kind: str, outcome: str, seconds: float) -> None:
        kind = kind if kind in self._http_seconds else "other"
        child = self._http_children.get((kind, outcome))
        if child is None:  # outcomes are the API's own error names: a small, fixed set
            child = self._http_children[(kind, outcome)] = self._http.labels(kind, outcome)
        child.inc()
        self._http_seconds[kind].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
