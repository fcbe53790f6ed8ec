"""The node's entry points (``p2p-offers node`` and tests): see ``http/app.py``."""

from p2p_offers.node.http.app import create_app, node_of, serve

__all__ = ["create_app", "node_of", "serve"]
