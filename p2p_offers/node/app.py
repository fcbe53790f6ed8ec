"""The node's HTTP application: ``create_app`` (Flask factory) and ``serve`` (waitress).

``create_app`` builds a node and its app but starts no thread, so tests can
drive the API with Flask's test client; ``serve`` starts the node, serves it
with waitress until SIGTERM or SIGINT, then stops announcing and flushes
publications before exiting.
"""

from __future__ import annotations

import json
import logging
import signal
from decimal import Decimal
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from waitress.server import create_server

from p2p_offers.node import errors
from p2p_offers.node.api import EXTENSION
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.routes import APIS
from p2p_offers.node.runtime import Node

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024


class JsonProvider(DefaultJSONProvider):
    """JSON numbers with a fraction become ``Decimal``, so no amount ever passes through float."""

    sort_keys = False
    compact = True

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("parse_float", Decimal)
        return json.loads(s, **kwargs)


def create_app(config: NodeConfig, node: Node | None = None) -> Flask:
    app = Flask("p2p_offers.node")
    app.json = JsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions[EXTENSION] = node or Node(config)
    errors.register(app)
    for api in APIS:
        app.register_blueprint(api.blueprint)
    return app


def node_of(app: Flask) -> Node:
    return app.extensions[EXTENSION]


def serve(config: NodeConfig) -> int:
    app = create_app(config)
    node = node_of(app)
    server = create_server(
        app,
        host=config.host,
        port=config.port,
        threads=config.threads,
        connection_limit=1000,
        asyncore_use_poll=True,
        ident="p2p-offers",
    )

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)  # waitress's run() catches it and closes its sockets

    # Queue-depth warnings fire on every burst; the backlog is expected under load and
    # logging it costs the worker threads CPU exactly when they are busiest.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        node.start()
        log.info("serving on http://%s:%d", config.host, config.port)
        server.run()
    finally:
        node.stop()
    return 0
