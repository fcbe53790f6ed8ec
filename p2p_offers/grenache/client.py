"""``PeerRPCClient``: Grenache RPC requests to whoever announces a service.

Addresses come from ``link.lookup(service)`` through a cache that behaves like
grenache-nodejs-link's: an LRU of at most 2500 services, each entry kept 10 s,
identical lookups in flight at once share one grape request, and a failing
grape is asked up to 3 times. Unlike Node's link, an empty answer is not cached
(a service that is announced a moment later is found on the next call), and an
address that refused a connection drops its service's entry, so the next call
looks up again instead of dialing a dead peer for 10 s.

``request`` goes round-robin over the addresses and fails over to the next one
only while no attempt may have been delivered: a request that timed out or lost
its connection raises ``MaybeDelivered`` at once, since repeating it elsewhere
could do it twice. ``map`` sends to every address (or ``limit`` random ones) in
parallel and returns the data in address order, like Node's ``map``; with
``settle=True`` it returns each address's result or exception instead of
raising the first failure.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from p2p_offers.grenache import wire
from p2p_offers.grenache.errors import (
    BadReply,
    GrenacheError,
    LookupEmpty,
    LookupFailed,
    MaybeDelivered,
    NotDelivered,
    RemoteError,
)
from p2p_offers.grenache.transport import BaseTransport, HttpTransport

LOOKUP_CACHE_SIZE = 2500  # grenache-nodejs-link's lruMaxSizeLookup
LOOKUP_CACHE_AGE_S = 10.0  # ... and lruMaxAgeLookup
LOOKUP_TRIES = 3  # ... and lookup's retry


class Lookup(Protocol):
    """What the client needs of a Link (``p2p_offers.link.Link`` is one)."""

    def lookup(self, name: str) -> list[str]: ...


class LookupCache:
    def __init__(
        self,
        link: Lookup,
        size: int = LOOKUP_CACHE_SIZE,
        max_age_s: float = LOOKUP_CACHE_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.link = link
        self.size = size
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, list[str]]] = OrderedDict()
        self._inflight: dict[str, Future[list[str]]] = {}
        self.grape_lookups = 0  # requests that reached the link (for tests and /health)

    def get(self, service: str) -> list[str]:
        """The addresses announcing ``service``; ``LookupEmpty`` if none, ``LookupFailed``."""
        with self._lock:
            entry = self._entries.get(service)
            if entry is not None and self.clock() - entry[0] < self.max_age_s:
                self._entries.move_to_end(service)
                return entry[1]
            pending = self._inflight.get(service)
            owner = pending is None
            if pending is None:
                pending = self._inflight[service] = Future()
        if not owner:
            return pending.result()
        try:
            found = self._ask(service)
        except BaseException as exc:
            with self._lock:
                del self._inflight[service]
            pending.set_exception(exc)
            raise
        with self._lock:
            del self._inflight[service]
            if found:
                self._entries[service] = (self.clock(), found)
                self._entries.move_to_end(service)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        pending.set_result(found)
        if not found:
            raise LookupEmpty(f"ERR_GRAPE_LOOKUP_EMPTY: nobody announces {service!r}")
        return found

    def _ask(self, service: str) -> list[str]:
        last: Exception | None = None
        for _ in range(LOOKUP_TRIES):
            self.grape_lookups += 1
            try:
                return list(dict.fromkeys(self.link.lookup(service)))
            except Exception as exc:  # a Link raises its own error type; all mean "failed"
                last = exc
        raise LookupFailed(f"lookup {service!r} failed: {last}")

    def invalidate(self, service: str) -> None:
        with self._lock:
            self._entries.pop(service, None)


def call(
    transport: BaseTransport,
    address: str,
    service: str,
    payload: Any,
    timeout: float,
    compress: bool = False,
    max_reply: int = wire.MAX_REPLY,
) -> Any:
    """One request to ``address`` over ``transport``: its data, or ``RemoteError`` for its err.

    ``payload`` may be ``bytes``: JSON already encoded, sent as is.
    """
    rid = str(uuid.uuid4())
    body, headers = wire.encode_request(rid, service, payload, compress)
    _, reply = transport.post(address, body, headers, timeout)
    try:
        got, err, data = wire.decode_reply(reply, compress, max_reply)
    except wire.ReplyError as exc:
        raise BadReply(f"{address}: {exc}") from None
    if err is not None:
        raise RemoteError(err, address, data)
    if got != rid:
        raise BadReply(f"{address}: reply for rid {got!r}, not {rid!r}")
    return data


class PeerRPCClient:
    def __init__(
        self,
        link: Lookup,
        transport: BaseTransport | None = None,
        *,
        timeout: float = 10.0,
        compress: bool = False,
        max_reply: int = wire.MAX_REPLY,
        map_workers: int = 16,
        cache: LookupCache | None = None,
    ) -> None:
        self.transport = transport or HttpTransport()
        self.cache = cache or LookupCache(link)
        self.timeout = timeout
        self.compress = compress
        self.max_reply = max_reply
        self._turns: dict[str, itertools.count[int]] = {}
        self._map_pool = ThreadPoolExecutor(map_workers, thread_name_prefix="rpc-map")

    def lookup(self, service: str) -> list[str]:
        return self.cache.get(service)

    def request(
        self, service: str, payload: Any, timeout: float | None = None, compress: bool | None = None
    ) -> Any:
        """The ``data`` of one server's reply; ``RemoteError`` for its ``err``."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        dests = self.lookup(service)
        turn = next(self._turns.setdefault(service, itertools.count()))
        failed: list[str] = []
        for i in range(len(dests)):
            address = dests[(turn + i) % len(dests)]
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                return self.request_to(address, service, payload, left, compress)
            except NotDelivered as exc:
                failed.append(str(exc))
        self.cache.invalidate(service)
        if not failed:
            raise MaybeDelivered(f"ERR_TIMEOUT: no answer for {service!r} in time")
        raise NotDelivered(f"no peer of {service!r} could be reached: {'; '.join(failed)}")

    def request_to(
        self,
        address: str,
        service: str,
        payload: Any,
        timeout: float | None = None,
        compress: bool | None = None,
    ) -> Any:
        """One request to the server at ``address`` (``host:port``), no lookup."""
        return call(
            self.transport,
            address,
            service,
            payload,
            self.timeout if timeout is None else timeout,
            self.compress if compress is None else compress,
            self.max_reply,
        )

    def map(
        self,
        service: str,
        payload: Any,
        limit: int = 0,
        timeout: float | None = None,
        settle: bool = False,
    ) -> list[Any]:
        """Every announcing server's data (``limit`` > 0: that many random servers)."""
        dests = self.lookup(service)
        if limit > 0 and limit < len(dests):
            dests = random.sample(dests, limit)
        futures = [
            self._map_pool.submit(self.request_to, d, service, payload, timeout) for d in dests
        ]
        results: list[Any] = []
        for future in futures:
            try:
                results.append(future.result())
            except GrenacheError as exc:
                if not settle:
                    raise
                results.append(exc)
        return results

    def close(self) -> None:
        self._map_pool.shutdown(wait=False, cancel_futures=True)
        self.transport.close()
