"""The REST endpoints of SPEC §7. Handlers are thin: parse (done by ``Api``), call, render.

``public`` is what a user (or Postman) calls on their own node; ``peer`` is
what nodes call on each other. Later endpoints (orders, trades, ledger) are
added as further ``Api`` groups in their own modules and listed in ``APIS``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response

from p2p_offers.bids import Bid
from p2p_offers.fields import DocError
from p2p_offers.node import errors, models
from p2p_offers.node.api import Api, openapi
from p2p_offers.node.exchange_api import exchange
from p2p_offers.node.index import Version
from p2p_offers.node.intake import MALFORMED
from p2p_offers.offers import SignedOffer

public = Api("public")
peer = Api("peer")

# -- node ----------------------------------------------------------------------------------


@public.route("GET", "/health", summary="Liveness, identity and counters", response=models.Health)
def health(node: Any) -> dict[str, Any]:
    return node.health()


@public.route("GET", "/peers", summary="Other nodes found in the DHT", response=models.PeersOut)
def peers(node: Any) -> dict[str, Any]:
    return {"peers": [{"address": p.address, "client_id": p.client_id} for p in node.peers.nodes()]}


@public.route("GET", "/openapi.json", summary="This document")
def openapi_document(node: Any) -> dict[str, Any]:
    return openapi(APIS, "p2p-offers node", "1")


# -- offers --------------------------------------------------------------------------------


@public.route(
    "GET",
    "/offers",
    summary="Every offer this node knows (the network's book as it sees it)",
    query=models.OffersQuery,
    response=models.OfferList,
)
def list_offers(node: Any, query: models.OffersQuery) -> Response:
    found = node.index.select(query.side, query.status, query.owner, query.limit)
    items = ",".join(held.rendered("rest", _offer_json) for held in found)
    return Response(f'{{"offers":[{items}]}}', mimetype="application/json")


def _offer_json(signed: SignedOffer) -> str:
    return json.dumps(models.offer_view(signed), separators=(",", ":"))


def _record_json(signed: SignedOffer) -> str:
    return json.dumps(signed.record.to_json(), separators=(",", ":"))


@public.route(
    "GET",
    "/offers/<offer_id>",
    summary="One offer with the versions this node has seen",
    response=models.OfferDetail,
    errors=(404,),
)
def get_offer(node: Any, offer_id: str) -> dict[str, Any]:
    own = node.service.history(offer_id)
    if own:
        latest, history = own[-1], [models.version_view(Version.of(s)) for s in own]
    else:
        held = node.index.get(offer_id)
        if held is None:
            raise errors.not_found("offer", offer_id)
        latest, history = held.signed, [models.version_view(v) for v in held.history]
    return {**models.offer_view(latest), "history": history}


@public.route(
    "POST",
    "/offers",
    summary="Place an offer",
    body=models.CreateOffer,
    response=models.OfferOut,
    status=201,
    auth=True,
)
def create_offer(node: Any, body: models.CreateOffer) -> dict[str, Any]:
    ttl_ms = body.ttl_s * 1000 if body.ttl_s else None
    return models.offer_view(
        node.service.create(body.side, body.price_usd, body.amount_btc, ttl_ms)
    )


@public.route(
    "PATCH",
    "/offers/<offer_id>",
    summary="Change price and/or amount (applies to the chain's open record)",
    body=models.UpdateOffer,
    response=models.OfferOut,
    errors=(403, 404, 409),
    auth=True,
)
def update_offer(node: Any, offer_id: str, body: models.UpdateOffer) -> dict[str, Any]:
    return models.offer_view(node.service.update(offer_id, body.price_usd, body.amount_btc))


@public.route(
    "DELETE",
    "/offers/<offer_id>",
    summary="Cancel (applies to the chain's open record)",
    response=models.OfferOut,
    errors=(403, 404, 409),
    auth=True,
)
def cancel_offer(node: Any, offer_id: str) -> dict[str, Any]:
    return models.offer_view(node.service.cancel(offer_id))


@public.route(
    "POST",
    "/offers/<offer_id>/bids",
    summary="Bid on another node's offer; the reply is the owner's signed receipt",
    body=models.PlaceBid,
    response=models.ReceiptOut,
    status=201,
    errors=(404, 409, 502, 503),
    auth=True,
)
def place_bid(node: Any, offer_id: str, body: models.PlaceBid) -> dict[str, Any]:
    return models.receipt_view(node.taker.bid(offer_id, body.amount_btc))


@public.route(
    "GET", "/book", summary="Depth per price level", query=models.BookQuery, response=models.BookOut
)
def book(node: Any, query: models.BookQuery) -> dict[str, Any]:
    return {
        "bids": [models.level_view(lv) for lv in node.index.depth("buy", query.levels)],
        "asks": [models.level_view(lv) for lv in node.index.depth("sell", query.levels)],
    }


# -- peer side -----------------------------------------------------------------------------


def _count_malformed(node: Any) -> None:
    node.intake.count("announce", MALFORMED)


@peer.route(
    "POST",
    "/peer/announce",
    summary="A hint that records changed; each is verified before it is believed",
    body=models.AnnounceBody,
    response=models.AnnounceResult,
    on_invalid=_count_malformed,
)
def announce(node: Any, body: models.AnnounceBody) -> dict[str, Any]:
    items = body.items()
    if len(items) == 1:  # the common case; skip the verifier thread's hand-off
        return {"outcomes": {node.intake.receive(items[0].hash, items[0].record, "announce"): 1}}
    outcomes = node.intake.receive_many(((i.hash, i.record) for i in items), "announce")
    return {"outcomes": dict(outcomes)}


@peer.route(
    "POST",
    "/peer/bids",
    summary="A signed bid on one of this node's offers; the reply is a signed receipt",
    body=models.BidIn,
    response=models.ReceiptWire,
    status=201,
    errors=(403, 404, 409),
)
def accept_bid(node: Any, body: models.BidIn) -> dict[str, Any]:
    try:
        bid = Bid.from_wire(body.model_dump())
    except DocError as exc:
        raise errors.bad_request("invalid_bid", str(exc)) from None
    return node.service.accept_bid(bid).to_wire()


@peer.route(
    "GET",
    "/peer/offers",
    summary="Signed records of every open offer this node holds, paged by id",
    query=models.PeerOffersQuery,
    response=models.PeerOffersPage,
)
def peer_offers(node: Any, query: models.PeerOffersQuery) -> Response:
    if query.cursor is None:
        node.peers.invalidate()  # a node starting a sync may be new to us: look again
    page, cursor = node.index.open_page(query.cursor, query.limit)
    records = ",".join(held.rendered("record", _record_json) for held in page)
    body = f'{{"node":{json.dumps(node.client_id)},"next":{json.dumps(cursor)},'
    body += f'"records":[{records}]}}'
    return Response(body, mimetype="application/json")


APIS = [public, peer, exchange]
