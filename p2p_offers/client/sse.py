"""Reading a Server-Sent Events stream (``GET /events``), as the WHATWG spec parses it.

``parse`` turns the bytes of a stream, in chunks cut anywhere, into events;
``EventSource`` follows a node's stream over ``requests`` the way a browser's
EventSource does: it remembers the last event id and, when the stream ends
(the node dropped a slow client, restarted, or the connection broke), connects
again with ``Last-Event-ID`` so the node replays what was missed. The CLI's
``watch`` and the tests read the node through this one piece of code.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class ServerEvent:
    type: str  # the ``event:`` field, "message" if none; "comment" for ``: ...`` lines
    data: str
    id: str | None = None  # the stream's last event id when this one was dispatched

    def json(self) -> Any:
        return json.loads(self.data)


def parse(chunks: Iterable[bytes], comments: bool = False) -> Iterator[ServerEvent]:
    """Events from a byte stream; comment lines too (as type "comment") if asked."""
    buffer = ""
    data: list[str] = []
    event_type = ""
    last_id: str | None = None
    pending_cr = False
    for chunk in chunks:
        text = chunk.decode("utf-8", errors="replace")
        if pending_cr and text.startswith("\n"):
            text = text[1:]  # the \n of a \r\n cut between two chunks
        pending_cr = text.endswith("\r")
        buffer += text
        lines = buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        buffer = lines.pop()
        for line in lines:
            if not line:
                if data:
                    yield ServerEvent(event_type or "message", "\n".join(data), last_id)
                data, event_type = [], ""
                continue
            name, colon, value = line.partition(":")
            if colon and value.startswith(" "):
                value = value[1:]
            if not name:
                if comments:
                    yield ServerEvent("comment", value, last_id)
            elif name == "data":
                data.append(value)
            elif name == "event":
                event_type = value
            elif name == "id" and "\0" not in value:
                last_id = value


class EventSource:
    """A node's event stream, reconnecting with ``Last-Event-ID`` after it ends.

    Iterating yields events (ids and control events alike); ``reconnect`` False
    stops at the first end. ``ConnectionError`` escapes only for a first
    connection that fails (a later one is retried every ``retry_s``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        last_event_id: str | None = None,
        types: Iterable[str] | None = None,
        reconnect: bool = True,
        retry_s: float = 2.0,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/events"
        self.last_event_id = last_event_id
        self.types = ",".join(types) if types else None
        self.reconnect = reconnect
        self.retry_s = retry_s
        self.timeout = timeout
        self.session = session or requests.Session()
        self.response: requests.Response | None = None
        self._closed = False

    def connect(self) -> requests.Response:
        headers = {"Accept": "text/event-stream"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        params = {"types": self.types} if self.types else None
        # the read timeout bounds the wait for each chunk: keepalives arrive more often
        resp = self.session.get(
            self.url, headers=headers, params=params, stream=True, timeout=self.timeout
        )
        self.response = resp
        return resp

    def __iter__(self) -> Iterator[ServerEvent]:
        first = True
        while not self._closed:
            try:
                resp = self.connect()
            except requests.RequestException:
                if first:
                    raise
                time.sleep(self.retry_s)
                continue
            if resp.status_code != 200:
                if first:
                    return self._refused(resp)
                resp.close()
                time.sleep(self.retry_s)
                continue
            first = False
            try:
                for event in parse(resp.iter_content(chunk_size=None)):
                    if self._closed:
                        return
                    if event.id is not None:
                        self.last_event_id = event.id
                    yield event
            except (requests.RequestException, OSError, AttributeError):
                if self._closed:  # close() shut the socket under the reader: not a failure
                    return
                # the connection broke: connect again below
            finally:
                resp.close()
            if not self.reconnect:
                return
            time.sleep(self.retry_s if not self._closed else 0)

    def _refused(self, resp: requests.Response) -> None:
        resp.content  # noqa: B018 - read the error body before the connection goes
        raise StreamRefused(resp)

    def close(self) -> None:
        """Stop, from any thread: a reader blocked on the socket returns at once.

        Closing a streamed response from another thread waits for the read in
        progress (http.client reads under a lock), that is until the next
        keepalive; shutting the socket down ends that read now, and the
        reading thread closes the response itself.
        """
        self._closed = True
        resp = self.response
        if resp is None:
            return
        sock = _socket_of(resp)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                return
            except OSError:
                pass  # already gone
        resp.close()


def _socket_of(resp: requests.Response) -> socket.socket | None:
    """The socket under a streamed response (http.client keeps it only in its reader)."""
    fp = getattr(resp.raw, "_fp", None)  # http.client.HTTPResponse
    raw = getattr(getattr(fp, "fp", None), "raw", None)  # socket.SocketIO
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class StreamRefused(Exception):
    """The node answered the first connection with an error (its JSON in ``response``)."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"GET /events answered {response.status_code}")
        self.response = response
