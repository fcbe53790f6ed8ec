"""Link: the client of a grape's HTTP API, mirroring ``grenache-nodejs-link``.

Nodes never speak UDP to the DHT themselves; everything goes through one grape
over pooled keep-alive HTTP, exactly as a Grenache service would.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
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


class Link:
    def __init__(self, grape: str, *, timeout: float = 5.0, pool_size: int = 32) -> None:
        self.grape = grape.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        # The grape is addressed directly, never through a proxy, and with the environment
        # trusted every request re-reads proxy variables and looks for a .netrc: more CPU
        # than the rest of a put's client side.
        self._session.trust_env = False
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        self._session.mount("http://", adapter)
        self._announcing: dict[tuple[str, int, str | None], float] = {}
        self._announce_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the Grape API -------------------------------------------------------------------

    def request(self, kind: str, data: Any) -> Any:
        try:
            resp = self._session.post(
                f"{self.grape}/{kind}",
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
                    try:
                        self.announce(*entry)
                        due[entry] = now + interval
                    except Exception as exc:  # this thread must outlive any reply
                        # If this thread died, the node would silently drop out of every
                        # lookup once the grape's --dpa ran out; keep retrying instead.
                        log.warning("announce %s failed: %s", entry[0], exc)
                        due[entry] = now + min(interval, 1.0)
            wait = min((due.get(e, now) for e in entries), default=now + 60.0) - now
            self._wake.wait(max(wait, 0.05))
            self._wake.clear()

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.stop_announcing()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._session.close()
