"""``PeerRPCServer``: answers Grenache RPC requests for the services it handles.

Handlers are plain functions ``handler(payload) -> data`` registered by service
key; one may raise ``ServiceError(message)`` to reply that ``err``. Any other
exception is a bug: logged with its traceback, answered ``ERR_INTERNAL`` without
one. ``respond`` turns request bytes into reply bytes and is the whole protocol;
the HTTP server around it only moves bytes, so ``MockTransport`` can call it
directly and tests see exactly what a socket would carry.

The HTTP side is aiohttp's low-level server on its own asyncio loop in one
thread. The loop reads and decodes a frame (bounded, so cheap) and runs its
key's handler on a thread pool (handlers may block: a bid waits for another
node), so a slow handler never stalls the loop; a key may have a pool of its
own, so blocking handlers of one key cannot take every thread from another.
``announce`` keeps the services announced through a ``Link`` while listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aiohttp import web

from p2p_offers.grenache import wire
from p2p_offers.grenache.errors import ServiceError

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
Answer = tuple[int, bytes, dict[str, str]]  # HTTP status, body, headers
_NO_ANSWER: Answer = (0, b"", {})


class Announcer(Protocol):
    """What the server needs of a Link (``p2p_offers.link.Link`` is one)."""

    def announce(self, name: str, port: int, host: str | None = None) -> int: ...

    def start_announcing(
        self, name: str, port: int, host: str | None = None, interval: float = 60.0
    ) -> None: ...

    def stop_announcing(self, name: str | None = None) -> None: ...


class Dispatcher:
    """Services by key, and the bytes-in, bytes-out protocol around them."""

    def __init__(
        self, max_request: int = wire.MAX_REQUEST, parse_float: Callable[[str], Any] | None = None
    ) -> None:
        self.max_request = max_request
        self.parse_float = parse_float
        self._handlers: dict[str, Handler] = {}
        self.counts = {"requests": 0, "bad_frames": 0, "unknown_service": 0, "errors": 0}

    def handle(self, key: str, handler: Handler) -> None:
        self._handlers[key] = handler

    def unhandle(self, key: str) -> None:
        self._handlers.pop(key, None)

    @property
    def keys(self) -> list[str]:
        return list(self._handlers)

    def respond(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """(HTTP status, reply body, reply headers) for a request body: never raises."""
        req, answer = self.prepare(body, headers)
        return answer if req is None else self.answer(req)

    def prepare(
        self, body: bytes, headers: Mapping[str, str]
    ) -> tuple[wire.Request | None, Answer]:
        """The request to ``answer``, or (None, the error answer) if it cannot be answered."""
        self.counts["requests"] += 1
        try:
            req = wire.decode_request(body, headers, self.max_request, self.parse_float)
        except wire.FrameError as exc:
            self.counts["bad_frames"] += 1
            reply = wire.encode_reply(exc.rid, exc.err, None, exc.compress)
            return None, (exc.status, reply, _hdr(exc.compress))
        if req.key not in self._handlers:
            self.counts["unknown_service"] += 1
            missing = f"ERR_NOT_FOUND: no service {req.key!r} here"
            reply = wire.encode_reply(req.rid, missing, None, req.compress)
            return None, (200, reply, _hdr(req.compress))
        return req, _NO_ANSWER

    def answer(self, req: wire.Request) -> Answer:
        """Run the key's handler (it may block) and encode its reply: never raises."""
        err: str | None = None
        data: Any = None
        try:
            data = self._handlers[req.key](req.payload)
        except ServiceError as exc:
            err, data = exc.message, exc.data
        except Exception:
            log.exception("handler of %s failed", req.key)
            err = "ERR_INTERNAL: internal error; see the server's log"
        if err is not None:
            self.counts["errors"] += 1
        try:
            reply = wire.encode_reply(req.rid, err, data, req.compress)
        except (TypeError, ValueError):
            log.exception("reply of %s is not JSON", req.key)
            reply = wire.encode_reply(
                req.rid, "ERR_INTERNAL: reply not serializable", None, req.compress
            )
        return 200, reply, _hdr(req.compress)


def _hdr(compress: bool) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if compress:
        headers[wire.COMPRESS_HEADER] = "gzip"
    return headers


