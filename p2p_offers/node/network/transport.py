"""How a request reaches another node, and the one translation of what can go wrong on the way.

A ``PeerTransport`` carries one action (``identify``, ``announce``, ``gossip``, ``bid``,
``bids``, ``offers``, ``feeds``, ``feed``) with a JSON payload to a node's address and
returns the decoded reply, or raises:

* ``NotDelivered``: the request surely never reached the node (no connection);
* ``MaybeDelivered``: it may have (read timeout, reset after sending): a bid so
  sent is in doubt;
* ``BadReply``: an answer that is not the protocol's;
* a ``DomainError`` (``errors.from_wire``): the node answered with an error.

``HttpTransport`` speaks the REST ``/peer/*`` endpoints; ``GrenacheTransport``
sends the same actions to a node's Grenache RPC port as ``{"action", "args"}``
(``RPC_ACTIONS``) and decodes ``err`` into the same classes, so nothing above this
module changes. Each finds peers under its own names (``services``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import requests
import urllib3
from requests.adapters import HTTPAdapter

from p2p_offers import grenache
from p2p_offers.grenache.client import call as grenache_call
from p2p_offers.node import errors


class TransportError(Exception):
    """The request got no usable answer."""


class NotDelivered(TransportError):
    """The request surely did not reach the node."""


class MaybeDelivered(TransportError):
    """The request may have reached the node; its answer was lost."""


class BadReply(TransportError):
    """The node answered something that is not the protocol."""


class PeerTransport(Protocol):
    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any: ...

    def close(self) -> None: ...


# The names each transport's peers are announced under: (every node, owner prefix).
REST_SERVICES = ("p2p_offers:rest:node", "p2p_offers:rest:owner:")
RPC_SERVICES = ("p2p_offers:node", "p2p_offers:owner:")
# The key a peer's RPC port answers node-to-node actions under (not announced: peers are
# found under RPC_SERVICES, then addressed under this key, served by a pool of its own).
PEER_SERVICE = "p2p_offers:peer"


# action -> (method, path); a path's {placeholders} come out of the payload, the rest of a
# GET's payload is its query string, a POST's is its body (bytes: already encoded JSON).
ROUTES: dict[str, tuple[str, str]] = {
    "identify": ("POST", "/peer/identify"),
    "announce": ("POST", "/peer/announce"),
    "gossip": ("POST", "/peer/gossip"),
    "bid": ("POST", "/peer/bids"),
    "bids": ("POST", "/peer/bid-batches"),
    "offers": ("GET", "/peer/offers"),
    "feeds": ("GET", "/peer/ledger"),
    "feed": ("GET", "/peer/ledger/{owner}"),
}


def route(action: str, payload: Any) -> tuple[str, str, dict[str, Any] | None, Any]:
    """(method, path, query, body) of ``action``: the one mapping of actions onto endpoints."""
    method, template = ROUTES[action]
    if method == "POST":
        return method, template, None, payload
    query = dict(payload or {})
    path = template.format_map({k: query.pop(k) for k in list(query) if "{" + k + "}" in template})
    return method, path, query, None


def decode(status: int, body: Any) -> Any:
    """A reply's payload, or the error it carries as a ``DomainError``."""
    if 200 <= status < 300:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        raise errors.from_wire(error["code"], error.get("message"), error.get("details"))
    raise BadReply(f"status {status} without an error body")


def make_session(pool: int = 64) -> requests.Session:
    """One keep-alive pool per process: reconnecting costs more than most requests.

    Environment proxy settings are ignored: peers are addressed as the DHT
    announced them, and consulting the environment on every call is a large
    part of a small request's CPU cost.
    """
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(pool_connections=16, pool_maxsize=pool))
    return session


CONNECT_S = 2.0  # at most this (and half the call's time) for a connection


class HttpTransport:
    services = REST_SERVICES

    def __init__(self, session: requests.Session | None = None) -> None:
        self.session = session or make_session()

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        """``timeout_s`` is the whole call's time: connecting (half of it at most, and at most
        ``CONNECT_S``), then waiting for the reply (the rest)."""
        method, path, query, body = route(action, payload)
        connect = min(CONNECT_S, timeout_s / 2)
        timeout = (connect, timeout_s - connect)
        kwargs: dict[str, Any] = {"params": query, "timeout": timeout}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else _json_bytes(body)
            kwargs["headers"] = {"Content-Type": "application/json"}
        try:
            resp = self.session.request(method, f"http://{address}{path}", **kwargs)
        except requests.RequestException as exc:
            if _surely_not_delivered(exc):
                raise NotDelivered(f"{action} to {address}: {exc}") from None
            raise MaybeDelivered(f"{action} to {address}: {exc}") from None
        try:
            reply = resp.json()
        except ValueError:
            raise BadReply(f"{action} to {address}: status {resp.status_code}, not JSON") from None
        return decode(resp.status_code, reply)

    def close(self) -> None:
        self.session.close()


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _surely_not_delivered(exc: requests.RequestException) -> bool:
    """True only when no connection was made, so the node cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)
    return False


# PeerTransport action -> the node's Grenache RPC action (``http/rpc.py``)
RPC_ACTIONS = {
    "identify": "peerIdentify",
    "announce": "peerAnnounce",
    "gossip": "peerGossip",
    "bid": "peerBid",
    "bids": "peerBids",
    "offers": "peerOffers",
    "feeds": "peerFeeds",
    "feed": "peerFeed",
}


class GrenacheTransport:
    """Peer calls as Grenache RPC requests under ``p2p_offers:peer`` to the peer's RPC port.

    One pool of keep-alive connections per peer (``grenache.HttpTransport``); an
    announcement batch already encoded is framed without decoding it again.
    """

    services = RPC_SERVICES

    def __init__(self, transport: grenache.BaseTransport | None = None) -> None:
        self.transport = transport or grenache.HttpTransport(pool_per_host=32)

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        name = RPC_ACTIONS[action]
        if isinstance(payload, bytes):
            body: Any = b'{"action":"' + name.encode() + b'","args":[' + payload + b"]}"
        else:
            body = {"action": name, "args": [] if payload is None else [payload]}
        try:
            return grenache_call(self.transport, address, PEER_SERVICE, body, timeout_s)
        except grenache.NotDelivered as exc:
            raise NotDelivered(f"{action} to {address}: {exc}") from None
        except grenache.MaybeDelivered as exc:
            raise MaybeDelivered(f"{action} to {address}: {exc}") from None
        except grenache.BadReply as exc:
            raise BadReply(f"{action} to {address}: {exc}") from None
        except grenache.RemoteError as exc:
            raise _remote(action, address, exc) from None

    def close(self) -> None:
        self.transport.close()


def _remote(action: str, address: str, exc: grenache.RemoteError) -> Exception:
    """The peer's error as the domain class it names (its REST error object rides along)."""
    error = exc.data.get("error") if isinstance(exc.data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return errors.from_wire(error["code"], error.get("message"), error.get("details"))
    if exc.code.startswith("ERR_"):  # a frame-level error: ERR_NOT_FOUND, ERR_INTERNAL, ...
        return errors.from_wire(exc.code.removeprefix("ERR_").lower(), exc.detail, None)
    return BadReply(f"{action} to {address}: {exc.err}")
