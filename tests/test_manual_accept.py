"""#9.1: minimum takes and manual accept, on two in-process nodes (``fakes``)."""

from __future__ import annotations

from typing import Any

from node_helpers import wait_until
from test_node_in_process import pair

__all__ = ["pair"]


def offer_on_both(ca: Any, b: Any, **terms: Any) -> dict[str, Any]:
    body = {"side": "sell", "price_usd": "30000", "amount_btc": "1", **terms}
    created = ca.post("/offers", json=body)
    assert created.status_code == 201, created.json
    offer: dict[str, Any] = created.json
    wait_until(lambda: b.index.get(offer["id"]), 10, "the offer to reach b")
    return offer


def test_an_auto_offer_refuses_a_bid_below_its_minimum_on_both_sides(pair) -> None:
    (a, b), (ca, cb), _ = pair
    offer = offer_on_both(ca, b, min_amount_btc="0.5")
    assert offer["accept"] == "auto" and offer["min_amount_btc"] == "0.50000000"
    small = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.25"})
    assert small.status_code == 409 and small.json["error"]["code"] == "below_minimum"
    assert small.json["error"]["details"]["min_amount_btc"] == "0.50000000"
    # the owner refuses it too (a taker that skips its own check): sign one past b's check
    from p2p_offers.bids import make_bid

    bid = make_bid(
        b.key,
        offer_id=offer["id"],
        offer_seq=1,
        maker=a.client_id,
        amount=25_000_000,
        price=3_000_000,
        now_ms=a.clock(),
    )
    refused = ca.post("/peer/bids", json=bid.to_wire())
    assert refused.status_code == 409 and refused.json["error"]["code"] == "below_minimum"
    took = cb.post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.6"})
    assert took.status_code == 201, took.json
    # the remainder (0.4) is below the minimum: only whole
    rest = wait_until(lambda: b.index.get(took.json["remainder"]), 10, "the remainder on b")
    assert rest.signed.offer.min_amount == 50_000_000
    part = cb.post(f"/offers/{rest.signed.id}/bids", json={"amount_btc": "0.3"})
    assert part.status_code == 409 and part.json["error"]["code"] == "below_minimum"
    whole = cb.post(f"/offers/{rest.signed.id}/bids", json={"amount_btc": "0.4"})
    assert whole.status_code == 201, whole.json
