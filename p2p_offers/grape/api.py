"""The Grape HTTP API (Grenache's): ``POST /<type>`` with ``{"rid", "data"}``, JSON replies.

Every request is untrusted input: each handler checks types and shapes before
anything reaches the DHT, and every refusal is a non-2xx status with a JSON
string body (``"NAME"`` or ``"NAME: detail"``, see ``link.error_body``), so a
Grenache client and our ``Link`` read errors the same way. Grenache's stock
grape answers 500 to non-JSON and can be crashed by odd payloads; here nothing
produces a 500 or stops the grape.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from p2p_offers import records
from p2p_offers.grape.config import GrapeConfig
from p2p_offers.grape.metrics import CONTENT_TYPE
from p2p_offers.grape.server import GrapeServer, NoPeersError
from p2p_offers.grape.storage import STORAGE_FULL, peer_address
from p2p_offers.link import ERROR_NAMES, error_body
from p2p_offers.records import Record, RecordError

log = logging.getLogger(__name__)

SERVER = web.AppKey("server", GrapeServer)
MAX_PAYLOAD = web.AppKey("max_payload", int)
MAX_NAME = 1024  # bytes of a service name
HASH = re.compile(r"[0-9a-fA-F]{40}")

# BEP44 refusals -> HTTP status: conflicts are 409, sizes 413, the rest malformed input.
STATUS = {
    records.CAS_MISMATCH: 409,
    records.SEQ_TOO_LOW: 409,
    records.V_TOO_BIG: 413,
    records.SALT_TOO_BIG: 413,
    STORAGE_FULL: 503,
}
NAMES = {**ERROR_NAMES, STORAGE_FULL: "ERR_GRAPE_STORAGE_FULL"}


class ApiError(Exception):
    def __init__(self, status: int, name: str, detail: str = "") -> None:
        super().__init__(name)
        self.status, self.name, self.detail = status, name, detail


def make_app(server: GrapeServer, config: GrapeConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_payload)
    app[SERVER] = server
    app[MAX_PAYLOAD] = config.max_payload
    app.router.add_route("*", "/{kind:.*}", handle)
    return app


async def handle(request: web.Request) -> web.Response:
    """One request, counted by type and outcome (``ok`` or the error name answered)."""
    kind = request.match_info["kind"]
    server = request.app[SERVER]
    if kind == "metrics" and request.method in ("GET", "HEAD"):
        return web.Response(body=server.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await _answer(request, kind)
    outcome = "ok" if response.status == 200 else _error_name(response)
    server.metrics.http(kind if kind in HANDLERS else "other", outcome, loop.time() - started)
    return response


async def _answer(request: web.Request, kind: str) -> web.Response:
    try:
        handler = HANDLERS.get(kind)
        if request.method != "POST" or handler is None:
            raise ApiError(404, "ERR_REQ_NOTFOUND", f"{request.method} {request.path}")
        data = await _read_data(request)
        return _reply(200, await handler(request, data))
    except ApiError as exc:
        return _reply(exc.status, error_body(exc.name, exc.detail))
    except RecordError as exc:
        return _reply(STATUS.get(exc.code, 400), error_body(_name(exc.code), exc.message))
    except NoPeersError as exc:
        return _reply(503, error_body("ERR_GRAPE_NO_PEERS", str(exc)))
    except Exception:  # a bug must not become a crash or a 500 for the client
        log.exception("unexpected error on %s", request.path)
        return _reply(400, error_body("ERR_GRAPE_GENERIC"))


def _error_name(response: web.Response) -> str:
    """The ``ERR_*`` name of an error reply (our own fixed set: a bounded label)."""
    text = response.text or ""
    name = text.strip('"').split(":")[0]
    return name if name.startswith("ERR_") and name.isupper() else "error"


def _reply(status: int, value: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(value), content_type="application/json")


def _name(code: int) -> str:
    return NAMES.get(code, "ERR_GRAPE_PAYLOAD_INVALID")


async def _read_data(request: web.Request) -> Any:
    limit = request.app[MAX_PAYLOAD]
    if (request.content_length or 0) > limit:
        raise ApiError(413, "ERR_GRAPE_PAYLOAD_SIZE", f"body over {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "ERR_GRAPE_PAYLOAD_SIZE", f"body over {limit} bytes") from None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "ERR_GRAPE_PAYLOAD_INVALID", "body is not JSON") from None
    if not isinstance(message, dict):
        raise ApiError(400, "ERR_GRAPE_PAYLOAD_INVALID", 'body must be {"rid", "data"}')
    return message.get("data")


def _name_key(name: object, error: str) -> bytes:
    """DHT key of a service name; ``error`` is Grenache's name for a bad one."""
    if not isinstance(name, str) or not name:
        raise ApiError(400, error, "name must be a non-empty string")
    try:
        raw = name.encode()
    except UnicodeError:
        raise ApiError(400, error, "name is not valid unicode") from None
    if len(raw) > MAX_NAME:
        raise ApiError(400, error, f"name over {MAX_NAME} bytes")
    return hashlib.sha1(raw).digest()


async def announce(request: web.Request, data: Any) -> int:
    if not isinstance(data, list) or len(data) not in (2, 3):
        raise ApiError(400, "ERR_GRAPE_ANNOUNCE", "data must be [name, port] or [name, port, host]")
    key = _name_key(data[0], "ERR_GRAPE_ANNOUNCE")
    port = data[1]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ApiError(400, "ERR_GRAPE_SERVICE_PORT", "port must be an integer in 1-65535")
    # the client's address as we see it, so a service need not run beside its grape
    host = data[2] if len(data) == 3 and data[2] is not None else request.remote
    try:
        peer = peer_address(host, port)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ApiError(400, "ERR_GRAPE_ANNOUNCE", str(exc)) from None
    return await request.app[SERVER].announce(key, peer, request.remote)


async def lookup(request: web.Request, data: Any) -> list[str]:
    return await request.app[SERVER].lookup(_name_key(data, "ERR_GRAPE_LOOKUP"))


async def put(request: web.Request, data: Any) -> str:
    if not isinstance(data, dict):
        raise ApiError(400, "ERR_GRAPE_PAYLOAD_INVALID", "put data must be an object")
    cas = data.get("cas")
    if cas is not None and (
        isinstance(cas, bool) or not isinstance(cas, int) or not 0 <= cas <= records.MAX_SEQ
    ):
        raise ApiError(400, "ERR_GRAPE_PAYLOAD_INVALID", "cas must be a sequence number")
    try:
        record = Record.from_json(data)
    except UnicodeError:
        raise ApiError(400, "ERR_GRAPE_PAYLOAD_INVALID", "v or salt is not valid unicode") from None
    await request.app[SERVER].put(record, cas if record.mutable else None)
    return record.hash


async def get(request: web.Request, data: Any) -> dict[str, Any] | None:
    hash_ = data.get("hash") if isinstance(data, dict) else data
    if not isinstance(hash_, str) or not HASH.fullmatch(hash_):
        raise ApiError(400, "ERR_GRAPE_HASH_FORMAT", "hash must be 40 hex digits")
    found = await request.app[SERVER].get_digest(bytes.fromhex(hash_))
    if found is None:
        return None
    record, node_id = found
    return {"id": node_id.hex(), **record.to_json()}


HANDLERS: dict[str, Callable[[web.Request, Any], Awaitable[Any]]] = {
    "announce": announce,
    "lookup": lookup,
    "put": put,
    "get": get,
}
