"""The node's HTTP application: ``create_app`` (Flask factory) and ``serve`` (waitress).

``create_app`` builds a node and its app but starts no thread, so tests can
drive the API with Flask's test client; ``serve`` starts the node, serves it
with waitress until SIGTERM or SIGINT, then stops announcing and flushes
publications before exiting.

Every answer that is not a success is the project's JSON error, whatever
raised it: a domain error (its status from ``status.STATUS``), a pydantic
validation error (``invalid_input``, the fields at fault), one of Werkzeug's
(an unknown route, a wrong method with its ``Allow`` header, a body too large),
or a bug (logged with its traceback, answered ``internal``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from pydantic import ValidationError
from waitress.server import create_server
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound

from p2p_offers import logs
from p2p_offers.node import errors
from p2p_offers.node.config import MIN_OFFER_TTL_S, NodeConfig
from p2p_offers.node.http.event_stream import events_api
from p2p_offers.node.http.exchange_routes import exchange
from p2p_offers.node.http.offer_routes import public
from p2p_offers.node.http.openapi import openapi
from p2p_offers.node.http.page import page
from p2p_offers.node.http.peer_routes import peer
from p2p_offers.node.http.registry import EXTENSION, Api, invalid_input
from p2p_offers.node.http.rpc import start_rpc
from p2p_offers.node.http.status import status_of
from p2p_offers.node.http.waitress_logs import quiet_client_failures
from p2p_offers.node.metrics import CONTENT_TYPE as METRICS_TYPE

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024

meta = Api("meta")
APIS = [public, peer, exchange, events_api, meta]
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "offer_id": {"type": "string"},
    "order_id": {"type": "string"},
    "bid_id": {"type": "string"},
    "owner": {"type": "string", "description": "a feed owner's public key (hex)"},
}
DESCRIPTION = (
    "A node of the p2p-offers USD/BTC exchange. Errors are always "
    '{"error": {"code", "message", "details"?}} (docs/errors.md); details is an object. '
    f"Offers live ttl_s seconds between refreshes (at least {MIN_OFFER_TTL_S}). "
    "One owner never crosses the book: an offer (POST /offers, a new price by PATCH, the rest "
    "of a GTC order) that would cross the same node's own resting offers is refused 409 "
    'self_cross, naming those offers in details.offers, unless the request says "stp": '
    '"cancel_resting", in which case the crossing own offers are cancelled first.'
)


@meta.route("GET", "/openapi.json", summary="This document")
def openapi_document(node: Node) -> dict[str, Any]:
    auth = bool(node.config.api_token)
    document = openapi(
        APIS, "p2p-offers node", "1", auth=auth, path_params=PATH_PARAMS, description=DESCRIPTION
    )
    ok = document["paths"]["/metrics"]["get"]["responses"]["200"]
    ok["content"] = {"text/plain": {"schema": {"type": "string"}}}  # Prometheus' text format
    return document


@meta.route("GET", "/metrics", summary="Counts and latencies in Prometheus' text format")
def metrics(node: Node) -> Response:
    return Response(node.metrics.render(), content_type=METRICS_TYPE)


def create_app(config: NodeConfig, node: Node | None = None) -> Flask:
    if node is None:
        from p2p_offers.node.runtime import Node

        node = Node(config)
    app = Flask("p2p_offers.node", static_folder=None)  # the page serves its own (page.py)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = node
    _register_errors(app)
    _register_request_ids(app)
    for api in APIS:
        app.register_blueprint(api.blueprint)
    app.register_blueprint(page)  # the web page at / (not part of the API document)
    return app


def node_of(app: Flask) -> Node:
    node: Node = app.extensions[EXTENSION]
    return node


def error_response(error: errors.DomainError) -> tuple[Response, int]:
    resp = jsonify(error.body())
    if isinstance(error, errors.MethodNotAllowed):
        resp.headers["Allow"] = ", ".join(error.allowed)
    return resp, status_of(error)


def _register_errors(app: Flask) -> None:
    @app.errorhandler(errors.DomainError)
    def _domain(exc: errors.DomainError) -> tuple[Response, int]:
        return error_response(exc)

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> tuple[Response, int]:
        return error_response(invalid_input(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return error_response(_from_werkzeug(exc))

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(errors.Internal("internal error; see the node's log"))


def _register_request_ids(app: Flask) -> None:
    """Each request's id (the client's ``X-Request-Id`` if well formed, else a new one) is
    on every log line it causes and in its answer's ``X-Request-Id`` (docs/logging.md)."""

    @app.before_request
    def _start() -> None:
        g.request_id_token = logs.REQUEST_ID.set(logs.request_id(request.headers.get(logs.HEADER)))
        g.started = time.perf_counter()

    @app.after_request
    def _answer(response: Response) -> Response:
        response.headers[logs.HEADER] = logs.REQUEST_ID.get() or ""
        if log.isEnabledFor(logging.DEBUG):
            ms = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
            log.debug("%s %s %d %.1f ms", request.method, request.path, response.status_code, ms)
        return response

    @app.teardown_request
    def _end(exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:  # a waitress thread serves many requests: none keeps an id
            logs.REQUEST_ID.reset(token)


def _from_werkzeug(exc: HTTPException) -> errors.DomainError:
    where = f"{request.method} {request.path}"
    if isinstance(exc, WerkzeugNotFound):
        return errors.NotFound(f"no such endpoint: {where}", {"path": request.path})
    if isinstance(exc, WerkzeugMethodNotAllowed):
        allowed = sorted(exc.valid_methods or [])
        return errors.MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}",
            {"allowed": allowed},
        )
    if isinstance(exc, RequestEntityTooLarge):
        return errors.BodyTooLarge(f"the body is larger than {MAX_BODY} bytes")
    if exc.code is not None and exc.code < 500:
        return errors.InvalidInput(f"the request cannot be read: {exc.name.lower()} ({where})")
    log.error("HTTP error %s on %s", exc.code, where)
    return errors.Internal("internal error; see the node's log")


def serve(config: NodeConfig) -> int:
    app = create_app(config)
    node = node_of(app)
    server = create_server(
        app,
        host=config.host,
        port=config.port,
        threads=config.threads,
        connection_limit=1000,
        # read on while a request runs, so a client that hangs up on GET /events is seen at once
        channel_request_lookahead=1,
        asyncore_use_poll=True,
        ident="p2p-offers",
    )

    def stop(signum: int, frame: object) -> None:
        node.events.close()  # end the event streams now: waitress waits for running threads
        raise SystemExit(0)  # waitress's run() catches it and closes its sockets

    quiet_client_failures(node.edge_counts)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = threading.Event()
    rpc = None
    try:
        rpc = start_rpc(app, node, APIS, MAX_BODY, started)
        node.start()
        started.set()
        log.info("serving on http://%s:%d", config.host, config.port)
        log.info("Grenache RPC on %s:%d", config.host, config.grenache_port)
        server.run()
    finally:
        if rpc is not None:
            rpc.stop()
        node.stop()
    return 0
