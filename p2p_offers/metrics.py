"""What grapes and nodes share to answer ``GET /metrics`` in Prometheus' text format.

Each process part (a grape, a node) owns one ``CollectorRegistry``: tests and
benchmarks run many of them in one process, and prometheus_client's global
registry would mix their counts. ``counters`` and ``gauges`` build the families
a custom collector yields at scrape time from counts a part keeps anyway (its
``/health`` numbers), so the hot paths bump one ``Counter`` each, not two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
# loopback round trips are ~0.1 ms, WAN ones 20-300 ms; the grape's DHT RPC timeout is 0.25 s
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# HTTP work: a DHT put through a grape is a few ms on loopback, a bid waits on its owner
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

disable_created_metrics()  # a ``_created`` series per counter doubles the page and says little

Labelled = Mapping[Any, float]  # label tuple -> value


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def counters(name: str, text: str, labels: Iterable[str], values: Labelled) -> CounterMetricFamily:
    """A counter family (``name`` without ``_total``) with one sample per label tuple."""
    family = CounterMetricFamily(name, text, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def gauges(name: str, text: str, labels: Iterable[str], values: Labelled) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
