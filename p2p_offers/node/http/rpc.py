"""The node's Grenache RPC edge: the user's REST operations as actions (SPEC §8).

A request's payload is ``{"action": "<name>", "args": [<object>]}`` (Bitfinex's
service convention). Each action *is* a REST operation of the registry: its
object supplies the path parameter (``id``, or ``offer_id`` for ``placeBid``),
the rest goes to the operation's query or body model, and ``token`` stands in
for the bearer header. The call goes through ``registry.invoke``, the same
function the Flask view calls, so validation, authorization, the handler and its
reply are the REST endpoint's: ``data`` is exactly the REST body, an error is
``"ERR_<CODE>: message"`` with the REST error object in the data slot.

The edge answers under ``p2p_offers:node`` and ``p2p_offers:owner:<client_id>``
on its own port (``--rpc-port``); see docs/grenache-rpc.md. Other nodes call the
``PEER_ACTIONS`` (the ``/peer/*`` endpoints) under ``p2p_offers:peer`` on the
same port, over ``GrenacheTransport``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from pydantic import ValidationError

from p2p_offers.grenache import PeerRPCServer, ServiceError
from p2p_offers.grenache.wire import RawJson
from p2p_offers.node import errors
from p2p_offers.node.http.registry import Api, Operation, invalid_input, invoke
from p2p_offers.node.network.peers import NODE_SERVICE, owner_service
from p2p_offers.node.network.transport import PEER_SERVICE

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

START_WAIT_S = 30.0  # how long a request that came before the node started waits for it

# action -> (method, path, {args key: path parameter})
ACTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "health": ("GET", "/health", {}),
    "getBook": ("GET", "/book", {}),
    "listOffers": ("GET", "/offers", {}),
    "getOffer": ("GET", "/offers/<offer_id>", {"id": "offer_id"}),
    "createOffer": ("POST", "/offers", {}),
    "updateOffer": ("PATCH", "/offers/<offer_id>", {"id": "offer_id"}),
    "cancelOffer": ("DELETE", "/offers/<offer_id>", {"id": "offer_id"}),
    "placeBid": ("POST", "/offers/<offer_id>/bids", {"offer_id": "offer_id"}),
    "placeOrder": ("POST", "/orders", {}),
    "getOrder": ("GET", "/orders/<order_id>", {"id": "order_id"}),
    "listTrades": ("GET", "/trades", {}),
    "verifyLedger": ("GET", "/ledger/verify", {}),
    "getAccount": ("GET", "/account", {}),
    # manual offers (issue 9.1): the maker's bid list and choice, the taker's view of a bid
    "listBids": ("GET", "/offers/<offer_id>/bids", {"offer_id": "offer_id"}),
    "acceptBid": (
        "POST",
        "/offers/<offer_id>/bids/<bid_id>/accept",
        {"offer_id": "offer_id", "bid_id": "bid_id"},
    ),
    "rejectBid": (
        "POST",
        "/offers/<offer_id>/bids/<bid_id>/reject",
        {"offer_id": "offer_id", "bid_id": "bid_id"},
    ),
    "getBid": ("GET", "/bids/<bid_id>", {"bid_id": "bid_id"}),
}
# node to node (issue 7.2), under PEER_SERVICE: the /peer/* endpoints, for GrenacheTransport
PEER_ACTIONS: dict[str, tuple[str, str, dict[str, str]]] = {
    "health": ("GET", "/health", {}),
    "peerIdentify": ("POST", "/peer/identify", {}),
    "peerAnnounce": ("POST", "/peer/announce", {}),
    "peerGossip": ("POST", "/peer/gossip", {}),
    "peerBid": ("POST", "/peer/bids", {}),
    "peerBids": ("POST", "/peer/bid-batches", {}),
    "peerOffers": ("GET", "/peer/offers", {}),
    "peerFeeds": ("GET", "/peer/ledger", {}),
    "peerFeed": ("GET", "/peer/ledger/<owner>", {"owner": "owner"}),
}


class Actions:
    """Action name -> (operation, path parameters), resolved once against the registry."""

    def __init__(
        self,
        app: Flask,
        node: Node,
        apis: Iterable[Api],
        table: dict[str, tuple[str, str, dict[str, str]]] = ACTIONS,
        ready: threading.Event | None = None,
    ) -> None:
        self.app = app
        self.node = node
        self.ready = ready
        by_route = {(op.method, op.path): op for api in apis for op in api.operations}
        self._ops: dict[str, tuple[Operation, dict[str, str]]] = {}
        for action, (method, path, params) in table.items():
            op = by_route.get((method, path))
            if op is None:  # a route was renamed: fail at start, not on the first call
                raise LookupError(f"action {action}: no operation {method} {path}")
            self._ops[action] = (op, params)

    def __call__(self, payload: Any) -> Any:
        """The Grenache handler: the action's data, or ``ServiceError`` with the REST error."""
        try:
            return self.call(payload)
        except ValidationError as exc:
            error: errors.DomainError = invalid_input(exc)
        except errors.DomainError as exc:
            error = exc
        raise ServiceError(errors.rpc_error(error), error.body())

    def call(self, payload: Any) -> Any:
        if self.ready is not None and not self.ready.wait(START_WAIT_S):
            raise errors.PeerFailure("the node is still starting; try again")
        action, args = _split(payload)
        found = self._ops.get(action)
        if found is None:
            raise errors.NotFound(
                f"unknown action {action!r}; actions: {', '.join(self._ops)}", {"action": action}
            )
        op, params = found
        token = args.pop("token", None)
        path_args = {}
        for key, param in params.items():
            value = args.pop(key, None)
            if not isinstance(value, str) or not value:
                raise errors.InvalidInput.fields([(key, "a string is required")])
            path_args[param] = value
        if op.query is None and op.body is None and args:
            raise errors.InvalidInput.fields([(k, "unexpected field") for k in args])
        with self.app.app_context():
            result = invoke(
                op, self.node, path_args, lambda: args, lambda: args, token, '"token" in args'
            )
            if isinstance(result, Response):  # a handler that renders its own JSON: as is
                return RawJson(result.get_data())
            return result


