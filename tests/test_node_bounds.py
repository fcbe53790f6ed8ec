"""#10.5: the owner's own state is bounded: history capped, a minimum ttl, ended chains let go."""

from __future__ import annotations

from pathlib import Path

from fakes import MemoryDht
from nacl.signing import SigningKey
from node_helpers import Clock

from p2p_offers import bids
from p2p_offers.cluster import free_ports
from p2p_offers.node.config import MIN_OFFER_TTL_S, NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.runtime import Node
from p2p_offers.node.storage.own_offers import HISTORY_MAX

TAKER = SigningKey(bytes([5]) * 32)


def make_node(tmp_path: Path, clock: Clock) -> Node:
    config = NodeConfig(port=free_ports(1)[0], grape="http://127.0.0.1:1", data_dir=tmp_path)
    return Node(config, clock=clock, dht=MemoryDht())


def test_own_history_is_capped_and_seqs_keep_increasing_across_a_restart(tmp_path) -> None:
    clock = Clock()
    node = make_node(tmp_path, clock)
    ttl_ms = MIN_OFFER_TTL_S * 1000
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=ttl_ms)
    for _ in range(100):
        clock.now += ttl_ms // 2
        assert node.maker.refresh_due() == 1
    history = node.maker.history(offer.id)
    assert len(history) == HISTORY_MAX == 64
    assert [s.seq for s in history] == list(range(101 - 63, 102))
    client = create_app(node.config, node).test_client()
    assert len(client.get(f"/offers/{offer.id}").json["history"]) == HISTORY_MAX
    node.stop()
    again = make_node(tmp_path, clock)
    again.maker.load()
    assert again.maker.update(offer.id, None, 900).seq == 102  # never a seq signed twice
    again.stop()


def test_ttl_has_a_lower_bound_said_in_the_api_description(tmp_path) -> None:
    node = make_node(tmp_path, Clock())
    client = create_app(node.config, node).test_client()
    body = {"side": "sell", "price_usd": "1", "amount_btc": "1"}
    short = client.post("/offers", json={**body, "ttl_s": MIN_OFFER_TTL_S - 1})
    assert short.status_code == 400
    assert [f["field"] for f in short.json["error"]["details"]["fields"]] == ["ttl_s"]
    assert client.post("/offers", json={**body, "ttl_s": MIN_OFFER_TTL_S}).status_code == 201
    doc = client.get("/openapi.json").json
    ttl = doc["components"]["schemas"]["CreateOffer"]["properties"]["ttl_s"]["anyOf"][0]
    assert ttl["minimum"] == MIN_OFFER_TTL_S == 30
    assert f"at least {MIN_OFFER_TTL_S}" in doc["info"]["description"]
    node.stop()


def test_locks_and_caches_of_ended_chains_are_let_go(tmp_path) -> None:
    clock = Clock()
    node = make_node(tmp_path, clock)
    made = [node.maker.create("sell", 3_000_000, 1_000) for _ in range(30)]
    for n, offer in enumerate(made[:20]):
        if n % 2:
            node.maker.cancel(offer.id)
        else:  # a partial fill, then the rest: a chain of two records, both closed
            first = bids.make_bid(
                TAKER, offer_id=offer.id, offer_seq=1, maker=node.client_id, amount=400,
                price=3_000_000, now_ms=clock.now,
            )  # fmt: skip
            rest = node.maker.accept_bid(first).remainder
            last = bids.make_bid(
                TAKER, offer_id=offer.id, offer_seq=1, maker=node.client_id, amount=600,
                price=3_000_000, now_ms=clock.now,
            )  # fmt: skip
            assert node.maker.accept_bid(last).offer_id == rest
    assert node.maker.open_count() == 10
    assert len(node.maker.chains) == 10  # locks of the open chains only
    assert len(node.maker._known) == 10 and len(node.maker._ids) == 10
    # an ended chain is still known from the database
    assert node.maker.own(made[0].id).offer.status == "filled"
    clock.now += 600_000  # the rest expire: the sweep lets them go too
    node.maker.refresh_due()
    assert node.maker.open_count() == 0 and len(node.maker._known) == 0
    assert len(node.maker.chains) == 0
    node.stop()
