"""THE mapping of domain errors to HTTP statuses, and how the REST edge answers with one.

One table, most general class last: a subclass gets its own row only if its
status differs from its base's. ``status_of`` is also what the OpenAPI document
lists per operation, so the description cannot promise a status the code does
not send (or hide one it does).
"""

from __future__ import annotations

from typing import Final

from p2p_offers.node import errors

STATUS: Final[dict[type[errors.DomainError], int]] = {
    errors.InvalidInput: 400,
    errors.Unauthorized: 401,
    errors.NotOwner: 403,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.Refusal: 409,
    errors.BodyTooLarge: 413,
    errors.Misdirected: 421,
    errors.Internal: 500,
    errors.PeerFailure: 502,
    errors.DhtUnavailable: 503,
    errors.TooManyClients: 503,
}

DESCRIPTIONS: Final[dict[int, str]] = {
    400: "invalid input",
    401: "missing or wrong bearer token",
    403: "not the owner",
    404: "unknown",
    405: "method not allowed",
    409: "conflict",
    413: "body too large",
    421: "misdirected: this node does not listen at the address named",
    500: "internal error",
    502: "the owner (another node) did not answer usefully",
    503: "unavailable: the DHT, or (GET /events) every stream slot",
}


def status_of(error: type[errors.DomainError] | errors.DomainError) -> int:
    cls = error if isinstance(error, type) else type(error)
    for base in cls.__mro__:
        if base in STATUS:
            return STATUS[base]
    return 500
