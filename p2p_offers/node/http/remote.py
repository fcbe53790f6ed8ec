"""Who sent the request being handled, whichever edge it came in on (per-peer limits)."""

from __future__ import annotations

from flask import has_request_context, request

from p2p_offers.grenache.server import REMOTE


def remote_address() -> str:
    """The sender's IP: Flask's for REST, the Grenache server's for RPC ("" if unknown)."""
    if has_request_context():
        return request.remote_addr or ""
    return REMOTE.get() or ""
