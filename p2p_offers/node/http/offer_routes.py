"""The user's REST endpoints for the node and offers (SPEC §7). Handlers: parse, call, render."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, current_app

from p2p_offers.bids import Receipt
from p2p_offers.node import errors
from p2p_offers.node.http import schemas as s
from p2p_offers.node.http.registry import Api
from p2p_offers.node.http.views import (
    level_view,
    manual_bid_view,
    offer_fill_view,
    offer_view,
    own_fill_view,
    receipt_view,
    version_view,
)
from p2p_offers.node.network.index import Version
from p2p_offers.node.storage.pending import ManualBid
from p2p_offers.node.storage.receipts import Role
from p2p_offers.offers import SignedOffer

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

public = Api("public")


@public.route("GET", "/health", summary="Liveness, identity and counters", response=s.Health)
def health(node: Node) -> dict[str, Any]:
    return node.health()


@public.route("GET", "/peers", summary="Other nodes found in the DHT", response=s.PeersOut)
def peers(node: Node) -> dict[str, Any]:
    return {"peers": [{"address": p.address, "client_id": p.client_id} for p in node.peers.nodes()]}


@public.route(
    "GET",
    "/offers",
    summary="Every offer this node knows (the network's book as it sees it)",
    query=s.OffersQuery,
    response=s.OfferList,
)
def list_offers(node: Node, query: s.OffersQuery) -> Response:
    found = node.index.select(query.side, query.status, node.owner(query.owner), query.limit)
    items = ",".join(held.rendered("rest", _offer_json) for held in found)
    return Response(f'{{"offers":[{items}]}}', mimetype="application/json")


def _offer_json(signed: SignedOffer) -> str:
    return json.dumps(offer_view(signed), separators=(",", ":"))


@public.route(
    "GET",
    "/offers/<offer_id>",
    summary="One offer record with the versions this node has seen (at most the last 64) "
    "and the fills it made",
    response=s.OfferDetail,
    raises=(errors.NotFound,),
)
def get_offer(node: Node, offer_id: str) -> dict[str, Any]:
    own = node.maker.history(offer_id)
    if own:
        latest, history = own[-1], [version_view(Version.of(v)) for v in own]
        fills = [own_fill_view(f) for f in node.maker.fills(offer_id)]
    else:
        held = node.index.get(offer_id)
        if held is None:
            raise errors.unknown("offer", offer_id)
        latest, history = held.signed, [version_view(v) for v in held.history]
        fills = [
            offer_fill_view("maker", r["offer_id"], Receipt.from_wire(r))
            for r in node.ledger.rows.by_offer([offer_id])
        ]
    return {**offer_view(latest), "history": history, "fills": fills}


@public.route(
    "POST",
    "/offers",
    summary="Place an offer; one that would cross this node's own resting offers is "
    '409 self_cross naming them, unless "stp": "cancel_resting" (they are cancelled first)',
    body=s.CreateOffer,
    response=s.OfferOut,
    status=201,
    raises=(errors.SelfCross,),
    auth=True,
)
def create_offer(node: Node, body: s.CreateOffer) -> dict[str, Any]:
    ttl_ms = body.ttl_s * 1000 if body.ttl_s else None
    placed = node.maker.place(
        body.side,
        body.price_usd,
        body.amount_btc,
        ttl_ms,
        body.stp,
        accept=body.accept,
        min_amount=body.min_amount_btc,
    )
    return offer_view(placed)


@public.route(
    "PATCH",
    "/offers/<offer_id>",
    summary="Change price and/or amount of the open record named; a record closed by a "
    "partial fill answers 409 offer_not_open with its live remainder's id; a price that "
    "would cross this node's own resting offers answers 409 self_cross",
    body=s.UpdateOffer,
    response=s.OfferOut,
    raises=(errors.NotOwner, errors.NotFound, errors.Refusal, errors.InvalidTerms),
    auth=True,
)
def update_offer(node: Node, offer_id: str, body: s.UpdateOffer) -> dict[str, Any]:
    return offer_view(node.maker.update(offer_id, body.price_usd, body.amount_btc))


@public.route(
    "DELETE",
    "/offers/<offer_id>",
    summary="Cancel the open record named; a record closed by a partial fill answers "
    "409 offer_not_open with its live remainder's id",
    response=s.OfferOut,
    raises=(errors.NotOwner, errors.NotFound, errors.Refusal),
    auth=True,
)
def cancel_offer(node: Node, offer_id: str) -> dict[str, Any]:
    return offer_view(node.maker.cancel(offer_id))


@public.route(
    "POST",
    "/offers/<offer_id>/bids",
    summary="Bid on another node's offer; the reply is the owner's signed receipt. With "
    "price_usd the bid fills at that price or not at all (409 price_changed). On a manual "
    "offer the owner holds the bid: 202 pending (follow it at GET /bids/<bid_id>)",
    body=s.PlaceBid,
    response=s.ReceiptOut,
    status=201,
    raises=(errors.NotFound, errors.Refusal, errors.PeerFailure, errors.DhtUnavailable),
    auth=True,
    accepted=s.ManualBidOut,
)
def place_bid(node: Node, offer_id: str, body: s.PlaceBid) -> Any:
    outcome = node.taker.bid_or_hold(offer_id, body.amount_btc, price=body.price_usd)
    if isinstance(outcome, ManualBid):
        held = current_app.json.response(manual_bid_view(outcome))
        held.status_code = 202
        return held
    return receipt_view(outcome)


@public.route(
    "GET",
    "/offers/<offer_id>/bids",
    summary="The bids held on this node's manual offer (its whole chain), oldest first, with "
    "their status: pending, accepted, rejected or expired",
    response=s.ManualBidList,
    raises=(errors.NotOwner, errors.NotFound),
    auth=True,
)
def list_bids(node: Node, offer_id: str) -> dict[str, Any]:
    return {"bids": [_bid_view(node, m) for m in node.maker.bids_on(offer_id)]}


@public.route(
    "POST",
    "/offers/<offer_id>/bids/<bid_id>/accept",
    summary='Accept a pending bid on this node\'s manual offer (body {} or {"amount_btc"} for '
    "part of it): it is filled as an auto bid is, and the reply is the signed receipt. An "
    "accept the offer can no longer cover is 409 insufficient_amount",
    body=s.AcceptBid,
    response=s.ReceiptOut,
    raises=(errors.NotOwner, errors.NotFound, errors.Refusal, errors.InvalidTerms),
    auth=True,
)
def accept_pending(node: Node, offer_id: str, bid_id: str, body: s.AcceptBid) -> dict[str, Any]:
    return receipt_view(node.maker.accept_pending(offer_id, bid_id, body.amount_btc))


@public.route(
    "POST",
    "/offers/<offer_id>/bids/<bid_id>/reject",
    summary="Reject a pending bid on this node's manual offer (body {})",
    body=s.RejectBid,
    response=s.ManualBidOut,
    raises=(errors.NotOwner, errors.NotFound, errors.Refusal),
    auth=True,
)
def reject_pending(node: Node, offer_id: str, bid_id: str, body: s.RejectBid) -> dict[str, Any]:
    return manual_bid_view(node.maker.reject_pending(offer_id, bid_id))


@public.route(
    "GET",
    "/bids/<bid_id>",
    summary="A bid on a manual offer: one this node sent (role taker) or holds as the "
    "offer's owner (role maker), with its status and, once accepted, the receipt",
    response=s.ManualBidOut,
    raises=(errors.NotFound,),
)
def get_bid(node: Node, bid_id: str) -> dict[str, Any]:
    now = node.clock()
    for role in (Role.TAKER, Role.MAKER):
        row = node.manual_bids.get(bid_id, role)
        if row is not None:
            return _bid_view(node, row.effective(now))
    raise errors.unknown("bid", bid_id)


def _bid_view(node: Node, row: ManualBid) -> dict[str, Any]:
    stored = node.receipts.get(row.bid.bid_id, row.role) if row.accepted is not None else None
    return manual_bid_view(row, stored.receipt if stored is not None else None)


@public.route(
    "GET", "/book", summary="Depth per price level", query=s.BookQuery, response=s.BookOut
)
def book(node: Node, query: s.BookQuery) -> dict[str, Any]:
    return {
        "bids": [level_view(lv) for lv in node.index.depth("buy", query.levels)],
        "asks": [level_view(lv) for lv in node.index.depth("sell", query.levels)],
    }
