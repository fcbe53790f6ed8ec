"""Everything a node is told at start; built by the CLI and by tests (``create_app(config)``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAX_OFFER_TTL_S = 7 * 86400  # the longest lifetime an owner may give an offer (and peers accept)
# The shortest: every refresh (at half the lifetime) costs a DHT put and a push to every peer,
# so an offer refreshed every few seconds would cost the network more than it is worth.
MIN_OFFER_TTL_S = 30
RPC_PORT_OFFSET = 1000  # the default Grenache RPC port is the REST port + this


@dataclass(frozen=True)
class NodeConfig:
    port: int
    grape: str  # base URL of this node's grape, e.g. http://127.0.0.1:30001
    data_dir: Path
    host: str = "127.0.0.1"  # address the REST API binds to
    announce_host: str | None = None  # address peers should dial; None: as the grape sees us
    api_token: str | None = None  # bearer token for the control endpoints
    offer_ttl_s: int = 600  # default lifetime of an offer; owners refresh at half-life
    announce_interval_s: float = 30.0  # re-announce the node's names (RPC and REST)
    sync_interval_s: float = 15.0  # anti-entropy pull from peers
    resolve_interval_s: float = 5.0  # re-send bids in doubt until their owners answer
    threads: int = 16  # waitress worker threads (and as many Grenache RPC handler threads)
    rpc_port: int | None = None  # Grenache RPC port; None: the REST port + RPC_PORT_OFFSET
    peer_transport: str = "rpc"  # how this node calls peers: "rpc" (Grenache) or "rest"

    @property
    def grenache_port(self) -> int:
        """Where the node answers Grenache RPC (and announces p2p_offers:node)."""
        return self.rpc_port if self.rpc_port is not None else self.port + RPC_PORT_OFFSET
