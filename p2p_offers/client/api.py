"""``NodeApi``: a node's REST API for a program, its failures as two exceptions.

An answer that is not a success is ``ApiError`` with the node's error body
(``code``, ``message``, ``details``; docs/errors.md), or a stand-in code when
the body is not the node's JSON (something else answered on that port). A
node that cannot be reached at all is ``Unreachable``. The CLI maps these to
its exit codes; a script can catch them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Unreachable(Exception):
    """No answer at all: refused, reset, timed out, or a name that does not resolve."""


def node_url(text: str) -> str:
    """A node's base URL from what a person types: ``4001``, ``host:4001`` or a URL."""
    text = text.strip().rstrip("/")
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a node URL: {text!r} (expected http://host:port)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"not a node URL: {text!r} (bad port)") from None
    return text


class NodeApi:
    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON of a 2xx answer; ``ApiError`` or ``Unreachable`` otherwise."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self.session.request(
                method,
                self.base_url + path,
                json=body,
                params=query or None,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the node at {self.base_url}: {_reason(exc)}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.ok and data is not None:
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            details = error.get("details")
            return _raise(
                resp.status_code,
                error["code"],
                str(error.get("message", "")),
                details if isinstance(details, dict) else None,
            )
        snippet = resp.text[:200].strip() or resp.reason
        return _raise(
            resp.status_code, "unexpected_answer", f"HTTP {resp.status_code} from {path}: {snippet}"
        )

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)


def _raise(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Any:
    raise ApiError(status, code, message, details)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused or broken"
    return type(exc).__name__
