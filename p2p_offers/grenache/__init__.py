"""Grenache RPC for Python: the wire of ``grenache-nodejs-http`` 0.7.x, client and server.

Usable with any Grenache network (a stock grenache-grape or ours): look services
up and announce them through ``p2p_offers.link.Link``. See docs/grenache-rpc.md.
"""

from p2p_offers.grenache.client import LookupCache, PeerRPCClient
from p2p_offers.grenache.errors import (
    BadReply,
    GrenacheError,
    LookupEmpty,
    LookupFailed,
    MaybeDelivered,
    NotDelivered,
    RemoteError,
    ServiceError,
    TransportError,
)
from p2p_offers.grenache.server import Dispatcher, PeerRPCServer
from p2p_offers.grenache.transport import BaseTransport, HttpTransport, MockTransport

__all__ = [
    "BadReply",
    "BaseTransport",
    "Dispatcher",
    "GrenacheError",
    "HttpTransport",
    "LookupCache",
    "LookupEmpty",
    "LookupFailed",
    "MaybeDelivered",
    "MockTransport",
    "NotDelivered",
    "PeerRPCClient",
    "PeerRPCServer",
    "RemoteError",
    "ServiceError",
    "TransportError",
]
