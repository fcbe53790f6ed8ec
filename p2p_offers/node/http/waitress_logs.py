"""Expected client failures (a peer resetting mid-upload, a client gone before its answer)
logged as one line each and counted, never as a traceback.

Waitress logs a socket error on a connection with its full traceback; under
attack (or just flaky links) that is thousands of lines saying nothing but
"the other end went away". This filter keeps the line, drops the traceback and
counts it (``/health`` ``http``), and leaves anything else waitress logs as it is.
"""

from __future__ import annotations

import logging
from collections import Counter

from waitress.channel import ClientDisconnected

_CLIENT_FAILURES = (OSError, ClientDisconnected)


class ClientFailureFilter(logging.Filter):
    def __init__(self, counts: Counter[str]) -> None:
        super().__init__()
        self.counts = counts

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, _CLIENT_FAILURES):
            self.counts[type(exc).__name__] += 1
            record.msg = f"{record.getMessage()}: {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif record.getMessage().startswith("Client disconnected"):
            self.counts["ClientDisconnected"] += 1
        return True


def quiet_client_failures(counts: Counter[str]) -> None:
    """Install the filter on waitress's loggers, counting into ``counts``."""
    logger = logging.getLogger("waitress")
    logger.addFilter(ClientFailureFilter(counts))
    # Queue-depth warnings fire on every burst; the backlog is expected under load and
    # logging it costs the worker threads CPU exactly when they are busiest.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
