"""What nodes call on each other: identify, announcements, bids, sync pages, ledger feeds."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, current_app

from p2p_offers.bids import Bid
from p2p_offers.fields import DocError
from p2p_offers.node import errors
from p2p_offers.node.http import exchange_schemas as x
from p2p_offers.node.http import schemas as s
from p2p_offers.node.http.registry import Api
from p2p_offers.node.http.remote import remote_address
from p2p_offers.node.network import identity
from p2p_offers.node.network.outcomes import Outcome
from p2p_offers.node.storage.pending import ManualBid
from p2p_offers.offers import SignedOffer

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

peer = Api("peer")


def _count_malformed(node: Node) -> None:
    node.intake.count("announce", Outcome.MALFORMED)


@peer.route(
    "POST",
    "/peer/identify",
    summary="Who listens here: this node's client_id, signed over the caller's challenge and "
    "the address it dialled (421 misdirected for an address this node does not listen at)",
    body=s.IdentifyProbe,
    response=s.Identity,
    raises=(errors.InvalidInput, errors.Misdirected),
)
def identify(node: Node, body: s.IdentifyProbe) -> dict[str, str]:
    hosts, ports = node.config.listens_at()
    if not identity.is_own(body.address, hosts, ports):
        raise errors.Misdirected(
            f"this node does not listen at {body.address}", {"address": body.address}
        )
    return identity.prove(node.key, body.challenge, body.address)


@peer.route(
    "POST",
    "/peer/announce",
    summary="A hint that records changed; each is verified before it is believed",
    body=s.AnnounceBody,
    response=s.AnnounceResult,
    on_invalid=_count_malformed,
)
def announce(node: Node, body: s.AnnounceBody) -> dict[str, Any]:
    items = body.items()
    if not node.intake.admit_push(remote_address(), len(items)):  # docs/limits.md
        return {"outcomes": {Outcome.RATE_LIMITED: len(items)}}
    if len(items) == 1:  # the common case; skip the verifier thread's hand-off
        return {"outcomes": {node.intake.receive(items[0].hash, items[0].record, "announce"): 1}}
    outcomes = node.intake.receive_many(((i.hash, i.record) for i in items), "announce")
    return {"outcomes": dict(outcomes)}


@peer.route(
    "POST",
    "/peer/gossip",
    summary="Gossip from a neighbour (--propagation gossip): versions, mesh, digests",
    body=s.GossipEnvelope,
    response=s.GossipResult,
    raises=(errors.InvalidInput, errors.NotFound),
)
def gossip(node: Node, body: s.GossipEnvelope) -> dict[str, Any]:
    if not node.gossiping:
        raise errors.NotFound("this node does not gossip (--propagation push)")
    taken = node.gossip.receive(body.sender, body.to, body.at, body.mac, body.messages)
    return {"taken": taken}


@peer.route(
    "POST",
    "/peer/bids",
    summary="A signed bid on one of this node's offers; the reply is a signed receipt, or "
    "on a manual offer 202 pending (the same bid again: its receipt once accepted, 409 "
    "bid_rejected or pending_expired, or 202 while still pending)",
    body=s.BidIn,
    response=s.ReceiptWire,
    status=201,
    raises=(errors.NotOwner, errors.NotFound, errors.Refusal, errors.InvalidInput),
    accepted=s.PendingWire,
)
def accept_bid(node: Node, body: s.BidIn) -> Any:
    outcome = node.maker.accept_bid(_bid(body))
    if isinstance(outcome, ManualBid):
        pending = current_app.json.response(_pending(outcome))
        pending.status_code = 202
        return pending
    return outcome.to_wire()


@peer.route(
    "POST",
    "/peer/bid-batches",
    summary="Signed bids one taker sends together (each on one of this node's offers); each "
    "result is what POST /peer/bids would answer that bid: its receipt, pending, or its error",
    body=s.BidBatch,
    response=s.BidBatchResult,
)
def accept_bids(node: Node, body: s.BidBatch) -> dict[str, Any]:
    bids: list[Bid | errors.DomainError] = []
    for item in body.bids:
        try:
            bids.append(_bid(item))
        except errors.DomainError as exc:
            bids.append(exc)
    valid = [b for b in bids if isinstance(b, Bid)]
    outcomes = iter(node.maker.accept_bids(valid))
    results = []
    for bid in bids:
        outcome = bid if isinstance(bid, errors.DomainError) else next(outcomes)
        if isinstance(outcome, errors.DomainError):
            results.append(outcome.body())
        elif isinstance(outcome, ManualBid):
            results.append({"pending": _pending(outcome)})
        else:
            results.append({"receipt": outcome.to_wire()})
    return {"results": results}


def _bid(body: s.BidIn) -> Bid:
    try:
        return Bid.from_wire(body.model_dump())
    except DocError as exc:
        raise errors.InvalidBid(str(exc)) from None


def _pending(held: ManualBid) -> dict[str, Any]:
    return {"bid_id": held.bid.bid_id, "status": "pending", "expires": held.expires}


@peer.route(
    "GET",
    "/peer/offers",
    summary="Signed records of every open offer this node holds, paged by id",
    query=s.PeerOffersQuery,
    response=s.PeerOffersPage,
)
def peer_offers(node: Node, query: s.PeerOffersQuery) -> Response:
    page, cursor = node.syncer.page(query.cursor, query.limit)
    records = ",".join(held.rendered("record", _record_json) for held in page)
    body = f'{{"node":{json.dumps(node.client_id)},"next":{json.dumps(cursor)},'
    body += f'"records":[{records}]}}'
    return Response(body, mimetype="application/json")


def _record_json(signed: SignedOffer) -> str:
    return json.dumps(signed.record.to_json(), separators=(",", ":"))


@peer.route(
    "GET",
    "/peer/ledger",
    summary="The feeds this node holds: owner, height and head hash of each",
    response=x.PeerFeeds,
)
def peer_feeds(node: Node) -> dict[str, Any]:
    return {
        "node": node.client_id,
        "feeds": [
            {"owner": f.owner, "height": f.height, "head": f.head} for f in node.ledger.states()
        ],
    }


@peer.route(
    "GET",
    "/peer/ledger/<owner>",
    summary="Signed entries of one feed from a height on, for peers catching up",
    query=x.PeerLedgerQuery,
    response=x.PeerLedgerPage,
)
def peer_ledger(node: Node, owner: str, query: x.PeerLedgerQuery) -> Response:
    entries = ",".join(node.ledger.raw_entries(owner, query.start, query.limit))
    height = node.ledger.state(owner).height
    body = f'{{"owner":{json.dumps(owner)},"height":{height},"entries":[{entries}]}}'
    return Response(body, mimetype="application/json")