class PeerRPCServer:
    def __init__(
        self,
        *,
        workers: int = 16,
        max_request: int = wire.MAX_REQUEST,
        parse_float: Callable[[str], Any] | None = None,
    ) -> None:
        self.dispatcher = Dispatcher(max_request, parse_float)
        self.port: int | None = None
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="rpc-handler")
        self._pools: dict[str, ThreadPoolExecutor] = {}  # keys with a pool of their own
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._announced: list[str] = []
        self._link: Announcer | None = None

    def handle(self, key: str, handler: Handler, workers: int | None = None) -> None:
        """Serve ``key``; with ``workers``, on a pool of its own: handlers of other keys that
        block (waiting on another server, perhaps on this key of ours) cannot starve it."""
        self.dispatcher.handle(key, handler)
        if workers is not None:
            self._pools[key] = ThreadPoolExecutor(workers, thread_name_prefix=f"rpc-{key}")

    # -- listening -----------------------------------------------------------------------

    def listen(self, port: int = 0, host: str = "0.0.0.0") -> int:
        """Serve on ``host:port`` (0: any free port) from a thread; the port bound."""
        if self._thread is not None:
            raise RuntimeError("already listening")
        started = threading.Event()
        failure: list[BaseException] = []
        bound: list[int] = []

        def run() -> None:
            loop = _new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                bound.append(loop.run_until_complete(self._start(host, port)))
            except BaseException as exc:  # reported to listen()'s caller
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._cleanup())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"rpc-server-{port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread = None
            raise failure[0]
        self.port = bound[0]
        return self.port

    async def _start(self, host: str, port: int) -> int:
        # no access log: a line per request costs more CPU than a small request itself
        server = web.Server(self._on_request, handler_cancellation=False, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        self._runner = runner
        sockets = runner.addresses
        return int(sockets[0][1]) if sockets else port

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_request(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST":
            body = wire.encode_reply(
                None,
                f"ERR_METHOD_NOT_ALLOWED: Grenache RPC is POST /, not {request.method}",
                None,
                False,
            )
            return web.Response(status=405, body=body, headers={"Allow": "POST", **_hdr(False)})
        limit = self.dispatcher.max_request
        if (request.content_length or 0) > limit:
            body = wire.encode_reply(
                None, f"ERR_BODY_TOO_LARGE: the body is larger than {limit} bytes", None, False
            )
            return web.Response(status=413, body=body, headers=_hdr(False))
        raw = await _read_bounded(request, limit)
        loop = asyncio.get_running_loop()
        headers = {wire.COMPRESS_HEADER: request.headers.get(wire.COMPRESS_HEADER, "")}
        # decoded here (bounded by max_request), so the key picks the pool
        req, answer = self.dispatcher.prepare(raw, headers)
        if req is not None:
            pool = self._pools.get(req.key, self._pool)
            answer = await loop.run_in_executor(pool, self.dispatcher.answer, req)
        status, reply, reply_headers = answer
        return web.Response(status=status, body=reply, headers=reply_headers)

    # -- announcing ----------------------------------------------------------------------

    def announce(
        self,
        link: Announcer,
        keys: list[str] | None = None,
        interval: float = 30.0,
        host: str | None = None,
    ) -> None:
        """Announce ``keys`` (default: every handled key) on our port now, then every
        ``interval`` s until ``stop``. The first announcement is made before this returns,
        so whoever looks up right after (a peer told we are ready) finds us."""
        if self.port is None:
            raise RuntimeError("listen first, then announce")
        self._link = link
        for key in keys if keys is not None else self.dispatcher.keys:
            try:
                link.announce(key, self.port, host)
            except Exception as exc:  # the periodic announcer retries; a grape may be late
                log.warning("announce %s failed (will retry): %s", key, exc)
            link.start_announcing(key, self.port, host, interval=interval)
            self._announced.append(key)

    def stop(self) -> None:
        if self._link is not None:
            for key in self._announced:
                self._link.stop_announcing(key)
            self._announced.clear()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
        self._thread = self._loop = None
        for pool in [self._pool, *self._pools.values()]:
            pool.shutdown(wait=False, cancel_futures=True)


async def _read_bounded(request: web.BaseRequest, limit: int) -> bytes:
    """The body, cut at ``limit + 1`` bytes: the dispatcher refuses it as too large."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.readany()
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _new_loop() -> asyncio.AbstractEventLoop:
    with contextlib.suppress(ImportError):
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return loop
    return asyncio.new_event_loop()
