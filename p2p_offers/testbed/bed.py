"""A test bed of real hosts: one network namespace per host on a bridge, WAN conditions between.

Layout (every name starts with ``PREFIX``, so a killed run's leftovers are found
and removed by the next start)::

    p2pt-h1 (10.77.0.11) ─┐
    p2pt-h2 (10.77.0.12) ─┼─ br0 in p2pt-sw ── iptables FORWARD: cut / loss / NFQUEUE delay
    ...                   │
    p2pt-ctl (10.77.0.2) ─┘  the test bed's own port: health checks, tests, benches

Each host runs one grape and one node bound to its own address, started with
``ip netns exec``. The 10.77.0.0/24 range exists only inside these namespaces:
no namespace has a default route, the switch has no address at all and the root
namespace none on this network, so nothing is routed out. The control namespace's
traffic skips the emulated conditions (it stands for the person at the keyboard,
not for a WAN peer) and is never cut by a partition.

Delay and jitter come from ``p2p_offers.testbed.delay`` (a user-space NFQUEUE
delay line in the switch; the kernel has no netem), loss from iptables'
``statistic`` match, partitions from DROP rules between groups. See docs/testbed.md.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from p2p_offers.cluster import Cluster, Proc
from p2p_offers.testbed import netns
from p2p_offers.testbed.netns import NetnsError, in_ns, run

PREFIX = "p2pt-"
SWITCH = PREFIX + "sw"
CONTROL = PREFIX + "ctl"
SUBNET = "10.77.0"
CONTROL_ADDR = f"{SUBNET}.2"
FIRST_HOST = 11  # host i (1-based) is 10.77.0.(10 + i)
MAX_HOSTS = 200
LOCK_PATH = Path("/run/p2p-offers-testbed.lock")
CUT_CHAIN = "P2PT-CUT"
QUEUE = 0
GRAPE_DHT, GRAPE_API, NODE_PORT = 20001, 30001, 4000
SEEDS = 3  # every grape bootstraps to the grapes of the first few hosts
# The kernel's ARP table is one for all namespaces, and its limits live only in the root
# namespace: every host keeps an entry per host it talks to, so the bed needs ~N² of them.
NEIGH_SYSCTL = Path("/proc/sys/net/ipv4/neigh/default")


class TestBedError(RuntimeError):
    """The test bed could not be built or a process on it failed to start."""


@dataclass(frozen=True)
class Conditions:
    """What the emulated WAN does to every packet between two hosts."""

    rtt_ms: float = 0.0  # round trip between any two hosts (each direction gets half)
    jitter_ms: float = 0.0  # a round trip lies within rtt ± jitter
    loss_pct: float = 0.0  # chance that one packet, one direction, is dropped

    def check(self) -> None:
        if not 0 <= self.rtt_ms <= 10_000 or not 0 <= self.jitter_ms <= self.rtt_ms:
            raise ValueError("need 0 <= jitter <= rtt <= 10000 ms")
        if not 0 <= self.loss_pct < 100:
            raise ValueError("loss must be 0 to < 100 %")


@dataclass
class Host:
    index: int  # 1-based
    ns: str
    addr: str
    grape: Proc | None = None
    node: Proc | None = None

    @property
    def grape_url(self) -> str:
        return f"http://{self.addr}:{GRAPE_API}"

    @property
    def node_url(self) -> str:
        return f"http://{self.addr}:{NODE_PORT}"

    @property
    def dht(self) -> str:
        return f"{self.addr}:{GRAPE_DHT}"


def host_addr(index: int) -> str:
    return f"{SUBNET}.{FIRST_HOST - 1 + index}"


@dataclass
class TestBed:
    """N hosts on an emulated WAN; ``with TestBed(...) as bed`` builds it and tears it down."""

    hosts_count: int
    conditions: Conditions = field(default_factory=Conditions)
    workdir: Path = Path("testbed-data")
    hosts: list[Host] = field(default_factory=list)
    cluster: Cluster | None = None
    _delay: subprocess.Popen[bytes] | None = None
    _delay_log: IO[bytes] | None = None
    _lock: IO[str] | None = None
    _neigh_saved: dict[str, str] = field(default_factory=dict)

    __test__ = False  # not a pytest class, despite the name

    def __enter__(self) -> TestBed:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- building ------------------------------------------------------------------------------

    def up(self, lock_wait_s: float = 120.0) -> None:
        """Namespaces, bridge, addresses, emulation rules and delay line; no grapes yet."""
        reason = netns.missing_requirements()
        if reason:
            raise TestBedError(reason)
        if not 1 <= self.hosts_count <= MAX_HOSTS:
            raise TestBedError(f"hosts must be 1 to {MAX_HOSTS}")
        self.conditions.check()
        self._take_lock(lock_wait_s)
        atexit.register(self.down)
        _stop_on_sigterm()
        try:
            cleanup_leftovers()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.cluster = Cluster(self.workdir / "logs")
            self._neighbour_room()
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        run(["ip", "netns", "add", SWITCH])
        sw = ["ip", "-n", SWITCH]
        run([*sw, "link", "set", "lo", "up"])
        run([*sw, "link", "add", "br0", "type", "bridge"])
        run([*sw, "link", "set", "br0", "up"])
        self.hosts = [
            Host(i, f"{PREFIX}h{i}", host_addr(i)) for i in range(1, self.hosts_count + 1)
        ]
        ports = [(CONTROL, "vctl", CONTROL_ADDR)]
        ports += [(h.ns, f"vh{h.index}", h.addr) for h in self.hosts]
        for ns, port, addr in ports:
            run(["ip", "netns", "add", ns])
            run([*sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
            run([*sw, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self._rules()

    def _neighbour_room(self) -> None:
        """Raise the machine-wide ARP table limits to what N hosts need (restored in down()).

        Each namespace holds a neighbour entry per address it talks to, all counted in one
        kernel table whose default hard limit (``gc_thresh3``) is 1,024: 30 hosts need
        ~930 and fit, 50 need ~2,550 and overflow ("neighbor table overflow!" in dmesg), so
        connections fail with "No route to host" or hang and 50 hosts never became ready.
        """
        need = (self.hosts_count + 1) ** 2 + 64  # every host pair, the control port, slack
        wanted = {"gc_thresh1": need // 2, "gc_thresh2": need, "gc_thresh3": 2 * need}
        for name, value in wanted.items():
            path = NEIGH_SYSCTL / name
            try:
                current = path.read_text().strip()
                if int(current) < value:
                    path.write_text(str(value))
                    self._neigh_saved[name] = current
            except (OSError, ValueError) as exc:
                raise TestBedError(f"cannot raise {path} to {value}: {exc}") from exc

    def _restore_neighbour_limits(self) -> None:
        for name, value in self._neigh_saved.items():
            with contextlib.suppress(OSError):
                (NEIGH_SYSCTL / name).write_text(value)
        self._neigh_saved.clear()

    def _rules(self) -> None:
        """Bridged packets through iptables: control exempt, cuts, loss, then the delay line."""
        # not the sysctl tool: procps need not be installed; /proc/sys/net is per namespace
        bridged = "echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"
        run(in_ns(SWITCH, ["sh", "-c", bridged]))
        ipt = in_ns(SWITCH, ["iptables", "-w"])
        run([*ipt, "-N", CUT_CHAIN])
        run([*ipt, "-A", "FORWARD", "-s", CONTROL_ADDR, "-j", "ACCEPT"])
        run([*ipt, "-A", "FORWARD", "-d", CONTROL_ADDR, "-j", "ACCEPT"])
        run([*ipt, "-A", "FORWARD", "-j", CUT_CHAIN])
        if self.conditions.loss_pct > 0:
            probability = f"{self.conditions.loss_pct / 100:.6f}"
            statistic = ["-m", "statistic", "--mode", "random", "--probability", probability]
            run([*ipt, "-A", "FORWARD", *statistic, "-j", "DROP"])
        if self.conditions.rtt_ms > 0:
            self._start_delay()
            run([*ipt, "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE)])

    def _start_delay(self) -> None:
        log_path = self.workdir / "delay.log"
        self._delay_log = open(log_path, "wb")  # noqa: SIM115 - closed in down()
        argv = [sys.executable, "-m", "p2p_offers.testbed.delay", "--queue", str(QUEUE)]
        argv += ["--rtt-ms", str(self.conditions.rtt_ms)]
        argv += ["--jitter-ms", str(self.conditions.jitter_ms)]
        self._delay = subprocess.Popen(
            in_ns(SWITCH, argv),
            stdout=self._delay_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        deadline = time.monotonic() + 10
        while b"bound" not in log_path.read_bytes():
            if self._delay.poll() is not None or time.monotonic() > deadline:
                raise TestBedError(f"delay line did not start:\n{log_path.read_text()}")
            time.sleep(0.02)

    # -- grapes and nodes ----------------------------------------------------------------------

    def start_network(
        self,
        nodes: bool = True,
        grape_extra: Sequence[str] = (),
        node_extra: Sequence[str] = (),
        timeout: float = 60.0,
    ) -> None:
        """One grape per host (bootstrapped to the first hosts' grapes), then one node each."""
        assert self.cluster is not None, "up() first"
        seeds = [h.dht for h in self.hosts[:SEEDS]]
        for host in self.hosts:
            boot = [s for s in seeds if s != host.dht]
            extra = ["--bn", ",".join(boot)] if boot else []
            host.grape = self.cluster.grape(
                GRAPE_DHT,
                GRAPE_API,
                (),
                [*extra, *grape_extra],
                host.addr,
                in_ns(host.ns, []),
                f"{host.ns}-grape",
            )
        self.wait_ready([h.grape for h in self.hosts if h.grape], timeout)
        if nodes:
            for host in self.hosts:
                self.start_node(host, node_extra, wait=False)
            self.wait_ready([h.node for h in self.hosts if h.node], timeout)

    def start_node(self, host: Host, extra: Sequence[str] = (), wait: bool = True) -> Proc:
        assert self.cluster is not None, "up() first"
        data = self.workdir / host.ns / "node"
        host.node = self.cluster.node(
            NODE_PORT, host.grape_url, data, extra, host.addr, in_ns(host.ns, []), f"{host.ns}-node"
        )
        if wait:
            self.wait_ready([host.node])
        return host.node

    def wait_ready(self, procs: Sequence[Proc], timeout: float = 60.0) -> None:
        """Health checks from the control namespace: over the bridge, as a person would."""
        assert self.cluster is not None
        with self.control():
            self.cluster.wait_ready(procs, timeout)

    # -- reaching in ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def control(self) -> Iterator[None]:
        """This thread in the control namespace: it reaches every host, undelayed."""
        with netns.inside(CONTROL):
            yield

    def inside(self, host: Host) -> contextlib.AbstractContextManager[None]:
        """This thread in ``host``'s namespace: its traffic to other hosts crosses the WAN."""
        return netns.inside(host.ns)

    def exec_argv(self, host: Host, argv: Sequence[str]) -> list[str]:
        return in_ns(host.ns, argv)

    # -- partitions ----------------------------------------------------------------------------

    def partition(self, *groups: Sequence[Host]) -> None:
        """Cut every link between hosts of different groups (both directions); see ``heal``."""
        ipt = in_ns(SWITCH, ["iptables", "-w", "-A", CUT_CHAIN])
        for i, group in enumerate(groups):
            for other in groups[i + 1 :]:
                for a in group:
                    for b in other:
                        run([*ipt, "-s", a.addr, "-d", b.addr, "-j", "DROP"])
                        run([*ipt, "-s", b.addr, "-d", a.addr, "-j", "DROP"])

    def heal(self) -> None:
        run(in_ns(SWITCH, ["iptables", "-w", "-F", CUT_CHAIN]))

    # -- what the switch saw -------------------------------------------------------------------

    def switch_counters(self) -> dict[str, int]:
        """Packets the switch dropped (loss, cuts) and handed to the delay line, so far."""
        out = run(in_ns(SWITCH, ["iptables", "-w", "-L", "FORWARD", "-v", "-x", "-n"])).stdout
        counts = {"dropped": 0, "delayed": 0}
        for line in out.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[0].isdigit():
                kind = {"DROP": "dropped", "NFQUEUE": "delayed"}.get(fields[2])
                if kind:
                    counts[kind] += int(fields[0])
        return counts

    @property
    def delay_pid(self) -> int | None:
        """The delay line's process id (for CPU accounting), None without one."""
        return self._delay.pid if self._delay is not None else None

    # -- tearing down --------------------------------------------------------------------------

    def down(self) -> None:
        """Stop our processes (by PID), delete our namespaces; safe to call twice."""
        if self.cluster is not None:
            # Each kind is told to stop all at once, so its processes wind down together:
            # one by one, 100 took 150 s (a node flushes and joins threads for seconds).
            # Nodes before grapes, as in stop_all().
            for kind in ("node", "grape"):
                procs = [p for p in self.cluster.procs if p.kind == kind]
                for proc in procs:
                    if proc.alive and proc.popen is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.popen.pid, signal.SIGTERM)
                for proc in procs:
                    self.cluster.stop(proc)
            self.cluster.stop_all()
        if self._delay is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._delay.pid, signal.SIGTERM)
            try:
                self._delay.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._delay.pid, signal.SIGKILL)
                self._delay.wait()
            self._delay = None
        if self._delay_log is not None:
            self._delay_log.close()
            self._delay_log = None
        if self._lock is not None:
            cleanup_leftovers()
            self._restore_neighbour_limits()
            self._lock.close()  # releases the flock
            self._lock = None
        with contextlib.suppress(ValueError):
            atexit.unregister(self.down)

    def _take_lock(self, wait_s: float) -> None:
        """One test bed at a time on a machine: the names and addresses are fixed."""
        lock = open(LOCK_PATH, "a+")  # noqa: SIM115 - held until down()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.close()
                    raise TestBedError(f"another test bed holds {LOCK_PATH}") from None
                time.sleep(0.2)
        self._lock = lock

    # -- for people ----------------------------------------------------------------------------

    def howto(self) -> str:
        c = self.conditions
        lines = [
            f"p2p-offers test bed: {len(self.hosts)} hosts, rtt {c.rtt_ms:g} ms "
            f"± {c.jitter_ms:g} ms, loss {c.loss_pct:g} % per packet",
            "",
        ]
        for h in self.hosts:
            lines.append(f"  {h.ns:<9} {h.addr:<12} grape {h.grape_url}  node {h.node_url}")
        first = self.hosts[0]
        lines += [
            "",
            "reach a host from inside its namespace (its traffic to others crosses the WAN):",
            f"  ip netns exec {first.ns} curl {first.addr}:{NODE_PORT}/health",
            f"  ip netns exec {first.ns} curl -s -X POST {first.addr}:{GRAPE_API}/lookup "
            '-d \'{"data":"p2p_offers:node"}\'',
            f"or from the control namespace {CONTROL} ({CONTROL_ADDR}, no delay or loss):",
            f"  ip netns exec {CONTROL} curl {self.hosts[-1].addr}:{NODE_PORT}/offers",
        ]
        if self.cluster is not None:
            lines.append(f"logs in {self.cluster.workdir}/ — Ctrl-C stops and removes everything")
        return "\n".join(lines)


