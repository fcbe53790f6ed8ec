"""Link: the client of a grape's HTTP API, mirroring ``grenache-nodejs-link``.

Nodes never speak UDP to the DHT themselves; everything goes through a grape
over pooled keep-alive HTTP, exactly as a Grenache service would.

A Link may be given several grapes (a list, or one string of comma-separated
URLs) so that a node outlives its grape: a request goes to the grape that last
answered; a grape that cannot be reached or answers 5xx is skipped for a while
(0.5 s, doubling per failure up to 30 s) and the request goes on to the next.
Periodic announcing backs off the same way when every grape fails (1 s doubling,
never slower than its interval), and logs once when it starts failing and once
when it recovers, never once per attempt. ``status()`` says how it stands.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import requests
from nacl.signing import SigningKey
from requests.adapters import HTTPAdapter

from p2p_offers import records
from p2p_offers.records import Record, RecordError

log = logging.getLogger(__name__)

# Error names a grape puts in its JSON string body; BEP44 codes map onto these.
ERROR_NAMES = {
    records.CAS_MISMATCH: "ERR_CAS_MISMATCH",
    records.SEQ_TOO_LOW: "ERR_SEQ_TOO_LOW",
    records.V_TOO_BIG: "ERR_VALUE_TOO_BIG",
    records.INVALID_SIGNATURE: "ERR_INVALID_SIGNATURE",
    records.SALT_TOO_BIG: "ERR_SALT_TOO_BIG",
    records.MALFORMED: "ERR_GRAPE_PAYLOAD_INVALID",
}
ERROR_CODES = {name: code for code, name in ERROR_NAMES.items()}


class GrapeError(Exception):
    """A grape answered with an error, or could not be reached (``name`` ERR_GRAPE_UNREACHABLE).

    ``code`` is the BEP44 code when the error is one of BEP44's, else None.
    """

    def __init__(self, name: str, detail: str = "", status: int | None = None) -> None:
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name
        self.detail = detail
        self.status = status
        self.code = ERROR_CODES.get(name)


def error_body(name: str, detail: str = "") -> str:
    """The JSON string a grape sends for an error; one format for server and client."""
    return f"{name}: {detail}" if detail else name


GRAPE_BACKOFF_S = 0.5  # a failing grape is skipped this long, doubling per failure ...
GRAPE_BACKOFF_MAX_S = 30.0  # ... up to this
ANNOUNCE_BACKOFF_S = 1.0  # a failed announce is retried after this, doubling up to its interval


def grape_urls(grapes: str | Sequence[str]) -> list[str]:
    """Base URLs from one string (comma-separated) or several; ValueError if there are none."""
    parts = [grapes] if isinstance(grapes, str) else list(grapes)
    urls = [u.strip().rstrip("/") for part in parts for u in part.split(",") if u.strip()]
    if not urls:
        raise ValueError("at least one grape URL is needed")
    return list(dict.fromkeys(urls))


def _is_grape_failure(exc: GrapeError) -> bool:
    """The grape, not the request, failed: another grape may well answer."""
    return exc.status is None or exc.status >= 500 or exc.name == "ERR_GRAPE_REPLY"


class Link:
    def __init__(
        self, grape: str | Sequence[str], *, timeout: float = 5.0, pool_size: int = 32
    ) -> None:
        self.grapes = grape_urls(grape)
        self._current = 0  # the grape that answered last
        self._skip: dict[str, tuple[float, int]] = {}  # url -> (skipped until, failures)
        self._grape_lock = threading.Lock()
        self._no_grape: str | None = None  # why the last request failed on every grape
        self.timeout = timeout
        self._session = requests.Session()
        # The grape is addressed directly, never through a proxy, and with the environment
        # trusted every request re-reads proxy variables and looks for a .netrc: more CPU
        # than the rest of a put's client side.
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=len(self.grapes), pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._announcing: dict[tuple[str, int, str | None], float] = {}
        self._announce_lock = threading.Lock()
        self._announce_failures: dict[tuple[str, int, str | None], int] = {}
        self._announce_error: str | None = None  # why the last failing announce failed
        self._announced_via: str | None = None
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the Grape API -------------------------------------------------------------------

    @property
    def grape(self) -> str:
        """The grape requests go to first (the one that answered last)."""
        with self._grape_lock:
            return self.grapes[self._current]

    @grape.setter
    def grape(self, url: str) -> None:
        with self._grape_lock:
            self.grapes, self._current, self._skip = grape_urls(url), 0, {}

    def request(self, kind: str, data: Any) -> Any:
        """Send to the current grape; on a grape failure, on to the next one not skipped.

        When every grape is being skipped, the one due soonest is tried anyway (a
        request is never refused untried), but only that one.
        """
        last: GrapeError | None = None
        for url in self._order():
            try:
                body = self._request(url, kind, data)
            except GrapeError as exc:
                if not _is_grape_failure(exc):
                    self._answered(url)
                    raise
                self._failed(url, exc)
                last = exc
                continue
            self._answered(url)
            return body
        assert last is not None
        with self._grape_lock:
            self._no_grape = str(last)
        raise last

    def _order(self) -> list[str]:
        now = time.monotonic()
        with self._grape_lock:
            ring = self.grapes[self._current :] + self.grapes[: self._current]
            usable = [u for u in ring if self._skip.get(u, (0.0, 0))[0] <= now]
            if usable:
                return usable
            return [min(ring, key=lambda u: self._skip[u][0])]

    def _answered(self, url: str) -> None:
        with self._grape_lock:
            if url not in self.grapes:
                return
            index = self.grapes.index(url)
            moved = index != self._current
            self._current = index
            self._skip.pop(url, None)
            self._no_grape = None
        if moved:
            log.info("using grape %s", url)

    def _failed(self, url: str, exc: GrapeError) -> None:
        with self._grape_lock:
            failures = self._skip.get(url, (0.0, 0))[1] + 1
            backoff = min(GRAPE_BACKOFF_S * 2 ** (failures - 1), GRAPE_BACKOFF_MAX_S)
            self._skip[url] = (time.monotonic() + backoff, failures)
        if failures == 1 and len(self.grapes) > 1:
            log.warning("grape %s failed (%s), trying the others", url, exc)

    def _request(self, url: str, kind: str, data: Any) -> Any:
        try:
            resp = self._session.post(
                f"{url}/{kind}",
                json={"rid": str(uuid.uuid4()), "data": data},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise GrapeError("ERR_GRAPE_UNREACHABLE", str(exc)) from None
        try:
            body = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 300:
            name, _, detail = str(body).partition(": ")
            raise GrapeError(name or "ERR_GRAPE", detail, resp.status_code)
        return body

    def announce(self, name: str, port: int, host: str | None = None) -> int:
        data: list[Any] = [name, port] if host is None else [name, port, host]
        stored = self.request("announce", data)
        if isinstance(stored, bool) or not isinstance(stored, int):
            raise GrapeError("ERR_GRAPE_REPLY", f"announce answered {stored!r}, not a count")
        return stored

    def lookup(self, name: str) -> list[str]:
        result = self.request("lookup", name)
        return (
            [peer for peer in result if isinstance(peer, str)] if isinstance(result, list) else []
        )

    def put(self, data: dict[str, Any]) -> str:
        return str(self.request("put", data))

    def get(self, hash_: str) -> dict[str, Any] | None:
        result = self.request("get", hash_)
        return result if isinstance(result, dict) else None

    # -- records -------------------------------------------------------------------------

    def put_record(self, record: Record, cas: int | None = None) -> str:
        data = record.to_json()
        if cas is not None:
            data["cas"] = cas
        return self.put(data)

    def put_mutable(
        self, key: SigningKey, v: bytes, seq: int, salt: bytes = b"", cas: int | None = None
    ) -> Record:
        """Sign ``v`` as version ``seq`` and put it, guarded by ``cas`` (the seq we replace)."""
        record = records.sign(key, v, seq, salt)
        self.put_record(record, cas)
        return record

    def get_record(self, hash_: str) -> Record | None:
        """Fetch and verify; a reply that fails verification is treated as an attack, not data."""
        reply = self.get(hash_)
        if reply is None:
            return None
        record = Record.from_json(reply)
        record.verify()
        if record.hash != hash_.lower():
            raise RecordError(records.MALFORMED, "grape returned a record for another target")
        return record

    # -- periodic announcing ---------------------------------------------------------------

    def start_announcing(
        self, name: str, port: int, host: str | None = None, interval: float = 60.0
    ) -> None:
        """Announce now and every ``interval`` s until stopped; keep it under the grape's --dpa."""
        with self._announce_lock:
            self._announcing[(name, port, host)] = interval
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._announce_loop, name="link-announce", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop_announcing(self, name: str | None = None) -> None:
        with self._announce_lock:
            for entry in [e for e in self._announcing if name is None or e[0] == name]:
                del self._announcing[entry]

    def _announce_loop(self) -> None:
        due: dict[tuple[str, int, str | None], float] = {}
        while not self._stopped.is_set():
            now = time.monotonic()
            with self._announce_lock:
                entries = dict(self._announcing)
            for entry, interval in entries.items():
                if due.get(entry, 0.0) <= now:
                    due[entry] = now + self._announce_once(entry, interval)
            wait = min((due.get(e, now) for e in entries), default=now + 60.0) - now
            self._wake.wait(max(wait, 0.05))
            self._wake.clear()

    def _announce_once(self, entry: tuple[str, int, str | None], interval: float) -> float:
        """Announce ``entry``; seconds until the next attempt (backing off while failing)."""
        try:
            self.announce(*entry)
        except Exception as exc:  # this thread must outlive any reply
            # If this thread died, the node would silently drop out of every lookup
            # once the grape's --dpa ran out; keep retrying, slower and slower.
            with self._announce_lock:
                failures = self._announce_failures.get(entry, 0) + 1
                self._announce_failures[entry] = failures
                first = self._announce_error is None
                self._announce_error = f"{entry[0]}: {exc}"
            if first:
                log.warning("announcing failed, retrying with back-off: %s: %s", entry[0], exc)
            return min(ANNOUNCE_BACKOFF_S * 2 ** (failures - 1), interval)
        with self._announce_lock:
            self._announce_failures.pop(entry, None)
            recovered = self._announce_error is not None and not self._announce_failures
            if recovered:
                self._announce_error = None
            self._announced_via = self.grape
        if recovered:
            log.info("announcing again, via %s", self.grape)
        return interval

    def status(self) -> dict[str, Any]:
        """How announcing stands: the grape in use, whether every name is announced, and
        the last error while one is not (for a node's ``/health``).

        Not announced either when the last request of any kind failed on every grape:
        the entries may still be in the DHT, but nothing keeps them there.
        """
        with self._grape_lock:
            no_grape = self._no_grape
        with self._announce_lock:
            announced = (
                bool(self._announcing)
                and self._announced_via is not None
                and not any(e in self._announce_failures for e in self._announcing)
                and no_grape is None
            )
            error = self._announce_error or no_grape
        return {
            "grape": self.grape,
            "grapes": list(self.grapes),
            "announced": announced,
            "last_error": error,
        }

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.stop_announcing()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._session.close()
