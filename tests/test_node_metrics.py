"""``GET /metrics`` on nodes (issue 9.4): Prometheus' text format, read by its own parser."""

from __future__ import annotations

import pytest
from node_helpers import Net, Samples, local_node, scrape, wait_until


@pytest.fixture
def net(tmp_path):
    net = Net(tmp_path, grapes=1, nodes=2)
    yield net
    net.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_create_and_a_bid_move_both_nodes_counts(net):
    a, b = net.nodes
    doc = net.get(a, "/openapi.json")  # described as what it is: not JSON
    assert list(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert net.call(a, "POST", "/metrics").status_code == 405
    before_a, before_b = scrape(a.url), scrape(b.url)
    offer = net.create(a, amount="1")
    wait_until(lambda: net.offer(b, offer["id"]), what="the offer on B")
    assert net.bid(b, offer["id"], "0.25").status_code == 201
    # A's DHT puts are asynchronous (the publisher's queue): wait for the remainder's
    wait_until(lambda: scrape(a.url).get(("node_publish_pending", ())) == 0, what="publications")
    after_a, after_b = scrape(a.url), scrape(b.url)

    def grew(after: Samples, before: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # the maker: one create, one bid filled on its offer, records put and pushed
    assert grew(after_a, before_a, "node_requests_total", operation="create_offer", outcome="ok")
    assert grew(after_a, before_a, "node_request_seconds_count", operation="create_offer") == 1
    assert grew(after_a, before_a, "node_bids_total", side="maker", via="peer", outcome="filled")
    # the offer, its fill and the remainder; a queued version may be overtaken by the next
    assert grew(after_a, before_a, "node_dht_puts_total", outcome="ok") >= 2
    assert grew(after_a, before_a, "node_dht_requests_total", kind="put", outcome="ok") >= 2
    assert grew(after_a, before_a, "node_dht_request_seconds_count", kind="put") >= 2
    # gossip, the default propagation: the owner sent each version to its neighbours
    assert grew(after_a, before_a, "node_gossip_total", event="sent_by_owner") >= 1
    assert grew(after_a, before_a, "node_peer_call_seconds_count", action="gossip") >= 1
    assert value(after_a, "node_gossip_mesh", of="neighbours") == 1
    assert value(after_a, "node_own_open_offers") == 1  # the remainder
    assert value(after_a, "node_ledger", what="entries") >= 1
    assert grew(after_a, before_a, "node_events_published_total", type="book") >= 1
    assert grew(after_a, before_a, "node_events_published_total", type="fill") >= 1
    # the taker: the announcement applied, its bid filled, the call to the owner timed
    assert grew(after_b, before_b, "node_intake_records_total", source="gossip", outcome="applied")
    assert (
        grew(after_b, before_b, "node_bids_total", side="taker", via="api", outcome="filled") == 1
    )
    assert grew(after_b, before_b, "node_peer_calls_total", action="bid", outcome="ok") == 1
    assert grew(after_b, before_b, "node_peer_call_seconds_count", action="bid") == 1
    assert value(after_b, "node_offers", state="open") >= 1
    assert value(after_b, "node_peers") >= 1
    # a refused bid is counted by its error code, on both sides
    assert net.bid(b, offer["id"], "5").status_code == 409  # more than is left
    refused_b = scrape(b.url)
    assert value(
        refused_b, "node_bids_total", side="taker", via="api", outcome="insufficient_amount"
    )
    assert value(
        scrape(a.url), "node_bids_total", side="maker", via="peer", outcome="insufficient_amount"
    )


def test_each_node_has_its_own_registry(grape_url, tmp_path):
    """Two nodes in one process count apart (no global registry)."""
    client_a, node_a, _ = local_node(grape_url, tmp_path / "a")
    client_b, node_b, _ = local_node(grape_url, tmp_path / "b")
    try:
        for _ in range(3):
            assert client_a.get("/health").status_code == 200
        assert client_b.get("/no-such").status_code == 404
        page_a = client_a.get("/metrics").get_data(as_text=True)
        page_b = client_b.get("/metrics").get_data(as_text=True)
        assert 'node_requests_total{operation="health",outcome="ok"} 3.0' in page_a
        assert 'operation="health"' not in page_b
    finally:
        node_a.stop()
        node_b.stop()