def cleanup_leftovers() -> list[str]:
    """Remove namespaces of ours (``PREFIX``) a killed run left, and the processes in them.

    Called with the lock held, so no live test bed owns them; every process in
    them was started by a test bed (nothing else enters these namespaces).
    """
    removed = netns.names(PREFIX)
    for ns in removed:
        for pid in netns.pids(ns):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for ns in removed:
        deadline = time.monotonic() + 5
        while netns.pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(NetnsError):
            run(["ip", "netns", "del", ns])
    return removed


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C (finally blocks and atexit run) instead of killing outright."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread: leave it

            def raise_interrupt(signum: int, frame: object) -> None:
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, raise_interrupt)


def run_foreground(hosts: int, conditions: Conditions, workdir: Path) -> int:
    """``p2p-offers testbed``: build, start a grape and a node per host, wait for Ctrl-C."""
    bed = TestBed(hosts, conditions, workdir)
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Until the network is up, Ctrl-C and SIGTERM interrupt the start (and tear down); set
    # here because a shell starts background jobs with SIGINT ignored, and Python keeps that.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        bed.up()
        bed.start_network()
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        print(bed.howto(), flush=True)
        while not stopping:
            for proc in bed.cluster.procs if bed.cluster else []:
                if not proc.alive:
                    print(f"{proc.name} exited; see {proc.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0
    except KeyboardInterrupt:
        return 130
    except (TestBedError, NetnsError, ValueError) as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a StartError carries the failing process's log tail
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("testbed: stopping and removing namespaces…", file=sys.stderr, flush=True)
        bed.down()
