"""``Dht``: what a node uses of the DHT (``p2p_offers.link.Link`` is the real one).

Failures raise ``p2p_offers.link.GrapeError`` (``code`` the BEP44 code when it is
one of BEP44's), and a record read back is verified (``RecordError`` if not).
Node tests run against an in-memory implementation (``tests/fakes.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

from p2p_offers.records import Record


class Dht(Protocol):
    def announce(self, name: str, port: int, host: str | None = None) -> int: ...

    def start_announcing(
        self, name: str, port: int, host: str | None = None, interval: float = 60.0
    ) -> None: ...

    def stop_announcing(self, name: str | None = None) -> None: ...

    def lookup(self, name: str) -> list[str]: ...

    def put_record(self, record: Record, cas: int | None = None) -> str: ...

    def get_record(self, hash_: str) -> Record | None: ...

    def status(self) -> dict[str, Any]:
        """``grape`` (in use), ``announced`` (every name), ``last_error``: for ``/health``."""
        ...

    def close(self) -> None: ...