def _split(payload: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("action"), str):
        raise errors.InvalidInput(
            'a request payload is {"action": "<name>", "args": [<object>]}',
            {"fields": [{"field": "action", "message": "a string is required"}]},
        )
    args = payload.get("args", [])
    if args is None:
        args = []
    if not isinstance(args, list) or len(args) > 1 or not all(isinstance(a, dict) for a in args):
        raise errors.InvalidInput.fields([("args", "a list of at most one object")])
    extra = [k for k in payload if k not in ("action", "args")]
    if extra:
        raise errors.InvalidInput.fields([(k, "unexpected field") for k in extra])
    return payload["action"], dict(args[0]) if args else {}


def start_rpc(
    app: Flask,
    node: Node,
    apis: Iterable[Api],
    max_request: int,
    ready: threading.Event | None = None,
) -> PeerRPCServer:
    """Listen on the node's RPC port and announce its two names there; ``stop()`` to end.

    Started before the node (so the names are in the DHT by the time the node says it
    is ready, as its REST names are), it holds requests until ``ready`` is set, the way
    waitress's bound socket holds them in its backlog until it serves.
    """
    config = node.config
    server = PeerRPCServer(workers=config.threads, max_request=max_request, parse_float=Decimal)
    actions = Actions(app, node, apis, ready=ready)
    names = [NODE_SERVICE, owner_service(node.client_id)]
    for name in names:
        server.handle(name, actions)
    # Peers on a pool of their own: users' bids wait on other nodes' peerBid, and with one
    # pool, two nodes full of those would wait on each other until every bid timed out.
    peer_actions = Actions(app, node, apis, PEER_ACTIONS, ready)
    server.handle(PEER_SERVICE, peer_actions, config.threads)
    server.listen(config.grenache_port, config.host)
    server.announce(node.dht, names, config.announce_interval_s, config.announce_host)
    return server
