"""Issue #11.1: bids expire, a refusal is final, a bid fills only the version it names.

The owner runs in process on a real grape (``local_node``) with a settable clock;
bids arrive at ``POST /peer/bids`` exactly as another node sends them. Each test
fails on the code before the issue: 1970 and 2100 bids were filled, a refused bid
replayed after a PATCH was filled, and any ``offer_seq`` up to the current one was.
"""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey
from node_helpers import Clock, local_node

from p2p_offers import bids
from p2p_offers.bids import BID_WINDOW_MS
from p2p_offers.node.storage.receipts import Role
from p2p_offers.node.storage.refusals import REFUSAL_KEEP_MS

TAKER = SigningKey(b"\x0b" * 32)


@pytest.fixture
def owner(grape_url, tmp_path):
    clock = Clock()
    client, node, _ = local_node(grape_url, tmp_path, clock)
    yield client, node, clock
    node.stop()


def create(client: Any, amount: str = "0.00001000") -> dict:
    resp = client.post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": amount})
    assert resp.status_code == 201, resp.json
    return resp.json


def bid(node: Any, offer: dict, amount: int, **kw: Any) -> bids.Bid:
    args: dict[str, Any] = {
        "offer_id": offer["id"],
        "offer_seq": offer["seq"],
        "maker": node.client_id,
        "amount": amount,
        "price": 3_000_000,
        "now_ms": node.clock(),
    }
    return bids.make_bid(TAKER, **{**args, **kw})


def post(client: Any, b: bids.Bid) -> Any:
    return client.post("/peer/bids", json=b.to_wire())


def code(resp: Any) -> str:
    return resp.json["error"]["code"]


def test_a_bid_dated_outside_the_window_is_refused(owner) -> None:
    client, node, clock = owner
    offer = create(client)
    for ts in (0, 4_102_444_800_000, clock.now - BID_WINDOW_MS - 1, clock.now + BID_WINDOW_MS + 1):
        resp = post(client, bid(node, offer, 10, now_ms=ts))
        assert resp.status_code == 409 and code(resp) == "bid_expired", (ts, resp.json)
        assert resp.json["error"]["details"]["window_s"] == BID_WINDOW_MS // 1000
    for ts in (clock.now - BID_WINDOW_MS, clock.now + BID_WINDOW_MS):  # the edges are inside
        assert post(client, bid(node, offer, 10, now_ms=ts)).status_code == 201
    assert len(node.receipts.all(Role.MAKER)) == 2


def test_a_bid_dated_ahead_is_refused_for_good_when_its_time_comes(owner) -> None:
    client, node, clock = owner
    offer = create(client)
    early = bid(node, offer, 10, now_ms=clock.now + 5 * 60_000)
    first = post(client, early)
    assert first.status_code == 409 and code(first) == "bid_expired"
    clock.now += 5 * 60_000  # now the bid's ts is the owner's now: it would be in the window
    offer = client.get(f"/offers/{offer['id']}").json
    again = post(client, early)
    assert again.status_code == 409 and again.json == first.json
    assert node.receipts.all(Role.MAKER) == []


def test_a_refused_bid_replayed_after_the_offer_grew_gets_the_same_refusal(
    grape_url, tmp_path
) -> None:
    clock = Clock()
    client, node, _ = local_node(grape_url, tmp_path, clock)
    offer = create(client, "0.00001000")
    too_big = bid(node, offer, 5_000)
    first = post(client, too_big)
    assert first.status_code == 409 and code(first) == "insufficient_amount"
    grown = client.patch(f"/offers/{offer['id']}", json={"amount_btc": "1"})
    assert grown.status_code == 200 and grown.json["seq"] == offer["seq"] + 1
    replay = post(client, too_big)
    assert replay.status_code == 409 and replay.json == first.json
    # another bid under the same id is not the refused one
    twin = bid(node, grown.json, 10, bid_id=too_big.bid_id)
    assert code(post(client, twin)) == "duplicate_bid"
    node.stop()

    # durable: a restarted owner still refuses the replay the same way
    client, node, _ = local_node(grape_url, tmp_path, clock)
    try:
        clock.now += 1_000
        assert post(client, too_big).json == first.json
        assert node.receipts.all(Role.MAKER) == []
        # long after, the record is let go, and the bid is outside the window for good
        clock.now += BID_WINDOW_MS + REFUSAL_KEEP_MS
        fresh = post(client, bid(node, grown.json, 20))  # a refusal written prunes old rows
        assert fresh.status_code == 409  # (the offer has expired meanwhile)
        assert node.refusals.count() == 1  # only the fresh one
        late = post(client, too_big)
        assert late.status_code == 409 and code(late) == "bid_expired"
        assert node.receipts.all(Role.MAKER) == []
    finally:
        node.stop()


def test_a_bid_fills_only_the_version_it_names(owner) -> None:
    client, node, clock = owner
    offer = create(client, "0.00001000")
    for seq in (0, offer["seq"] + 1):
        resp = post(client, bid(node, offer, 10, offer_seq=seq))
        assert resp.status_code == 409 and code(resp) == "stale_offer", seq
    clock.now += 1
    patched = client.patch(f"/offers/{offer['id']}", json={"amount_btc": "0.00002000"}).json
    old = post(client, bid(node, offer, 10))  # same price, but the version before the PATCH
    assert old.status_code == 409 and code(old) == "stale_offer"
    assert old.json["error"]["details"]["seq"] == patched["seq"]
    assert node.receipts.all(Role.MAKER) == []
    assert post(client, bid(node, patched, 10)).status_code == 201


def test_the_chain_rule_still_sends_a_bid_on_a_split_record_to_its_remainder(owner) -> None:
    client, node, _ = owner
    offer = create(client, "0.00001000")
    first = post(client, bid(node, offer, 100))
    assert first.status_code == 201
    remainder = first.json["remainder"]
    split = client.get(f"/offers/{offer['id']}").json  # the version recording the fill
    assert split["status"] == "filled" and split["seq"] == offer["seq"] + 1
    on_open = post(client, bid(node, offer, 100))  # the open version the taker saw
    assert on_open.status_code == 201 and on_open.json["offer_id"] == remainder
    on_split = post(client, bid(node, split, 100))  # or the split version
    assert on_split.status_code == 201
    older = post(client, bid(node, offer, 100, offer_seq=0))
    assert older.status_code == 409 and code(older) == "stale_offer"
    # a repriced remainder breaks the chain rule: the price named is not the price there
    live = on_split.json["remainder"]
    client.patch(f"/offers/{live}", json={"price_usd": "31000"})
    moved = post(client, bid(node, offer, 100))
    assert moved.status_code == 409 and code(moved) == "price_changed"
