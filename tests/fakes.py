"""In-memory stand-ins for the DHT and the peer transport, so node unit tests need no grape.

They keep the rules of the real parts where the node depends on them: the
DHT stores a mutable record only as ``RecordStorage`` would (signature,
target, a seq higher than held, ``cas``), and the transport sends every
action through the receiving node's real Flask app, mapped as
``HttpTransport`` maps it. The real-process tests remain the truth; these
make the unit tests fast and independent of a grape.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from flask import Flask

from p2p_offers import records
from p2p_offers.link import ERROR_NAMES, GrapeError
from p2p_offers.node.network.transport import NotDelivered, decode, route
from p2p_offers.records import Record, RecordError


class MemoryDht:
    """One in-memory DHT shared by any number of nodes: records, announcements, lookups."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: dict[str, Record] = {}
        self.services: dict[str, list[str]] = {}
        self.puts: list[tuple[str, int | None]] = []
        self.down = False  # every call fails as an unreachable grape would

    def _check(self) -> None:
        if self.down:
            raise GrapeError("ERR_GRAPE_UNREACHABLE", "the in-memory DHT is down")

    def announce(self, name: str, port: int, host: str | None = None) -> int:
        self._check()
        address = f"{host or '127.0.0.1'}:{port}"
        with self._lock:
            held = self.services.setdefault(name, [])
            if address not in held:
                held.append(address)
        return 1

    def start_announcing(
        self, name: str, port: int, host: str | None = None, interval: float = 60.0
    ) -> None:
        self.announce(name, port, host)

    def stop_announcing(self, name: str | None = None) -> None:
        pass

    def lookup(self, name: str) -> list[str]:
        self._check()
        with self._lock:
            return list(self.services.get(name, []))

    def put_record(self, record: Record, cas: int | None = None) -> str:
        """Store ``record`` under BEP44's rules, or raise the grape's error for the refusal."""
        self._check()
        with self._lock:
            self.puts.append((record.hash, cas))
            held = self.records.get(record.hash)
            try:
                record.verify()
                records.check_update(held, record, cas)
            except RecordError as exc:
                raise GrapeError(ERROR_NAMES.get(exc.code, "ERR_GRAPE_PAYLOAD_INVALID")) from None
            self.records[record.hash] = record
        return record.hash

    def get_record(self, hash_: str) -> Record | None:
        self._check()
        with self._lock:
            return self.records.get(hash_)

    def status(self) -> dict[str, Any]:
        up = not self.down
        return {"grape": "memory", "grapes": ["memory"], "announced": up, "last_error": None}

    def close(self) -> None:
        pass


class AppTransport:
    """Peer calls delivered in process to other nodes' Flask apps, by address.

    ``intercept(address, action, payload)`` may raise (a transport error, to
    play a lost reply) or return None to let the call through.
    """

    def __init__(self) -> None:
        self.apps: dict[str, Flask] = {}
        self.calls: list[tuple[str, str]] = []
        self.intercept: Callable[[str, str, Any], None] | None = None

    def add(self, address: str, app: Flask) -> None:
        self.apps[address] = app

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        self.calls.append((address, action))
        if self.intercept is not None:
            self.intercept(address, action, payload)
        app = self.apps.get(address)
        if app is None:
            raise NotDelivered(f"nothing listens at {address}")
        method, path, query, body = route(action, payload)
        data = body if isinstance(body, bytes) else json.dumps(body) if body is not None else None
        resp = app.test_client().open(
            path, method=method, query_string=query, data=data, content_type="application/json"
        )
        return decode(resp.status_code, resp.get_json(silent=True))

    def close(self) -> None:
        pass


class PlannedSweeper:
    """Stands in for ``Sweeper`` in uncrossing tests: plans ``reserve`` sats on one maker,
    then ``take`` runs ``during(on_fill)`` (which may fill, change the offer or raise) and
    reports nothing more taken."""

    def __init__(self, reserve: int, during: Callable[[Any], None]) -> None:
        self.reserve, self.during = reserve, during

    def usable(self, entry: object) -> bool:
        return True

    def plan(self, book: object, side: str, limit: int, amount: int, eligible: Any = None) -> Any:
        return [(SimpleNamespace(id="x", owner="y", priority=0), self.reserve)]

    def take(
        self, side: str, limit: int, amount: int, eligible: Any = None, on_fill: Any = None,
        on_doubt: Any = None, for_offer: Any = None,
    ) -> tuple[list[Any], int]:  # fmt: skip
        self.during(on_fill)
        return [], amount
