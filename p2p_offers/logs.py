"""Log set-up for grapes and nodes: plain text, or one JSON object per line with request ids.

``--log-format json`` writes each record as ``{"ts", "level", "logger", "msg"}``, plus
``request_id`` when it is logged while a request is handled (REST, Grenache RPC, the
Grape API) and ``exc`` with the traceback if there is one: a log shipper reads it without
parsing free text, and every line a request caused can be found by its id.

The id is kept in a context variable (``REQUEST_ID``), set by each edge for the time of
one request: a client's own id (``X-Request-Id``, or a Grenache request's ``rid``) is
taken if well formed, else one is made; the REST and Grape edges send it back as
``X-Request-Id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from datetime import UTC, datetime

FORMATS = ("text", "json")
HEADER = "X-Request-Id"
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,64}")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def request_id(given: object = None) -> str:
    """``given`` if it is a well-formed id (1-64 of ``A-Za-z0-9._:-``), else a new one.

    Anything else a client sends (long, with spaces, quotes or newlines) would let it
    forge or bloat log lines and headers, so it is replaced, not cleaned.
    """
    if isinstance(given, str) and _WELL_FORMED.fullmatch(given):
        return given
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            line["request_id"] = rid
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text") -> None:
    """The root logger's one handler (stderr), as text or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
