"""Spam bounds (issue 9.5): open offers kept per foreign owner, pushes per peer address.

What a node refuses is counted (``/health`` ``announcements``, ``/metrics``); a node's
own honest traffic, a bench-like burst included, never meets either bound.
"""

from __future__ import annotations

from nacl.signing import SigningKey
from node_helpers import (
    Clock,
    Net,
    announcement,
    foreign_offer,
    scrape,
    wait_until,
)

from p2p_offers import offers
from p2p_offers.grenache.client import call as rpc_call
from p2p_offers.grenache.transport import HttpTransport
from p2p_offers.link import Link
from p2p_offers.node.app import create_app
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.network.limits import MAX_BUCKETS, PushLimiter
from p2p_offers.node.network.transport import PEER_SERVICE
from p2p_offers.node.runtime import Node


def limited_node(grape_url, tmp_path, clock, **limits):
    """As ``local_node`` (a real grape, no threads), with the limits given."""
    config = NodeConfig(
        port=4999, grape=grape_url, data_dir=tmp_path, peer_transport="rest", **limits
    )
    node = Node(config, clock=clock, dht=Link(grape_url))
    return create_app(config, node).test_client(), node


def outcomes(client, signed) -> dict:
    resp = client.post("/peer/announce", json=announcement(signed))
    assert resp.status_code == 200, resp.text
    return resp.json["outcomes"]


def test_an_owner_holds_at_most_the_configured_open_offers(grape_url, tmp_path):
    clock = Clock()
    client, node = limited_node(grape_url, tmp_path, clock, max_offers_per_owner=3)
    try:
        owner, other = SigningKey.generate(), SigningKey.generate()
        held = [foreign_offer(owner, clock.now) for _ in range(3)]
        for signed in held:
            assert outcomes(client, signed) == {"applied": 1}
        fourth = foreign_offer(owner, clock.now)
        assert outcomes(client, fourth) == {"owner_full": 1}
        assert node.index.get(fourth.id) is None
        # a new version of an offer already open is no new offer: taken while full
        first = held[0].offer
        changed = offers.Offer(**{**first.to_doc(), "fill": None, "amount": first.amount // 2})
        assert outcomes(client, offers.sign(owner, changed, 2)) == {"applied": 1}
        assert outcomes(client, foreign_offer(other, clock.now)) == {"applied": 1}  # per owner
        # once one closes, there is room again
        cancelled = offers.Offer(**{**changed.to_doc(), "fill": None, "status": offers.CANCELLED})
        assert outcomes(client, offers.sign(owner, cancelled, 3)) == {"applied": 1}
        assert outcomes(client, fourth) == {"applied": 1}
        assert outcomes(client, foreign_offer(owner, clock.now)) == {"owner_full": 1}
        health = client.get("/health").json
        assert health["announcements"]["announce"]["owner_full"] == 2
        page = client.get("/metrics").get_data(as_text=True)
        assert 'node_intake_records_total{outcome="owner_full",source="announce"} 2.0' in page
    finally:
        node.stop()


def test_a_peer_pushing_faster_than_its_bucket_is_refused_and_counted(grape_url, tmp_path):
    clock = Clock()
    client, node = limited_node(grape_url, tmp_path, clock, push_burst=5, push_rate=1e-6)
    try:
        owner = SigningKey.generate()
        batch = [foreign_offer(owner, clock.now) for _ in range(5)]
        for signed in batch[:2]:
            assert outcomes(client, signed) == {"applied": 1}
        body = {"announcements": [announcement(s) for s in batch[2:]]}  # 3 records, 3 tokens
        assert client.post("/peer/announce", json=body).json["outcomes"] == {"applied": 3}
        body = {"announcements": [announcement(s) for s in batch]}
        resp = client.post("/peer/announce", json=body)
        assert resp.json["outcomes"] == {"rate_limited": 5}  # nothing of it was read
        assert outcomes(client, foreign_offer(owner, clock.now)) == {"rate_limited": 1}
        assert client.get("/health").json["announcements"]["announce"]["rate_limited"] == 6
        page = client.get("/metrics").get_data(as_text=True)
        assert 'node_intake_records_total{outcome="rate_limited",source="announce"} 6.0' in page
    finally:
        node.stop()


def test_a_bucket_refills_at_its_rate_and_stays_bounded():
    now = [0.0]
    limiter = PushLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    assert limiter.allow("b")  # each address has its own
    now[0] += 0.5  # one token back
    assert [limiter.allow("a"), limiter.allow("a")] == [True, False]
    now[0] += 10
    assert not limiter.allow("a", cost=3)  # a push of 3 records costs 3: refused whole
    assert limiter.allow("a", cost=2)
    for i in range(MAX_BUCKETS + 10):
        limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) <= MAX_BUCKETS


def test_honest_burst_propagates_and_a_flood_is_refused_on_real_nodes(tmp_path):
    """500 offers from one owner reach a peer with the default limits (over Grenache RPC);
    a node started with small limits keeps 100 of them and refuses a push flood."""
    net = Net(tmp_path, grapes=1, nodes=2)
    try:
        a, b = net.nodes
        owner = net.ids[a.url]
        for i in range(500):
            net.create(a, price=f"{30000 + i}.00", amount="0.01")

        def open_on(proc) -> int:
            listed = net.get(proc, f"/offers?status=open&owner={owner}")
            return len(listed["offers"])

        wait_until(lambda: open_on(b) == 500, timeout=30, what="500 offers on B")
        honest = scrape(b.url)
        for outcome in ("owner_full", "rate_limited", "over_limit"):
            for source in ("announce", "sync"):
                key = ("node_intake_records_total", (("outcome", outcome), ("source", source)))
                assert honest.get(key, 0.0) == 0, (outcome, source)
        small = ["--max-offers-per-owner", "100", "--peer-push-burst", "5"]
        c = net.add_node(extra=[*small, "--peer-push-rate", "0.001"])

        def refused_on_c() -> int:  # counted once its sync batch is through
            counted = net.get(c, "/health")["announcements"]
            return sum(source.get("owner_full", 0) for source in counted.values())

        wait_until(lambda: refused_on_c() >= 400, timeout=30, what="C refusing 400 of A's")
        assert open_on(c) == 100
        # a flood of pushes over Grenache RPC: the first of them take the rest of the burst
        rpc = f"127.0.0.1:{net.get(c, '/health')['rpc_port']}"
        flood = SigningKey.generate()
        transport = HttpTransport()
        answers = [
            rpc_call(
                transport,
                rpc,
                PEER_SERVICE,
                {"action": "peerAnnounce", "args": [announcement(foreign_offer(flood, 0))]},
                5,
            )["outcomes"]
            for _ in range(10)
        ]
        transport.close()
        assert {"rate_limited": 1} in answers and answers[-1] == {"rate_limited": 1}
        page = scrape(c.url)
        assert (
            page[
                ("node_intake_records_total", (("outcome", "rate_limited"), ("source", "announce")))
            ]
            >= 5
        )
    finally:
        net.close()
