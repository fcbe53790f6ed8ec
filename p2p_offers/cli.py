"""p2p-offers: run a grape, a node or a local network; trade through a node (client/cli.py)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path

from p2p_offers.client.cli import add_commands as add_client_commands
from p2p_offers.client.cli import run as run_client_command
from p2p_offers.grape.config import GrapeConfig
from p2p_offers.logs import FORMATS
from p2p_offers.logs import configure as configure_logs
from p2p_offers.node.config import RPC_PORT_OFFSET, NodeConfig, announce_problem


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected host:port, got {text!r}")
    return host, int(port)


def _bootstrap_list(text: str) -> tuple[tuple[str, int], ...]:
    return tuple(_host_port(item) for item in text.split(",") if item.strip())


def _mesh(text: str) -> tuple[int, int, int]:
    """``d,d_low,d_high`` of the gossip mesh (docs/gossip.md)."""
    d, low, high = (int(x) for x in text.split(","))
    return d, low, high


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {text!r}")
    return int(text)


def _at_least(kind: type[int] | type[float], low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= low:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return value

    return parse


def _log_format(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--log-format",
        choices=FORMATS,
        default=os.environ.get("P2P_OFFERS_LOG_FORMAT", "text"),
        help="json: one JSON object per line, with request ids (docs/logging.md)",
    )


DESCRIPTION = """\
A peer-to-peer USD/BTC OTC exchange: grapes (DHT nodes) store signed offers, nodes
keep the whole network's book and settle bids on their own offers.

