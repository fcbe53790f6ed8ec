"""The body and route of ``GET /events``: one client's Server-Sent Events stream.

The events themselves, their ring and the clients' queues are ``events.EventHub``.

A stream holds one of waitress's threads for as long as it is open, so the
number of streams is bounded (``events_clients``, at most half the threads;
more get a JSON 503 ``too_many_clients``) and every stream ends when its
client goes: a keepalive comment every ``events_keepalive_s`` finds a closed
socket. waitress buffers what the client has not read without limit up to
16 MiB and then blocks the writing thread; a client with more than
``events_max_unsent`` bytes unread is dropped instead, so a client that stops
reading costs neither a thread nor memory for long.
"""

from __future__ import annotations

import logging
import queue
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flask import Response, request
from pydantic import Field

from p2p_offers.node import errors
from p2p_offers.node.http.events import Event, EventHub, Subscription, control
from p2p_offers.node.http.field_types import Strict
from p2p_offers.node.http.registry import Api

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node

log = logging.getLogger(__name__)

BATCH = 64  # events written to a client at once
RETRY_MS = 2000  # what the stream tells EventSource to wait before reconnecting
MIN_SEND_BUFFER, MAX_SEND_BUFFER = 4096, 64 * 1024  # an event stream's socket send buffer
POLL_S = 0.5  # how often an idle stream asks waitress whether its client is still there


def stream(
    hub: EventHub,
    sub: Subscription,
    head: bytes,
    backlog: list[Event],
    keepalive_s: float,
    max_unsent: int,
    environ: Mapping[str, Any],
) -> Iterator[bytes]:
    """The body of one client's response: ``head``, the replay, then live events."""
    unsent = _unsent_probe(environ, max_unsent)
    gone = environ.get("waitress.client_disconnected")
    yield head
    for i in range(0, len(backlog), BATCH):
        yield _frames(backlog[i : i + BATCH])
    quiet_since = time.monotonic()
    while True:
        if sub.dropped is not None:
            yield control("dropped", {"reason": sub.dropped})
            return
        if unsent is not None and unsent() > max_unsent:
            hub.drop(sub, "slow")  # writing more would only grow waitress's buffer
            return
        try:
            event = sub.queue.get(timeout=min(POLL_S, keepalive_s))
        except queue.Empty:
            if callable(gone) and gone():
                return  # the client went: its slot is free at once, not at the next write
            if time.monotonic() - quiet_since >= keepalive_s:
                quiet_since = time.monotonic()
                yield b": keepalive\n\n"
            continue
        quiet_since = time.monotonic()
        batch: list[Event] = []
        while event is not None:
            batch.append(event)
            if len(batch) >= BATCH:
                break
            try:
                event = sub.queue.get_nowait()
            except queue.Empty:
                break
        if batch:
            yield _frames(batch)
        if event is None:
            return  # the node is stopping


def _frames(events: list[Event]) -> bytes:
    out = []
    for event in events:
        try:
            out.append(event.frame())
        except Exception:  # a bug in a view must not end every client's stream
            log.exception("rendering %s event %d failed", event.type, event.id)
    return b"".join(out)


def _unsent_probe(environ: Mapping[str, Any], max_unsent: int) -> Callable[[], int] | None:
    """How many bytes waitress holds for this client, not yet taken by its socket.

    waitress tells an application nothing of its output buffer; its channel,
    behind the ``waitress.client_disconnected`` hook it puts in the environ,
    knows. The socket's own send buffer is fixed at about ``max_unsent`` too
    (Linux grows a loopback connection's to 4 MiB otherwise), so what a client
    that stopped reading can pile up is bounded on both sides. Under another
    server (Flask's test client) there is no probe and the bounded queue alone
    limits a slow client.
    """
    channel = getattr(environ.get("waitress.client_disconnected"), "__self__", None)
    if channel is None or not hasattr(channel, "total_outbufs_len"):
        return None
    try:
        size = max(MIN_SEND_BUFFER, min(MAX_SEND_BUFFER, max_unsent))
        channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    except (AttributeError, OSError) as exc:
        log.debug("cannot size an event stream's send buffer: %s", exc)
    return lambda: int(channel.total_outbufs_len)


# -- the route ------------------------------------------------------------------------------------

events_api = Api("events")

_TYPE = "(?:book|fill|trade|bid)"


class EventsQuery(Strict):
    last_event_id: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="resume after this event id (the Last-Event-ID header does the same)",
    )
    types: str | None = Field(
        None,
        pattern=f"^{_TYPE}(?:,{_TYPE})*$",
        description="comma-separated event types to receive (book, fill, trade, bid); default all",
    )


@events_api.route(
    "GET",
    "/events",
    summary="Server-Sent Events: book changes, our fills, trades, bids on manual offers "
    "(docs/events.md); "
    "resume with Last-Event-ID",
    query=EventsQuery,
    raises=(errors.TooManyClients,),
    media="text/event-stream",
)
def events(node: Node, query: EventsQuery) -> Response:
    after = query.last_event_id if query.last_event_id is not None else _header_id()
    types = frozenset(query.types.split(",")) if query.types else None
    hub = node.events
    sub, backlog, reset, last = hub.subscribe(after, types)
    try:
        head = f"retry: {RETRY_MS}\n\n".encode() + control(
            "hello", {"client_id": node.client_id, "last_id": last, "resumed": after is not None}
        )
        if reset is not None:
            head += control("reset", {"reason": reset, "after": after, "last_id": last})
        body = stream(
            hub,
            sub,
            head,
            backlog,
            node.config.events_keepalive_s,
            node.config.events_max_unsent,
            request.environ,
        )
        resp = Response(body, mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer it
        resp.call_on_close(lambda: hub.release(sub))
    except BaseException:
        hub.release(sub)
        raise
    return resp


def _header_id() -> int | None:
    text = request.headers.get("Last-Event-ID")
    if text is None or not text.strip():
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 19:
        raise errors.InvalidInput.fields([("Last-Event-ID", "must be an event id (an integer)")])
    return int(text)
