"""Reading a node's ``GET /events`` in tests: a thread drains it into a queue to wait on."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from p2p_offers.client.sse import EventSource, ServerEvent, parse


class Listener:
    """One client of a node's stream; ``wait_for`` polls what arrived, up to a bound."""

    def __init__(self, url: str, reconnect: bool = False, comments: bool = False, **kw: Any):
        self.source = EventSource(url, reconnect=reconnect, retry_s=0.1, **kw)
        self.comments = comments
        self.events: list[ServerEvent] = []
        self._queue: queue.Queue[ServerEvent | None] = queue.Queue()
        self.ended = threading.Event()
        resp = self.source.connect()  # the first connection now: its status is the test's
        self.status = resp.status_code
        self.headers = resp.headers
        self._thread = threading.Thread(target=self._read, args=(resp,), daemon=True)
        self._thread.start()

    def _read(self, resp: Any) -> None:
        try:
            for event in parse(resp.iter_content(chunk_size=None), comments=self.comments):
                self._queue.put(event)
        except Exception:
            pass  # closed by the test, or by the node
        finally:
            self.ended.set()
            self._queue.put(None)

    def _drain(self) -> None:
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            if event is not None:
                self.events.append(event)

    def wait_for(
        self, check: Callable[[list[ServerEvent]], Any], timeout: float = 10.0, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self._drain()
            result = check(self.events)
            if result:
                return result
            if time.monotonic() > deadline:
                seen = [(e.type, e.data[:80]) for e in self.events]
                raise AssertionError(f"timed out waiting for {what or check}; got {seen}")
            time.sleep(0.01)

    def of_type(self, type_: str) -> list[ServerEvent]:
        self._drain()
        return [e for e in self.events if e.type == type_]

    def close(self) -> None:
        self.source.close()