Run a network:   p2p-offers start-all            (3 grapes + 3 nodes on this machine)
Trade:           p2p-offers book --node 4000     (and offers, offer, bid, order, ...)
Web page:        http://localhost:4000/ on any node
"""

EPILOG = "Docs: README.md and docs/ in the project; `p2p-offers <command> --help` for each command."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p2p-offers",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("P2P_OFFERS_LOG", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default INFO, or $P2P_OFFERS_LOG)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    grape = sub.add_parser("grape", help="run a DHT node with the Grape HTTP API")
    grape.add_argument("--dp", type=_port, required=True, help="DHT UDP port")
    grape.add_argument("--aph", type=_port, required=True, help="Grape HTTP API port")
    grape.add_argument("--bn", type=_bootstrap_list, default=(), help="bootstrap host:port,...")
    grape.add_argument("-b", "--bind", default="127.0.0.1", help="address to bind")
    grape.add_argument("--dpa", type=int, default=120_000, help="announcement lifetime, ms")
    grape.add_argument(
        "--check_maxPayloadSize", type=int, default=8192, dest="max_payload",
        help="largest request body, bytes",
    )  # fmt: skip
    grape.add_argument("--rpc-timeout", type=float, default=0.25, help="DHT RPC timeout, s")
    _log_format(grape)

    node = sub.add_parser("node", help="run an exchange node")
    node.add_argument("--port", type=_port, required=True, help="REST API port")
    node.add_argument(
        "--rpc-port", type=_port, default=None, help="Grenache RPC port (default: --port + 1000)"
    )
    node.add_argument(
        "--peer-transport",
        choices=("rpc", "rest"),
        default=os.environ.get("P2P_OFFERS_PEER_TRANSPORT", "rpc"),
        help="how this node calls other nodes: Grenache RPC (default) or the REST /peer/*",
    )
    node.add_argument(
        "--propagation",
        choices=("gossip", "push"),
        default=os.environ.get("P2P_OFFERS_PROPAGATION", "gossip"),
        help="new versions to <= 8 mesh neighbours who forward them (gossip), or to every node",
    )
    node.add_argument(
        "--grape",
        required=True,
        action="append",
        help="URL of a grape API; several (repeated or comma-separated) to fail over between",
    )
    node.add_argument(
        "--data-dir", type=Path, required=True, help="where the node's key and database live"
    )
    node.add_argument("--host", default="127.0.0.1", help="address the REST API binds to")
    node.add_argument("--announce-host", default=None, help="address peers should dial")
    node.add_argument(
        "--api-token",
        default=os.environ.get("P2P_OFFERS_API_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on create, update, cancel, bid and order",
    )
    node.add_argument("--offer-ttl", type=int, default=600, help="default offer lifetime, s")
    node.add_argument(
        "--announce-interval", type=float, default=30.0, help="s between announcements"
    )
    node.add_argument(
        "--sync-interval", type=float, default=15.0, help="s between anti-entropy rounds"
    )
    node.add_argument(
        "--closed-keep", type=_at_least(float, 0), default=60.0,
        help="s a closed offer stays listed (closed) before it shrinks to a tombstone",
    )  # fmt: skip
    node.add_argument(
        "--events-clients", type=_at_least(int, 0), default=4,
        help="GET /events streams served at once",
    )  # fmt: skip
    node.add_argument(
        "--events-keepalive", type=_at_least(float, 0.01), default=15.0,
        help="s between keepalive comments on a stream",
    )  # fmt: skip
    node.add_argument(
        "--events-max-unsent", type=_at_least(int, 0), default=256 * 1024,
        help="bytes a stream's client may leave unread before it is dropped",
    )  # fmt: skip
    _log_format(node)
    node.add_argument(
        "--max-offers-per-owner", type=_at_least(int, 1), default=1000,
        help="open offers kept per foreign owner; more are refused (owner_full)",
    )  # fmt: skip
    node.add_argument(
        "--peer-push-rate", type=_at_least(float, 0.001), default=2000.0,
        help="records/s per peer address",
    )  # fmt: skip
    node.add_argument(
        "--peer-push-burst", type=_at_least(int, 1), default=20_000,
        help="records a quiet peer address may push at once",
    )  # fmt: skip

    start = sub.add_parser("start-all", help="a whole local network in the foreground")
    start.add_argument("--grapes", type=int, default=3, help="grapes (API on 30001..)")
    start.add_argument("--nodes", type=int, default=3, help="nodes (REST on 4000..)")
    start.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="state and logs (kept across runs)"
    )

    bed = sub.add_parser("testbed", help="N hosts in network namespaces on an emulated WAN (root)")
    bed.add_argument("--hosts", type=int, default=3, help="hosts, each a grape and a node")
    bed.add_argument("--rtt-ms", type=float, default=0.0, help="round trip between hosts")
    bed.add_argument("--jitter-ms", type=float, default=0.0, help="round trip within rtt ± this")
    bed.add_argument("--loss-pct", type=float, default=0.0, help="per packet, per direction")
    bed.add_argument(
        "--data-dir", type=Path, default=Path("testbed-data"), help="the hosts' state and logs"
    )

    add_client_commands(sub)  # book, offers, offer, bid, order, trades, account, watch
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "client_run"):
        return run_client_command(args)
    configure_logs(args.log_level, getattr(args, "log_format", "text"))
    if args.command == "grape":
        from p2p_offers.grape.process import run

        return run(
            GrapeConfig(
                dht_port=args.dp,
                api_port=args.aph,
                bootstrap=args.bn,
                host=args.bind,
                announce_ttl_ms=args.dpa,
                max_payload=args.max_payload,
                rpc_timeout=args.rpc_timeout,
            )
        )
    if args.command == "node":
        from p2p_offers.node.http.app import serve

        if args.rpc_port is None and args.port + RPC_PORT_OFFSET > 65535:
            parser.error(f"--port {args.port} leaves no default RPC port: give --rpc-port")
        config = NodeConfig(
            port=args.port,
            rpc_port=args.rpc_port,
            peer_transport=args.peer_transport,
            propagation=args.propagation,
            gossip_mesh=_mesh(os.environ.get("P2P_OFFERS_GOSSIP_MESH", "6,4,8")),
            grape=",".join(args.grape),
            data_dir=args.data_dir,
            host=args.host,
            announce_host=args.announce_host,
            api_token=args.api_token,
            offer_ttl_s=args.offer_ttl,
            announce_interval_s=args.announce_interval,
            sync_interval_s=args.sync_interval,
            closed_keep_s=args.closed_keep,
            events_clients=args.events_clients,
            events_keepalive_s=args.events_keepalive,
            events_max_unsent=args.events_max_unsent,
            max_offers_per_owner=args.max_offers_per_owner,
            push_rate=args.peer_push_rate,
            push_burst=args.peer_push_burst,
        )
        try:
            problem = announce_problem(config)  # docs/hardening.md: refuse, do not hide it
        except ValueError as exc:
            problem = f"--grape: {exc}"
        if problem:
            logging.getLogger("p2p_offers.node").error("node not started: %s", problem)
            return 2
        return serve(config)
    if args.command == "testbed":
        from p2p_offers.testbed.bed import Conditions, run_foreground

        conditions = Conditions(args.rtt_ms, args.jitter_ms, args.loss_pct)
        return run_foreground(args.hosts, conditions, args.data_dir)
    from p2p_offers.cluster import start_all

    return start_all(args.grapes, args.nodes, args.data_dir)
