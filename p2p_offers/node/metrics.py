"""What a node counts, for ``GET /metrics`` in Prometheus' text format (docs/metrics.md).

Most of it is read at scrape time from the counts the node's parts keep for
``/health`` anyway (intake outcomes, publications, syncs, orders, the ledger,
book size): ``NodeCollector`` turns them into families, so nothing on a hot
path counts twice. Only what no part measures is observed here, each at the one
place every such call passes:

- DHT requests, timed by ``Link`` (its ``observe`` hook): ``node_dht_request*``;
- calls to other nodes, timed by ``TimedTransport`` around the peer transport
  (every ``PeerClient`` call goes through it): ``node_peer_call*``;
- API operations by outcome, from ``registry.invoke`` (the REST view and the
  Grenache RPC dispatcher both come through it): ``node_requests_total``,
  which is also where bids (``place_bid``, a peer's ``accept_bid``) are counted.

Every label value comes from a fixed set (operation names, action names, the
domain error classes' codes): a peer cannot grow the page by sending odd errors.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter as Counts
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Histogram
from prometheus_client.registry import Collector

from p2p_offers.metrics import (
    CONTENT_TYPE,
    HTTP_BUCKETS,
    RPC_BUCKETS,
    counters,
    gauges,
    new_registry,
    render,
)
from p2p_offers.node import errors
from p2p_offers.node.network.transport import ROUTES, PeerTransport, TransportError

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from p2p_offers.node.runtime import Node

__all__ = ["CONTENT_TYPE", "NodeMetrics", "TimedTransport", "outcome_of"]

DHT_KINDS = ("announce", "lookup", "put", "get")
PEER_ACTIONS = tuple(ROUTES)  # every node-to-node call the PeerClient makes
_GRAPE_ERROR = re.compile(r"ERR_[A-Z0-9_]{1,40}")
MAX_GRAPE_ERRORS = 32  # distinct grape error names kept as labels; more are "other"
# the operations that are bids: (side, via) of node_bids_total
BID_OPERATIONS = {"place_bid": ("taker", "api"), "accept_bid": ("maker", "peer")}


def outcome_of(exc: BaseException) -> str:
    """A label for what went wrong: the domain error's class code (never a peer's text)."""
    if isinstance(exc, errors.DomainError):
        return type(exc).code
    if isinstance(exc, TransportError):
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()
    return "internal"


class NodeMetrics:
    """One registry per node; ``watch(node)`` adds the scrape-time collector."""

    def __init__(self) -> None:
        self.registry = registry = new_registry()
        self._dht = Counter(
            "node_dht_requests", "Requests to the grape (the DHT)", ["kind", "outcome"],
            registry=registry,
        )  # fmt: skip
        dht_seconds = Histogram(
            "node_dht_request_seconds", "Time of a grape request, failover included", ["kind"],
            buckets=HTTP_BUCKETS, registry=registry,
        )  # fmt: skip
        self._peer = Counter(
            "node_peer_calls", "Calls to other nodes", ["action", "outcome"], registry=registry
        )
        peer_seconds = Histogram(
            "node_peer_call_seconds", "Time of a call to another node, answered or not",
            ["action"], buckets=(*RPC_BUCKETS, 5.0, 10.0), registry=registry,
        )  # fmt: skip
        self._requests = Counter(
            "node_requests", "API operations (REST and Grenache RPC)", ["operation", "outcome"],
            registry=registry,
        )  # fmt: skip
        self._request_seconds = Histogram(
            "node_request_seconds", "API operation handling time", ["operation"],
            buckets=HTTP_BUCKETS, registry=registry,
        )  # fmt: skip
        self._dht_seconds = {k: dht_seconds.labels(k) for k in (*DHT_KINDS, "other")}
        self._peer_seconds = {a: peer_seconds.labels(a) for a in (*PEER_ACTIONS, "other")}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._grape_errors: set[str] = set()
        self._lock = threading.Lock()
        self._bids: Counts[tuple[str, str, str]] = Counts()

    def watch(self, node: Node) -> None:
        self.registry.register(NodeCollector(node, self))

    def _child(self, family: Any, *labels: str) -> Any:
        """A family's child for ``labels``, looked up once (``labels()`` takes a lock)."""
        key = (id(family), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def dht(self, kind: str, outcome: str, seconds: float) -> None:
        """``Link``'s observer: one grape request (``outcome`` "ok" or the grape error name)."""
        kind = kind if kind in self._dht_seconds else "other"
        if outcome != "ok":
            with self._lock:
                known = outcome in self._grape_errors
                room = len(self._grape_errors) < MAX_GRAPE_ERRORS
                if not known and room and _GRAPE_ERROR.fullmatch(outcome):
                    self._grape_errors.add(outcome)
                    known = True
            outcome = outcome if known else "other"
        self._child(self._dht, kind, outcome).inc()
        self._dht_seconds[kind].observe(seconds)

    def peer_call(self, action: str, outcome: str, seconds: float) -> None:
        action = action if action in self._peer_seconds else "other"
        self._child(self._peer, action, outcome).inc()
        self._peer_seconds[action].observe(seconds)

    def operation(self, name: str, outcome: str, seconds: float) -> None:
        """One API operation, from ``registry.invoke``; bids are also counted by side."""
        self._child(self._requests, name, outcome).inc()
        self._child(self._request_seconds, name).observe(seconds)
        side = BID_OPERATIONS.get(name)
        if side is not None:
            with self._lock:
                self._bids[(*side, "filled" if outcome == "ok" else outcome)] += 1

    def bids(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._bids)

    def render(self) -> bytes:
        return render(self.registry)


class TimedTransport:
    """A ``PeerTransport`` that times and counts every call of the one it wraps."""

    def __init__(self, inner: PeerTransport, metrics: NodeMetrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        started, outcome = time.perf_counter(), "ok"
        try:
            return self.inner.call(address, action, payload, timeout_s)
        except Exception as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self.metrics.peer_call(action, outcome, time.perf_counter() - started)

    def close(self) -> None:
        self.inner.close()


class NodeCollector(Collector):
    """The node's own counts, read when scraped (the same numbers ``/health`` shows)."""

    def __init__(self, node: Node, metrics: NodeMetrics) -> None:
        self.node = node
        self.metrics = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families are made per scrape; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        node = self.node
        intake = {
            (source, outcome): n
            for source, counts in node.intake.counters().items()
            for outcome, n in counts.items()
            if outcome != "received"
        }
        yield counters(
            "node_intake_records", "Records other nodes sent us, by what became of them",
            ("source", "outcome"), intake,
        )  # fmt: skip
        book = node.index.counts()
        yield gauges(
            "node_offers", "Offers held (every version's newest) and open in the book",
            ("state",), {("held",): book["held"], ("open",): book["open"]},
        )  # fmt: skip
        yield gauges("node_own_open_offers", "Our open offers", (), {(): node.maker.open_count()})
        yield gauges("node_peers", "Peers at the last lookup", (), {(): node.peers.known_count()})
        stats = dict(node.publisher.stats)
        yield counters(
            "node_dht_puts", "Our records put into the DHT", ("outcome",),
            {("ok",): stats.pop("put", 0), ("failed",): stats.pop("put_failed", 0),
             ("cas_dropped",): stats.pop("put_cas_dropped", 0)},
        )  # fmt: skip
        yield counters(
            "node_pushes", "Announcement batches pushed to peers", ("outcome",),
            {("ok",): stats.pop("pushed", 0), ("failed",): stats.pop("push_failed", 0)},
        )  # fmt: skip
        yield gauges(
            "node_publish_pending", "Publications queued or in flight", (),
            {(): node.publisher.pending()},
        )  # fmt: skip
        gossip = node.gossip.stats()
        yield gauges(
            "node_gossip_mesh", "Gossip neighbours, and records held in the digests", ("of",),
            {("neighbours",): _int(gossip.pop("mesh")), ("held",): _int(gossip.pop("held"))},
        )  # fmt: skip
        yield counters(
            "node_gossip", "Gossip: versions published, sent, forwarded, dropped, refused...",
            ("event",), {(event,): _int(n) for event, n in gossip.items()},
        )  # fmt: skip
        sync = node.syncer.stats()
        yield counters("node_sync_runs", "Sync rounds run", (), {(): _int(sync.pop("runs"))})
        yield gauges(
            "node_sync_last_records", "Records the last sync round read", (),
            {(): _int(sync.pop("last_records"))},
        )  # fmt: skip
        yield gauges(
            "node_sync_last_seconds", "How long the last sync round took", (),
            {(): _int(sync.pop("last_ms")) / 1000},
        )  # fmt: skip
        yield counters(
            "node_sync_refused", "Sync pages or peers refused, by reason", ("reason",),
            {(reason,): _int(n) for reason, n in sync.items()},
        )  # fmt: skip
        yield from self._bids()
        yield from self._events()

    def _bids(self) -> Iterator[Metric]:
        node = self.node
        bids: dict[tuple[str, ...], int] = {k: v for k, v in self.metrics.bids().items()}
        for name, n in node.sweeper.stats().items():  # an order's bids: filled, refused_<code>...
            bids[("taker", "order", name.removeprefix("refused_"))] = n
        yield counters(
            "node_bids", "Bids, by side (maker: on our offers; taker: ours), way and outcome",
            ("side", "via", "outcome"), bids,
        )  # fmt: skip
        taker = node.taker.stats()
        yield gauges(
            "node_bids_in_doubt", "Our bids sent without an answer, not settled yet", (),
            {(): taker.pop("in_doubt_open")},
        )  # fmt: skip
        yield counters(
            "node_bids_in_doubt_events", "Bids in doubt: gone in doubt, resolved, filled...",
            ("event",), {(k.removeprefix("in_doubt_") or k,): v for k, v in taker.items()},
        )  # fmt: skip

    def _events(self) -> Iterator[Metric]:
        """Everything else the node counts (orders, uncrossing, the ledger, the HTTP edge,
        the live events of ``GET /events``)."""
        node = self.node
        orders = node.desk.stats()
        yield gauges(
            "node_orders_queued", "Orders waiting for the taker worker", (),
            {(): orders.pop("queued") + orders.pop("busy")},
        )  # fmt: skip
        events: dict[tuple[str, ...], float] = {("orders", k): v for k, v in orders.items()}
        events.update({("uncross", k): v for k, v in node.uncrosser.stats().items()})
        ledger = node.replicator.stats()
        forked = ledger.pop("forked_feeds", 0)
        events.update({("ledger", k): v for k, v in ledger.items()})
        events.update({("http", k): v for k, v in node.edge_counts.items()})
        yield counters(
            "node_events", "Other events the node counts (as in /health), by part",
            ("part", "event"), events,
        )  # fmt: skip
        stream = node.events.stats()  # GET /events: published by type, streams' fates
        yield gauges(
            "node_event_streams", "GET /events streams open now, and the most allowed",
            ("what",), {("clients",): stream.pop("clients"), ("max",): stream.pop("max_clients")},
        )  # fmt: skip
        stream.pop("last_id", None)
        yield counters(
            "node_events_published", "Events published on GET /events, by type (and streams'"
            " connected, refused, reset, dropped_*)", ("type",),
            {(k,): v for k, v in stream.items()},
        )  # fmt: skip
        feeds = node.ledger.states()
        yield gauges(
            "node_ledger", "Ledger feeds held and their entries", ("what",),
            {("feeds",): len(feeds), ("entries",): sum(f.height for f in feeds),
             ("forked_feeds",): forked},
        )  # fmt: skip


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0
