"""What can go wrong in a Grenache RPC call, as classes a caller can branch on.

The split that matters to a caller is whether the request may have reached the
server: ``NotDelivered`` (no connection was made; safe to try another address)
against ``MaybeDelivered`` (sent, no answer: a non-idempotent request such as a
bid must not be blindly repeated). ``RemoteError`` is the server's own ``err``
string, ``ERR_<CODE>: message`` by convention, split into ``code`` and ``detail``.
"""

from __future__ import annotations

from typing import Any


class GrenacheError(Exception):
    """Base of every error this package raises."""


class LookupEmpty(GrenacheError):
    """No peer announces the service (grenache-nodejs-link's ``ERR_GRAPE_LOOKUP_EMPTY``)."""


class LookupFailed(GrenacheError):
    """The grape could not be asked (down, or answered an error)."""


class TransportError(GrenacheError):
    """The request got no usable answer."""


class NotDelivered(TransportError):
    """The request surely did not reach the server (no connection could be made)."""


class MaybeDelivered(TransportError):
    """The request may have reached the server; its answer was lost (timeout, reset)."""


class BadReply(TransportError):
    """The server answered something that is not a Grenache reply frame."""


class RemoteError(GrenacheError):
    """The server replied with an error string: ``code`` is its ``ERR_...`` prefix."""

    def __init__(self, err: str, address: str | None = None, data: Any = None) -> None:
        super().__init__(err)
        self.err = err
        self.address = address
        self.data = data  # what the server sent beside err (p2p-offers: the error object)
        code, sep, detail = err.partition(":")
        self.code = code.strip() if sep or code.startswith("ERR_") else "ERR_REMOTE"
        self.detail = detail.strip() if sep else err


class ServiceError(GrenacheError):
    """Raised by a server handler: ``message`` goes out verbatim as the reply's ``err``,
    ``data`` (if any) in the reply's data slot."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
