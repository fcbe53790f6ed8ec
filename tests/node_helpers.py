"""Helpers for node tests: an in-process node on a real grape, and a real-network harness."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from nacl.signing import SigningKey

from p2p_offers import offers
from p2p_offers.cluster import Cluster, Proc, free_ports, local_network
from p2p_offers.link import Link
from p2p_offers.node.app import create_app, node_of
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.runtime import Node


class Clock:
    """A settable millisecond clock, so expiry can be tested without waiting."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def local_node(
    grape_url: str,
    tmp_path: Path,
    clock: Clock | None = None,
    token: str | None = None,
    port: int = 4999,
) -> tuple[Any, Node, Link]:
    """(Flask test client, node, its ``Link`` to the real grape at ``grape_url``).

    No background thread is started and the node listens on no socket; what it
    asks the DHT goes over HTTP to a real grape. The node's clock is ``clock``,
    but the grape's own TTLs (announcements, records) run on real time.
    """
    link = Link(grape_url)
    # Peers of these tests are fakes speaking REST (/peer/*), announced under the REST names.
    config = NodeConfig(
        port=port, grape=grape_url, data_dir=tmp_path, api_token=token, peer_transport="rest"
    )
    node = Node(config, clock=clock or Clock(), dht=link)
    app = create_app(config, node)
    assert node_of(app) is node
    return app.test_client(), node, link


def unreachable_grape_url() -> str:
    """A grape address where nothing listens: a ``Link`` to it fails to connect."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def foreign_offer(
    key: SigningKey, now: int, seq: int = 1, ttl_ms: int = 600_000, **changes: Any
) -> offers.SignedOffer:
    offer = offers.create("sell", 3_000_000, 100_000_000, now, ttl_ms)
    if changes:
        offer = offers.Offer(**{**offer.to_doc(), "fill": offer.fill, **changes})
    return offers.sign(key, offer, seq)


def announcement(signed: offers.SignedOffer) -> dict[str, Any]:
    return {"hash": signed.hash, "record": signed.record.to_json()}


# -- real processes ------------------------------------------------------------------------------


class Net:
    """A local network of real grapes and nodes, plus the REST calls tests make on it."""

    def __init__(
        self,
        root: Path,
        grapes: int = 3,
        nodes: int = 3,
        node_extra: Iterable[str] = (),
    ) -> None:
        self.root = root
        self.cluster = Cluster(root / "logs")
        self.node_extra = list(node_extra)
        ports = free_ports(2 * grapes + nodes)
        self.grapes, self.nodes = local_network(
            self.cluster,
            grapes,
            nodes,
            ports[:grapes],
            ports[grapes : 2 * grapes],
            ports[2 * grapes :],
            root,
            node_extra=self.node_extra,
        )
        self.http = requests.Session()
        self.ids = {p.url: self.get(p, "/health")["client_id"] for p in self.nodes}

    def close(self) -> None:
        self.cluster.stop_all()

    def add_node(self, grape: int = 0, extra: Iterable[str] = ()) -> Proc:
        port = free_ports(1)[0]
        proc = self.cluster.node(
            port, self.grapes[grape].url, self.root / f"node-{port}", [*self.node_extra, *extra]
        )
        self.cluster.wait_ready([proc])
        self.ids[proc.url] = self.get(proc, "/health")["client_id"]
        return proc

    def restart(self, proc: Proc) -> None:
        self.cluster.start(proc)
        self.cluster.wait_ready([proc])

    # -- REST ------------------------------------------------------------------------------

    def call(self, proc: Proc, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, proc.url + path, json=body, timeout=30)

    def get(self, proc: Proc, path: str) -> Any:
        resp = self.call(proc, "GET", path)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def create(self, proc: Proc, price: str = "30000.00", amount: str = "1", **kw: Any) -> dict:
        resp = self.call(
            proc,
            "POST",
            "/offers",
            {"side": "sell", "price_usd": price, "amount_btc": amount, **kw},
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    def bid(self, proc: Proc, offer_id: str, amount: str) -> requests.Response:
        return self.call(proc, "POST", f"/offers/{offer_id}/bids", {"amount_btc": amount})

    def offer(self, proc: Proc, offer_id: str) -> dict | None:
        resp = self.call(proc, "GET", f"/offers/{offer_id}")
        return resp.json() if resp.status_code == 200 else None


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """``GET /metrics`` of a grape or node, parsed by prometheus_client's own text parser:
    (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = requests.get(f"{url}/metrics", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


@contextmanager
def gossip_mesh(spec: str) -> Iterator[None]:
    """Nodes started inside get this mesh (``d,d_low,d_high``); the environment is restored."""
    old = os.environ.get("P2P_OFFERS_GOSSIP_MESH")
    os.environ["P2P_OFFERS_GOSSIP_MESH"] = spec
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("P2P_OFFERS_GOSSIP_MESH", None)
        else:
            os.environ["P2P_OFFERS_GOSSIP_MESH"] = old


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` every few ms until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def stored_fills(data_dir: Path, role: str) -> dict[str, dict]:
    """A node's recorded receipts (fill_id -> receipt) read straight from its SQLite file.

    Read-only and safe while the node runs (WAL): this is what survives a crash.
    """
    db = sqlite3.connect(f"file:{data_dir / 'node.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT receipt FROM receipts WHERE role = ?", (role,)).fetchall()
    finally:
        db.close()
    return {r["fill_id"]: r for r in (json.loads(row[0]) for row in rows)}


def data_dir_of(proc: Proc) -> Path:
    return Path(proc.argv[proc.argv.index("--data-dir") + 1])


def trade_and_replicate(clients: list[Any], b: Any) -> dict[str, Any]:
    """Node a (``clients[0]``) offers 1 BTC, b bids 0.25 of it through ``clients[1]``; returns
    the receipt once b holds a's feed with that trade and verifies every ledger."""
    offer = (
        clients[0]
        .post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": "1"})
        .json
    )
    wait_until(lambda: b.index.get(offer["id"]), 10, "the offer to reach b")
    bid = clients[1].post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.25"})
    assert bid.status_code == 201, bid.json
    receipt: dict[str, Any] = bid.json
    wait_until(
        lambda: (
            [t["fill_id"] for t in clients[1].get("/trades").json["trades"]] == [receipt["fill_id"]]
        ),
        10,
        "b to replicate a's feed",
    )
    assert clients[1].get("/ledger/verify").json["ok"] is True
    return receipt
