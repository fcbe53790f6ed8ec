"""How a request frame reaches a server: the seam between the RPC client and the network.

A transport posts encoded bytes to ``host:port`` and returns the reply's status
and body, or raises ``NotDelivered`` (no connection was made) or
``MaybeDelivered`` (sent, but the answer was lost). Everything Grenache-specific
(frames, gzip, rids) is the client's; a transport only carries bytes.

``HttpTransport`` is the real one: one urllib3 pool of keep-alive connections
per address (reconnecting costs more than a small request), no proxy lookups,
no retries (a POST that may have been delivered is the caller's to judge).
``MockTransport`` hands the bytes to an in-process server's ``respond``, for
tests that want the whole wire without sockets.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

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
    def __init__(self, pool_per_host: int = 16, max_hosts: int = 256) -> None:
        # block=False: a burst beyond the pool opens extra connections instead of waiting
        self._pool = urllib3.PoolManager(
            num_pools=max_hosts, maxsize=pool_per_host, block=False, retries=False
        )

    def post(self, address: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Reply:
        try:
            resp = self._pool.request(
                "POST",
                f"http://{address}/",
                body=body,
                headers=dict(headers),
                timeout=urllib3.Timeout(connect=min(timeout, 3.0), read=timeout),
                retries=False,
                redirect=False,
            )
        except MaxRetryError as exc:  # what retries=False still wraps some failures in
            raise _classify(address, exc.reason or exc) from None
        except HTTPError as exc:
            raise _classify(address, exc) from None
        except OSError as exc:
            raise MaybeDelivered(f"{address}: {exc}") from None
        return resp.status, resp.data

    def close(self) -> None:
        self._pool.clear()


def _classify(address: str, exc: BaseException) -> Exception:
    if isinstance(exc, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError):
        return NotDelivered(f"{address}: {exc}")
    if isinstance(exc, ReadTimeoutError):
        return MaybeDelivered(f"ERR_TIMEOUT: {address} did not answer in time")
    if isinstance(exc, ProtocolError):
        return MaybeDelivered(f"{address}: connection lost: {exc}")
    return MaybeDelivered(f"{address}: {exc}")


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
