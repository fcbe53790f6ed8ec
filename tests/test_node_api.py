"""The node's REST API in process (Flask test client, real grape): shapes, errors, owner rules.

The node runs in the test's process with no background threads and talks to one
shared real grape, so this is fast and exact; the behaviour across real node
processes is in test_node_network.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey
from node_helpers import Clock, announcement, foreign_offer, local_node, unreachable_grape_url

from p2p_offers import bids, offers
from p2p_offers.fields import new_id
from p2p_offers.node.http import schemas as models
from p2p_offers.node.http import views
from p2p_offers.node.network.peers import rest_owner_service
from p2p_offers.node.storage.receipts import Role
from p2p_offers.signing import public_hex

MAKER = Role.MAKER

OTHER = SigningKey(b"\x07" * 32)
TAKER = SigningKey(b"\x08" * 32)


@pytest.fixture
def env(grape_url, tmp_path):
    clock = Clock()
    client, node, link = local_node(grape_url, tmp_path, clock)
    yield client, node, link, clock
    node.stop()


def create(client: Any, **body: Any) -> dict:
    resp = client.post(
        "/offers", json={"side": "sell", "price_usd": "30000.00", "amount_btc": "1", **body}
    )
    assert resp.status_code == 201, resp.json
    return resp.json


def peer_bid(node: Any, offer: dict, amount: int, **kw: Any) -> bids.Bid:
    args = {
        "offer_id": offer["id"],
        "offer_seq": offer["seq"],
        "maker": node.client_id,
        "amount": amount,
        "price": 3_000_000,
        "now_ms": node.clock(),
    }
    return bids.make_bid(TAKER, **{**args, **kw})


def error_code(resp: Any) -> str:
    return resp.json["error"]["code"]


# -- offers ------------------------------------------------------------------------------------


def test_create_get_update_cancel(env) -> None:
    client, node, _, clock = env
    offer = create(client, price_usd=30000.5, amount_btc="0.12345678", ttl_s=60)
    assert offer["price_usd"] == "30000.50" and offer["amount_btc"] == "0.12345678"
    assert offer["status"] == "open" and offer["seq"] == 1 and offer["owner"] == node.client_id
    assert offer["expires"] - offer["created"] == 60_000
    models.OfferOut.model_validate(offer)

    clock.now += 5
    resp = client.patch(f"/offers/{offer['id']}", json={"price_usd": "31000"})
    assert resp.status_code == 200 and resp.json["price_usd"] == "31000.00"
    assert resp.json["seq"] == 2 and resp.json["priority"] == clock.now

    resp = client.delete(f"/offers/{offer['id']}")
    assert resp.status_code == 200 and resp.json["status"] == "cancelled" and resp.json["seq"] == 3

    detail = client.get(f"/offers/{offer['id']}").json
    models.OfferDetail.model_validate(detail)
    assert [v["seq"] for v in detail["history"]] == [1, 2, 3]
    assert [v["status"] for v in detail["history"]] == ["open", "open", "cancelled"]

    for again in (client.delete, lambda p: client.patch(p, json={"amount_btc": "1"})):
        resp = again(f"/offers/{offer['id']}")
        assert resp.status_code == 409 and error_code(resp) == "offer_not_open"


def test_list_filters_and_book(env) -> None:
    client, node, _, _clock = env
    create(client, price_usd="100", amount_btc="1")
    create(client, price_usd="100", amount_btc="2")
    create(client, side="buy", price_usd="90", amount_btc="3")
    gone = create(client, price_usd="101", amount_btc="1")
    client.delete(f"/offers/{gone['id']}")

    offers_ = client.get("/offers").json["offers"]
    models.OfferList.model_validate({"offers": offers_})
    assert len(offers_) == 4
    assert len(client.get("/offers?status=open").json["offers"]) == 3
    assert len(client.get("/offers?side=buy").json["offers"]) == 1
    assert len(client.get(f"/offers?owner={node.client_id}&status=cancelled").json["offers"]) == 1
    assert client.get(f"/offers?owner={public_hex(OTHER)}").json["offers"] == []

    book = client.get("/book").json
    models.BookOut.model_validate(book)
    assert book == {
        "bids": [{"price_usd": "90.00", "amount_btc": "3.00000000", "count": 1}],
        "asks": [{"price_usd": "100.00", "amount_btc": "3.00000000", "count": 2}],
    }
    assert client.get("/book?levels=0").status_code == 400


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"side": "hold", "price_usd": "1", "amount_btc": "1"}, {"side"}),
        ({"side": "buy", "price_usd": "1.001", "amount_btc": "1"}, {"price_usd"}),
        (
            {"side": "buy", "price_usd": "0", "amount_btc": "0.000000001"},
            {"price_usd", "amount_btc"},
        ),
        ({"side": "buy", "price_usd": 1.5, "amount_btc": -1}, {"amount_btc"}),
        ({"side": "buy", "price_usd": True, "amount_btc": "1"}, {"price_usd"}),
        ({"side": "buy", "price_usd": "NaN", "amount_btc": "1"}, {"price_usd"}),
        ({"side": "buy", "price_usd": "1", "amount_btc": "1", "ttl_s": 0}, {"ttl_s"}),
        ({"side": "buy", "price_usd": "1", "amount_btc": "1", "extra": 1}, {"extra"}),
        ({"price_usd": "1", "amount_btc": "1"}, {"side"}),
        ([], {"body"}),
    ],
)
def test_create_rejects_bad_input_naming_fields(env, body: Any, fields: set[str]) -> None:
    client = env[0]
    resp = client.post("/offers", json=body)
    assert resp.status_code == 400 and error_code(resp) == "invalid_input"
    named = {d["field"] for d in resp.json["error"]["details"]["fields"]}
    assert fields <= named or (fields == {"body"} and named), resp.json


def test_money_is_exact_even_as_json_numbers(env) -> None:
    client = env[0]
    offer = create(client, price_usd=0.1 + 0.2 if False else 30000.07, amount_btc=0.00000001)
    assert (offer["price_usd"], offer["amount_btc"]) == ("30000.07", "0.00000001")
    raw = b'{"side":"sell","price_usd":12345678.91,"amount_btc":0.1}'
    resp = client.post("/offers", data=raw, content_type="application/json")
    assert resp.json["price_usd"] == "12345678.91"


def test_non_json_oversized_unknown_and_wrong_method(env) -> None:
    client = env[0]
    resp = client.post("/offers", data=b"this is not json", content_type="application/json")
    assert resp.status_code == 400 and "error" in resp.json
    resp = client.post("/offers", data=b"x" * (64 * 1024 + 1), content_type="application/json")
    assert resp.status_code == 413 and error_code(resp) == "body_too_large"
    assert client.get("/offers/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.delete("/offers/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get("/nope").status_code == 404 and error_code(client.get("/nope")) == "not_found"
    assert client.put("/offers").status_code == 405
    assert client.patch("/offers/x", json={}).status_code == 400  # neither field given


def test_update_rules(env) -> None:
    client, _, _, clock = env
    offer = create(client)
    clock.now += 10
    smaller = client.patch(f"/offers/{offer['id']}", json={"amount_btc": "0.5"}).json
    assert smaller["priority"] == offer["priority"]  # giving up size keeps the queue place
    larger = client.patch(f"/offers/{offer['id']}", json={"amount_btc": "2"}).json
    assert larger["priority"] == clock.now
    resp = client.patch(f"/offers/{offer['id']}", json={"price_usd": "-1"})
    assert resp.status_code == 400


def test_bearer_token_guards_control_endpoints(grape_url, tmp_path) -> None:
    client, node, _ = local_node(grape_url, tmp_path, token="s3cret")
    try:
        body = {"side": "sell", "price_usd": "1", "amount_btc": "1"}
        assert client.post("/offers", json=body).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert client.post("/offers", json=body, headers=bad).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        offer = client.post("/offers", json=body, headers=good).json
        assert client.delete(f"/offers/{offer['id']}").status_code == 401
        assert client.delete(f"/offers/{offer['id']}", headers=good).status_code == 200
        assert client.get("/offers").status_code == 200  # reads stay open
        assert client.get("/health").status_code == 200
        doc = client.get("/openapi.json").json  # with a token set, the document says so
        post = doc["paths"]["/offers"]["post"]
        assert post["security"] == [{"bearer": []}] and "401" in post["responses"]
        assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert "security" not in doc["paths"]["/offers"]["get"]
    finally:
        node.stop()


def test_openapi_is_generated_from_the_models(env) -> None:
    doc = env[0].get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/offers"]["post"]
    assert set(post["responses"]) >= {"201", "400", "413"}
    assert "401" not in post["responses"] and "security" not in post  # no token set
    assert "securitySchemes" not in doc["components"]
    schemas = doc["components"]["schemas"]
    assert {"CreateOffer", "OfferOut", "ReceiptOut", "ErrorOut"} <= set(schemas)
    assert "price_usd" in schemas["CreateOffer"]["properties"]
    assert "/offers/{offer_id}/bids" in doc["paths"]
    assert "/peer/announce" in doc["paths"]


# -- announcements: only verified, newer records change anything ---------------------------------


def test_announcements_apply_only_valid_newer_records(env) -> None:
    client, _node, link, clock = env
    v1 = foreign_offer(OTHER, clock.now)
    v2 = offers.sign(OTHER, v1.offer.update(clock.now, amount=5), 2)

    def send(body: Any) -> dict:
        resp = client.post("/peer/announce", json=body)
        return resp.json

    assert send(announcement(v1))["outcomes"] == {"applied": 1}
    assert send(announcement(v1))["outcomes"] == {"stale": 1}  # replay
    assert send(announcement(v2))["outcomes"] == {"applied": 1}
    assert send(announcement(v1))["outcomes"] == {"stale": 1}  # older version replayed

    forged = {**announcement(v2), "record": {**v2.record.to_json(), "seq": 3}}
    assert send(forged)["outcomes"] == {"forged": 1}
    evil = SigningKey(b"\x66" * 32)
    stolen = offers.sign(evil, v2.offer.cancel(), 9)  # same id, another key
    assert send(announcement(stolen))["outcomes"] == {"conflict": 1}
    wrong_hash = {**announcement(v2), "hash": "0" * 40}
    assert send(wrong_hash)["outcomes"] == {"mismatch": 1}
    assert send({"hash": "0" * 40})["outcomes"] == {"unknown": 1}
    assert send({"hash": "zz", "record": {}})["outcomes"] == {"malformed": 1}
    bad_doc = offers.records.sign(OTHER, b'{"not":"an offer"}', 1, new_id().encode())
    assert send(announcement(offers.SignedOffer(v1.offer, bad_doc)))["outcomes"] == {"malformed": 1}
    expired = foreign_offer(OTHER, clock.now - 700_000)
    assert send(announcement(expired))["outcomes"] == {"expired": 1}
    assert client.post("/peer/announce", json={"nonsense": 1}).status_code == 400

    held = client.get(f"/offers/{v1.id}").json
    assert (held["seq"], held["amount_btc"], held["status"]) == (2, "0.00000005", "open")
    counts = client.get("/health").json["announcements"]["announce"]
    assert counts["applied"] == 2 and counts["stale"] == 2 and counts["forged"] == 1
    assert counts["malformed"] == 3 and counts["conflict"] == 1 and counts["mismatch"] == 1
    assert counts["unknown"] == 1 and counts["expired"] == 1

    cancelled = offers.sign(OTHER, v2.offer.cancel(), 3).record
    assert link.put_record(cancelled) == v2.hash  # the owner puts it into the DHT ...
    assert send({"hash": v2.hash})["outcomes"] == {"applied": 1}  # ... a hint: read from there
    assert client.get(f"/offers/{v1.id}").json["status"] == "cancelled"


def test_batch_announcements(env) -> None:
    client, _, _, clock = env
    recs = [foreign_offer(OTHER, clock.now) for _ in range(5)]
    body = {"announcements": [announcement(r) for r in recs] + [{"hash": "x"}]}
    assert client.post("/peer/announce", json=body).json["outcomes"] == {
        "applied": 5,
        "malformed": 1,
    }
    assert len(client.get("/offers?status=open").json["offers"]) == 5


def test_expiry_drops_offers_from_the_book(env) -> None:
    client, node, _, clock = env
    rec = foreign_offer(OTHER, clock.now, ttl_ms=1000)
    client.post("/peer/announce", json=announcement(rec))
    assert len(client.get("/offers?status=open").json["offers"]) == 1
    clock.now += 1000
    node.index.sweep()
    assert client.get("/offers").json["offers"] == []
    assert client.get(f"/offers/{rec.id}").status_code == 404
    assert client.post("/peer/announce", json=announcement(rec)).json["outcomes"] == {"expired": 1}


def test_owner_refreshes_at_half_life(env) -> None:
    client, node, _, clock = env
    offer = create(client, ttl_s=30)
    clock.now += 14_000
    assert node.maker.refresh_due() == 0
    clock.now += 1_000
    assert node.maker.refresh_due() == 1
    again = client.get(f"/offers/{offer['id']}").json
    assert again["seq"] == 2 and again["expires"] == clock.now + 30_000


def test_peer_offers_pages_through_open_offers(env) -> None:
    client, node, _, _clock = env
    made = {create(client)["id"] for _ in range(7)}
    client.delete(f"/offers/{made.pop()}")
    seen, cursor = [], None
    while True:
        page = client.get("/peer/offers", query_string={"limit": 3, "cursor": cursor or ""})
        if cursor is None:
            page = client.get("/peer/offers?limit=3")
        body = page.json
        models.PeerOffersPage.model_validate(body)
        assert body["node"] == node.client_id
        seen += [r["salt"] for r in body["records"]]
        cursor = body["next"]
        if not cursor:
            break
    assert seen == sorted(made)


# -- bids on the owner -----------------------------------------------------------------------


def test_owner_fills_partially_then_fully_with_remainder_chain(env) -> None:
    client, node, _, _clock = env
    offer = create(client, amount_btc="0.00001000")  # 1000 sats
    first = peer_bid(node, offer, 300)
    resp = client.post("/peer/bids", json=first.to_wire())
    assert resp.status_code == 201
    receipt = bids.Receipt.from_wire(resp.json)
    receipt.verify()
    receipt.check_answers(first)
    assert receipt.offer_id == offer["id"] and receipt.remainder is not None

    # the same bid again: the same receipt, no second fill
    assert client.post("/peer/bids", json=first.to_wire()).json == resp.json

    # a bid naming the original (already split) record lands on the live remainder
    second = peer_bid(node, offer, 700)
    resp2 = client.post("/peer/bids", json=second.to_wire())
    assert resp2.status_code == 201
    assert resp2.json["offer_id"] == receipt.remainder and resp2.json["remainder"] is None

    third = peer_bid(node, offer, 1)
    resp3 = client.post("/peer/bids", json=third.to_wire())
    assert resp3.status_code == 409 and error_code(resp3) == "offer_taken"

    root = client.get(f"/offers/{offer['id']}").json
    rem = client.get(f"/offers/{receipt.remainder}").json
    assert root["status"] == "filled" and root["fill"]["remainder"] == rem["id"]
    assert rem["status"] == "filled" and rem["fill"]["amount_btc"] == "0.00000700"
    assert rem["priority"] == root["priority"] and rem["parent"] == root["id"]
    assert len(node.receipts.all(MAKER)) == 2


def test_owner_rejections(env) -> None:
    client, node, _, clock = env
    offer = create(client, amount_btc="0.00001000")

    def post(bid: bids.Bid) -> Any:
        return client.post("/peer/bids", json=bid.to_wire())

    too_much = post(peer_bid(node, offer, 1001))
    assert too_much.status_code == 409 and error_code(too_much) == "insufficient_amount"
    assert too_much.json["error"]["details"]["available_btc"] == "0.00001000"  # API units

    wrong_price = post(peer_bid(node, offer, 1, price=2_900_000))
    assert wrong_price.status_code == 409 and error_code(wrong_price) == "price_changed"
    future_seq = post(peer_bid(node, offer, 1, offer_seq=5))
    assert future_seq.status_code == 409 and error_code(future_seq) == "stale_offer"

    other_maker = post(peer_bid(node, offer, 1, maker=public_hex(OTHER)))
    assert other_maker.status_code == 403

    wire = peer_bid(node, offer, 1).to_wire()
    wire["amount"] = 2
    assert client.post("/peer/bids", json=wire).status_code == 400  # signature broken
    assert client.post("/peer/bids", json={**wire, "amount": 0}).status_code == 400
    assert client.post("/peer/bids", json={"bid_id": 1}).status_code == 400

    unknown = post(peer_bid(node, {**offer, "id": "00000000-0000-4000-8000-000000000000"}, 1))
    assert unknown.status_code == 404

    reused = peer_bid(node, offer, 10)
    reused_reply = post(reused)
    assert reused_reply.status_code == 201
    twin = peer_bid(node, offer, 11, bid_id=reused.bid_id)
    dup = post(twin)
    assert dup.status_code == 409 and error_code(dup) == "duplicate_bid"

    # the partial fill closed the record bid on: only its live remainder can be repriced
    closed = client.patch(f"/offers/{offer['id']}", json={"price_usd": "31000"})
    assert closed.status_code == 409 and error_code(closed) == "offer_not_open"
    live = reused_reply.json["remainder"]
    assert closed.json["error"]["details"] == {"offer_id": live}
    client.patch(f"/offers/{live}", json={"price_usd": "31000"})
    stale = post(peer_bid(node, offer, 1))
    assert stale.status_code == 409 and error_code(stale) == "price_changed"

    clock.now += 10**9
    expired = post(peer_bid(node, offer, 1, price=3_100_000, offer_seq=1))
    assert expired.status_code == 409 and error_code(expired) == "offer_expired"
    assert len(node.receipts.all(MAKER)) == 1


def test_foreign_offers_cannot_be_changed_or_filled_here(env) -> None:
    client, node, _, clock = env
    rec = foreign_offer(OTHER, clock.now)
    client.post("/peer/announce", json=announcement(rec))
    assert client.delete(f"/offers/{rec.id}").status_code == 403
    assert client.patch(f"/offers/{rec.id}", json={"price_usd": "1"}).status_code == 403
    bid = bids.make_bid(
        TAKER,
        offer_id=rec.id,
        offer_seq=1,
        maker=node.client_id,  # addressed to us, but the offer is not ours
        amount=1,
        price=rec.offer.price,
        now_ms=clock.now,
    )
    resp = client.post("/peer/bids", json=bid.to_wire())
    assert resp.status_code == 403
    assert client.get(f"/offers/{rec.id}").json["status"] == "open"


# -- bids on the taker -----------------------------------------------------------------------


def test_taker_errors_without_reaching_an_owner(env) -> None:
    client, node, link, clock = env
    own = create(client)
    resp = client.post(f"/offers/{own['id']}/bids", json={"amount_btc": "0.1"})
    assert resp.status_code == 409 and error_code(resp) == "own_offer"

    resp = client.post(
        "/offers/00000000-0000-4000-8000-000000000000/bids", json={"amount_btc": "0.1"}
    )
    assert resp.status_code == 404
    assert client.post(f"/offers/{own['id']}/bids", json={"amount_btc": "0"}).status_code == 400

    owner = SigningKey.generate()  # a name of this test's own in the shared grape
    rec = foreign_offer(owner, clock.now)
    client.post("/peer/announce", json=announcement(rec))
    resp = client.post(f"/offers/{rec.id}/bids", json={"amount_btc": "0.1"})
    assert resp.status_code == 502 and error_code(resp) == "owner_unreachable"  # not announced

    link.announce(rest_owner_service(public_hex(owner)), 1, "127.0.0.1")  # nobody there
    resp = client.post(f"/offers/{rec.id}/bids", json={"amount_btc": "0.1"})
    assert resp.status_code == 502

    link.grape = unreachable_grape_url()  # the grape is gone: the lookup cannot connect
    node.peers.forget_owner(public_hex(owner))
    resp = client.post(f"/offers/{rec.id}/bids", json={"amount_btc": "0.1"})
    assert resp.status_code == 503 and error_code(resp) == "dht_unavailable"
    assert node.receipts.all() == []


def test_views_match_their_models(env) -> None:
    client, node, _, _ = env
    offer = create(client, amount_btc="0.00001000")
    receipt = node.maker.accept_bid(peer_bid(node, offer, 100))
    models.ReceiptOut.model_validate(views.receipt_view(receipt))
    models.ReceiptWire.model_validate(receipt.to_wire())
    filled = node.index.get(offer["id"])
    assert filled is not None
    models.OfferOut.model_validate(views.offer_view(filled.signed))
    models.Health.model_validate(client.get("/health").json)
    models.PeersOut.model_validate(client.get("/peers").json)
