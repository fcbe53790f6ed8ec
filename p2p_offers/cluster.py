"""Start, watch and stop grapes and nodes as real subprocesses.

One piece of code serves ``p2p-offers start-all``, the integration tests and the
benchmarks, so all three exercise the network exactly the way a user runs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

from p2p_offers.node.config import RPC_PORT_OFFSET

GRAPE_DHT_BASE = 20001
GRAPE_API_BASE = 30001
NODE_BASE = 4000  # nodes' REST ports; their Grenache RPC ports are 1000 up (5000, ...)


class StartError(RuntimeError):
    """A process exited or never became ready; the message carries its log tail."""


@dataclass
class Proc:
    name: str
    argv: list[str]
    url: str
    kind: str  # "grape" or "node"
    log_path: Path
    rpc: str | None = None  # a node's Grenache RPC address, host:port
    popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free for both TCP and UDP, distinct from each other."""
    ports: set[int] = set()
    while len(ports) < count:
        port = free_port(socket.SOCK_STREAM, host)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError:
            continue
        ports.add(port)
    return sorted(ports)


class Cluster:
    """A set of processes started together and torn down together (also a context manager)."""

    def __init__(self, workdir: Path, python: str = sys.executable) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.procs: list[Proc] = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    # -- spawning ----------------------------------------------------------------------

    def grape(
        self,
        dht_port: int,
        api_port: int,
        bootstrap: Sequence[int] = (),
        extra: Sequence[str] = (),
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        name: str | None = None,
    ) -> Proc:
        argv = ["grape", "--dp", str(dht_port), "--aph", str(api_port), "-b", host]
        if bootstrap:
            argv += ["--bn", ",".join(f"{host}:{p}" for p in bootstrap)]
        return self.spawn(
            name or f"grape-{api_port}",
            "grape",
            argv + list(extra),
            f"http://{host}:{api_port}",
            prefix,
        )

    def node(
        self,
        port: int,
        grape_url: str,
        data_dir: Path | None = None,
        extra: Sequence[str] = (),
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
        name: str | None = None,
        rpc_port: int | None = None,
    ) -> Proc:
        data_dir = data_dir or self.workdir / f"node-{port}"
        argv = ["node", "--port", str(port), "--grape", grape_url, "--data-dir", str(data_dir)]
        if "--rpc-port" not in extra and not (prefix and rpc_port is None):
            # port + 1000 may be taken: tests run on free ports. Inside a namespace (the test
            # bed's ``prefix``) this process cannot probe the host's ports; the default holds.
            while rpc_port is None or rpc_port == port:
                rpc_port = free_ports(1, host)[0]
            argv += ["--rpc-port", str(rpc_port)]
        argv += ["--host", host, *extra]
        proc = self.spawn(name or f"node-{port}", "node", argv, f"http://{host}:{port}", prefix)
        given = (
            argv[argv.index("--rpc-port") + 1] if "--rpc-port" in argv else port + RPC_PORT_OFFSET
        )
        proc.rpc = f"{host}:{given}"
        return proc

    def spawn(
        self, name: str, kind: str, args: list[str], url: str, prefix: Sequence[str] = ()
    ) -> Proc:
        """Start ``p2p_offers <args>``; ``prefix`` wraps it (the test bed's ``ip netns exec``)."""
        log_path = self.workdir / f"{name}.log"
        argv = [*prefix, self.python, "-m", "p2p_offers", *args]
        proc = Proc(name, argv, url, kind, log_path)
        self.procs.append(proc)
        self.start(proc)
        return proc

    def start(self, proc: Proc) -> None:
        """(Re)start a process under the same name, argv and log."""
        proc._log = open(proc.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc.popen = subprocess.Popen(
            proc.argv, stdout=proc._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    # -- readiness -----------------------------------------------------------------------

    def wait_ready(self, procs: Sequence[Proc] | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(procs if procs is not None else self.procs)
        session = requests.Session()
        while pending:
            for proc in list(pending):
                if not proc.alive:
                    raise StartError(f"{proc.name} exited:\n{proc.log_tail()}")
                if is_ready(proc, session):
                    pending.remove(proc)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in pending)
                raise StartError(
                    f"not ready after {timeout}s: {[p.name for p in pending]}\n{tails}"
                )
            if pending:
                time.sleep(0.05)

    # -- stopping ----------------------------------------------------------------------

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if proc.popen is None:
            return None
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.popen.pid, sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
        if proc._log is not None:
            proc._log.close()
            proc._log = None
        return proc.popen.returncode

    def kill(self, proc: Proc) -> None:
        self.stop(proc, signal.SIGKILL)

    def stop_all(self) -> None:
        # Nodes first, so none of them logs errors about grapes vanishing under it.
        for proc in sorted(self.procs, key=lambda p: p.kind != "node"):
            self.stop(proc)


def is_ready(proc: Proc, session: requests.Session | None = None) -> bool:
    http = session or requests
    try:
        if proc.kind == "grape":
            resp = http.post(
                f"{proc.url}/lookup", json={"rid": "ready", "data": "ready"}, timeout=1
            )
        else:
            resp = http.get(f"{proc.url}/health", timeout=1)
    except requests.RequestException:
        return False
    return resp.status_code == 200


def local_network(
    cluster: Cluster,
    grapes: int,
    nodes: int,
    dht_ports: Sequence[int],
    api_ports: Sequence[int],
    node_ports: Sequence[int],
    data_root: Path,
    node_extra: Sequence[str] = (),
    grape_extra: Sequence[str] = (),
    rpc_ports: Sequence[int] | None = None,
) -> tuple[list[Proc], list[Proc]]:
    """Grapes bootstrapped to each other, then node i on grape i (mod the grape count)."""
    grape_procs = [
        cluster.grape(
            dht_ports[i],
            api_ports[i],
            [p for p in dht_ports[:grapes] if p != dht_ports[i]],
            grape_extra,
        )
        for i in range(grapes)
    ]
    cluster.wait_ready(grape_procs)
    if rpc_ports is None:  # free ones, none of them a REST port still to be bound
        rpc_ports = [p for p in free_ports(2 * nodes) if p not in node_ports][:nodes]
    node_procs = [
        cluster.node(
            node_ports[i],
            grape_procs[i % grapes].url,
            data_root / f"node-{node_ports[i]}",
            node_extra,
            rpc_port=rpc_ports[i],
        )
        for i in range(nodes)
    ]
    cluster.wait_ready(node_procs)
    return grape_procs, node_procs


def busy_ports(udp: Sequence[int], tcp: Sequence[int], host: str = "127.0.0.1") -> list[str]:
    """Which of these ports something else holds, as ``"<port>/<proto>"``.

    Checked by binding each one, the way the processes will: a port another network
    holds makes them fail, while a health check on it would reach that network and
    look like success.
    """
    busy = []
    for kind, proto, ports in ((socket.SOCK_DGRAM, "udp", udp), (socket.SOCK_STREAM, "tcp", tcp)):
        for port in ports:
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    busy.append(f"{port}/{proto}")
    return busy


def start_all(grapes: int = 3, nodes: int = 3, data_root: Path = Path("data")) -> int:
    """The foreground network of ``make start-all``; Ctrl-C (or SIGTERM) stops every process."""
    if grapes < 1:
        raise SystemExit("start-all needs at least one grape")
    dht_ports = [GRAPE_DHT_BASE + i for i in range(grapes)]
    api_ports = [GRAPE_API_BASE + i for i in range(grapes)]
    node_ports = [NODE_BASE + i for i in range(nodes)]
    rpc_ports = [port + RPC_PORT_OFFSET for port in node_ports]
    busy = busy_ports(dht_ports, api_ports + node_ports + rpc_ports)
    if busy:
        print(
            f"start-all: port {', '.join(busy)} already in use (another start-all running?); "
            "nothing was started",
            file=sys.stderr,
        )
        return 2
    data_root.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(data_root / "logs")
    stop = _install_stop_handlers()
    try:
        grape_procs, node_procs = local_network(
            cluster,
            grapes,
            nodes,
            dht_ports,
            api_ports,
            node_ports,
            data_root,
            rpc_ports=rpc_ports,
        )
        _print_table(grape_procs, node_procs, cluster.workdir)
        while not stop():
            for proc in cluster.procs:
                if not proc.alive:
                    print(f"{proc.name} exited unexpectedly; see {proc.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    except StartError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        print("stopping…", file=sys.stderr)
        cluster.stop_all()


def _install_stop_handlers() -> Callable[[], bool]:
    flag = {"stop": False}

    def handler(signum: int, frame: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: flag["stop"]


def _print_table(grape_procs: list[Proc], node_procs: list[Proc], logs: Path) -> None:
    rows = [("grape", p.name, p.url) for p in grape_procs]
    rows += [("node", p.name, f"{p.url}  (Grenache RPC {p.rpc})") for p in node_procs]
    width = max(len(r[1]) for r in rows)
    print("\np2p-offers local network is ready:\n")
    for kind, name, url in rows:
        print(f"  {kind:<6} {name:<{width}}  {url}")
    print(f"\n  logs in {logs}/   — Ctrl-C stops everything\n", flush=True)
