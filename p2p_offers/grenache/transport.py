"""How a request frame reaches a server: the seam between the RPC client and the network.

A transport posts encoded bytes to ``host:port`` and returns the reply's status
and body, or raises ``NotDelivered`` (no connection was made) or
``MaybeDelivered`` (sent, but the answer was lost). Everything Grenache-specific
(frames, gzip, rids) is the client's; a transport only carries bytes.

``HttpTransport`` is the real one: a few keep-alive connections per address
(reconnecting costs more than a small request), no proxy lookups, no retries
(a POST that may have been delivered is the caller's to judge).
``MockTransport`` hands the bytes to an in-process server's ``respond``, for
tests that want the whole wire without sockets.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

from p2p_offers.grenache.errors import MaybeDelivered, NotDelivered

Reply = tuple[int, bytes]  # HTTP status, body
Responder = Callable[[bytes, Mapping[str, str]], tuple[int, bytes, dict[str, str]]]


class BaseTransport(ABC):
    @abstractmethod
    def post(self, address: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        """POST ``body`` to ``http://address/``; (status, body) or a TransportError."""

    def close(self) -> None:  # noqa: B027 - most transports hold nothing
        """Release pooled connections."""


class HttpTransport(BaseTransport):
    """Keep-alive HTTP/1.1 over ``http.client``, a few idle connections kept per address.

    Measured against urllib3 on this wire (``bench/bench_rpc.py``, issue 7): urllib3
    sends headers and body in two writes and spends about twice the CPU per call;
    ``http.client`` with a bytes body sends one. A pooled connection is reused only
    if it has been idle less than ``max_idle_s`` (below Node's 5 s keep-alive) and the
    server has not closed it; a call on a reused connection that fails is
    ``MaybeDelivered`` like any other (never retried here).
    """

    def __init__(self, pool_per_host: int = 16, max_idle_s: float = 4.0) -> None:
        self.pool_per_host = pool_per_host
        self.max_idle_s = max_idle_s
        self._idle: dict[str, list[tuple[float, http.client.HTTPConnection]]] = {}
        self._lock = threading.Lock()

    def post(self, address: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        conn = self._take(address)
        if conn is None:
            conn = _connect(address, timeout)
        else:
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", "/", body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError:
            conn.close()
            raise MaybeDelivered(f"ERR_TIMEOUT: {address} did not answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise MaybeDelivered(f"{address}: connection lost: {exc!r}") from None
        if resp.will_close:
            conn.close()
        else:
            self._give(address, conn)
        return resp.status, data

    def _take(self, address: str) -> http.client.HTTPConnection | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(address)
            while idle:
                since, conn = idle.pop()
                if now - since < self.max_idle_s and not _closed_by_peer(conn):
                    return conn
                conn.close()
        return None

    def _give(self, address: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(address, [])
            if len(idle) < self.pool_per_host:
                idle.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for _, conn in conns:
                conn.close()


def _connect(address: str, timeout: float) -> http.client.HTTPConnection:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise NotDelivered(f"{address}: not host:port")
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=min(timeout, 3.0))
    try:
        conn.connect()
    except OSError as exc:  # refused, unreachable, connect timeout: nothing was sent
        conn.close()
        raise NotDelivered(f"{address}: {exc}") from None
    assert conn.sock is not None
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock.settimeout(timeout)
    return conn


def _closed_by_peer(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection is readable only if the server closed it (or broke it)."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class MockTransport(BaseTransport):
    """Servers in this process by address; an unknown address is refused like a closed port."""

    def __init__(self) -> None:
        self._servers: dict[str, Responder] = {}
        self._lock = threading.Lock()
        self.sent: list[tuple[str, bytes]] = []  # every frame posted, for tests to inspect

    def attach(self, address: str, respond: Responder) -> None:
        with self._lock:
            self._servers[address] = respond

    def detach(self, address: str) -> None:
        with self._lock:
            self._servers.pop(address, None)

    def post(self, address: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        with self._lock:
            respond = self._servers.get(address)
            self.sent.append((address, body))
        if respond is None:
            raise NotDelivered(f"{address}: connection refused")
        status, reply, _ = respond(body, headers)
        return status, reply
