"""Everything a node is told at start; built by the CLI and by tests (``create_app(config)``)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

MAX_OFFER_TTL_S = 7 * 86400  # the longest lifetime an owner may give an offer (and peers accept)
# The shortest: every refresh (at half the lifetime) costs a DHT put and a push to every peer,
# so an offer refreshed every few seconds would cost the network more than it is worth.
MIN_OFFER_TTL_S = 30
RPC_PORT_OFFSET = 1000  # the default Grenache RPC port is the REST port + this


@dataclass(frozen=True)
class NodeConfig:
    port: int
    grape: str  # base URL(s) of this node's grapes, comma-separated: http://127.0.0.1:30001
    data_dir: Path
    host: str = "127.0.0.1"  # address the REST API binds to
    announce_host: str | None = None  # address peers should dial; None: as the grape sees us
    api_token: str | None = None  # bearer token for the control endpoints
    offer_ttl_s: int = 600  # default lifetime of an offer; owners refresh at half-life
    announce_interval_s: float = 30.0  # re-announce the node's names (RPC and REST)
    sync_interval_s: float = 15.0  # anti-entropy pull from peers
    closed_keep_s: float = 60.0  # a closed offer is listed this long, then kept as a tombstone
    resolve_interval_s: float = 5.0  # re-send bids in doubt until their owners answer
    threads: int = 16  # waitress worker threads (and as many Grenache RPC handler threads)
    rpc_port: int | None = None  # Grenache RPC port; None: the REST port + RPC_PORT_OFFSET
    peer_transport: str = "rpc"  # how this node calls peers: "rpc" (Grenache) or "rest"
    # spam bounds (docs/limits.md): open offers kept per foreign owner, pushes per peer address
    max_offers_per_owner: int = 1000
    push_rate: float = 2000.0  # records pushed per second per peer address, sustained
    push_burst: int = 20_000  # records a quiet peer address may push at once
    # How new versions spread: "gossip" (to <= 8 mesh neighbours, forwarded on; digest
    # anti-entropy every sync_interval, the paged sync at start only) or "push" (the owner
    # to every peer; the paged sync every sync_interval). docs/gossip.md
    propagation: str = "gossip"
    # the mesh's (d, d_low, d_high): gossipsub's 6/4/8 here; smaller only to test a small
    # network with a mesh that does not reach everyone (env P2P_OFFERS_GOSSIP_MESH=3,2,4)
    gossip_mesh: tuple[int, int, int] = (6, 4, 8)

    # GET /events (node/http/event_stream.py): each stream holds a server thread, so at most this
    # many at once (and never more than half the threads); a keepalive comment this often;
    # a client with more than this many bytes sent to it but not read is dropped as slow.
    events_clients: int = 4
    events_keepalive_s: float = 15.0
    events_max_unsent: int = 256 * 1024

    @property
    def grenache_port(self) -> int:
        """Where the node answers Grenache RPC (and announces p2p_offers:node)."""
        return self.rpc_port if self.rpc_port is not None else self.port + RPC_PORT_OFFSET

    def listens_at(self) -> tuple[set[str], set[int]]:
        """The hosts and ports peers may dial this node at (``network/identity.py``).

        No hosts without ``--announce-host``: the node then announces the address its
        grape sees it at, which it cannot know (a wildcard bind, a name, NAT), only
        the port.
        """
        hosts = {self.announce_host} if self.announce_host is not None else set()
        return hosts, {self.port, self.grenache_port}


def announce_problem(config: NodeConfig) -> str | None:
    """Why peers on other hosts could not dial what this node would announce; None if they can.

    Without ``--announce-host`` a node announces the address its grape sees it
    at: 127.0.0.1 when the grape is reached over loopback. That is right for a
    network on one machine (``--host 127.0.0.1``), but a node listening for other
    hosts (``--host 0.0.0.0`` or a real address) would tell every peer to dial
    127.0.0.1 and never be reached, with nothing logged. Such a node refuses to
    start instead, and says what to pass. Likewise an explicit loopback
    ``--announce-host`` beside a grape that is not on loopback.
    """
    from p2p_offers.link import grape_urls  # link pulls in requests; config stays light

    grapes = grape_urls(config.grape)
    local = [url for url in grapes if _is_loopback(urlsplit(url).hostname or "")]
    if config.announce_host is None:
        if _is_loopback(config.host) or not local:
            return None
        return (
            f"--host {config.host} listens for other hosts, but without --announce-host this "
            f"node announces the address its grape sees it at, and grape {local[0]} is on "
            f"loopback: every peer would be told to dial 127.0.0.1:{config.port}. Pass "
            "--announce-host <the address other hosts reach this node at>, or --host "
            "127.0.0.1 for a network on this machine only"
        )
    remote = [url for url in grapes if url not in local]
    if _is_loopback(config.announce_host) and remote:
        return (
            f"--announce-host {config.announce_host} is a loopback address, but grape "
            f"{remote[0]} is not on loopback: peers found through it could not dial this node. "
            "Pass the address other hosts reach this node at"
        )
    return None


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or a name that resolves to one of them (``localhost``)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
