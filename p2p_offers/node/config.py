"""Everything a node is told at start; built by the CLI and by tests (``create_app(config)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_OFFER_TTL_S = 7 * 86400  # the longest lifetime an owner may give an offer (and peers accept)
# The shortest: every refresh (at half the lifetime) costs a DHT put and a push to every peer,
# so an offer refreshed every few seconds would cost the network more than it is worth.
MIN_OFFER_TTL_S = 30


@dataclass(frozen=True)
class NodeConfig:
    port: int
    grape: str  # base URL of this node's grape, e.g. http://127.0.0.1:30001
    data_dir: Path
    host: str = "127.0.0.1"  # address the REST API binds to
    announce_host: str | None = None  # address peers should dial; None: as the grape sees us
    api_token: str | None = None  # bearer token for the control endpoints
    offer_ttl_s: int = 600  # default lifetime of an offer; owners refresh at half-life
    announce_interval_s: float = 30.0  # re-announce p2p_offers:node and the owner key
    sync_interval_s: float = 15.0  # anti-entropy pull from peers
    resolve_interval_s: float = 5.0  # re-send bids in doubt until their owners answer
    threads: int = 16  # waitress worker threads
    # GET /events (node/http/events.py): each stream holds a server thread, so at most this
    # many at once (and never more than half the threads); a keepalive comment this often;
    # a client with more than this many bytes sent to it but not read is dropped as slow.
    events_clients: int = 4
    events_keepalive_s: float = 15.0
    events_max_unsent: int = 256 * 1024
