"""Everything a grape is told at start; built by the CLI, by tests and by benchmarks alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GrapeConfig:
    dht_port: int  # --dp: UDP port of the DHT
    api_port: int  # --aph: HTTP port of the Grape API
    bootstrap: tuple[tuple[str, int], ...] = ()  # --bn: other grapes' DHT addresses
    host: str = "127.0.0.1"  # -b: address both sockets bind to
    announce_ttl_ms: int = 120_000  # --dpa: how long an announcement lives
    max_payload: int = 8192  # --check_maxPayloadSize: largest HTTP body accepted
    rpc_timeout: float = 0.25  # seconds a DHT RPC may take before the contact counts as dead
    ksize: int = 20
    ids_per_ip: int = 4  # node ids one non-loopback IP address may have in the routing table
    alpha: int = 3
    record_ttl: float = 2 * 3600.0  # seconds a record lives unless its writer puts it again
    republish_interval: float = 3600.0  # holders re-store items nobody stored for this long
    lookup_grace: float = 0.05  # seconds a lookup waits for a straggler once most have answered
    closest_cache_ttl: float = 30.0  # seconds a key's closest nodes are reused without a crawl
