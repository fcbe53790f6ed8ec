"""The test bed itself (issue 8.1): namespaces, cleanup, and the emulated WAN's own accuracy.

These need root and iproute2/iptables (``.ci/run`` installs them); elsewhere they skip.
The RTT check is a check of the emulator's configuration (what was asked is what
packets get), not a speed claim: medians over 20 sequential probes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from p2p_offers.testbed import Conditions, TestBed, missing_requirements
from p2p_offers.testbed.bed import PREFIX, SWITCH
from p2p_offers.testbed.netns import names, run
from p2p_offers.testbed.probe import measure_rtt

REASON = missing_requirements()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"test bed: {REASON}")


def ours() -> list[str]:
    return names(PREFIX)


def test_leftovers_of_a_killed_run_are_removed_at_the_next_start(tmp_path):
    """A run killed with SIGKILL leaves namespaces and processes; the next start removes both."""
    stale = f"{PREFIX}h7"
    run(["ip", "netns", "add", stale])
    sleeper = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "300"])
    try:
        time.sleep(0.2)
        with TestBed(1, workdir=tmp_path) as bed:
            assert sleeper.wait(5) == -signal.SIGKILL
            assert sorted(ours()) == sorted([SWITCH, f"{PREFIX}ctl", bed.hosts[0].ns])
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert ours() == []


def test_a_killed_testbed_process_is_cleaned_up_by_the_next(tmp_path):
    """The real thing: ``p2p-offers testbed`` killed with SIGKILL, then a new test bed."""
    argv = [sys.executable, "-m", "p2p_offers", "testbed", "--hosts", "1"]
    argv += ["--rtt-ms", "10", "--data-dir", str(tmp_path / "killed")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the table is printed once the node is healthy
            if "Ctrl-C" in line:
                break
        else:
            pytest.fail(f"testbed exited {proc.wait()} before it was ready")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert f"{PREFIX}h1" in ours()  # SIGKILL: no chance to clean up
        with TestBed(1, workdir=tmp_path / "next"):
            pass
        assert ours() == []
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigint_stops_everything_and_removes_the_namespaces(tmp_path):
    argv = [sys.executable, "-m", "p2p_offers", "testbed", "--hosts", "2"]
    argv += ["--data-dir", str(tmp_path / "bed")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if "Ctrl-C" in line:
            break
    text = "".join(out)
    assert "ip netns exec p2pt-h1 curl 10.77.0.11:4000/health" in text, text
    pids = [int(p) for p in run(["ip", "netns", "pids", f"{PREFIX}h2"]).stdout.split()]
    assert len(pids) == 2  # its grape and its node
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert ours() == []
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}")


def test_hosts_listen_on_their_own_address_only(tmp_path):
    """Nothing binds 127.0.0.1 (or 0.0.0.0): an address only reachable locally must fail."""
    with TestBed(2, workdir=tmp_path) as bed:
        bed.start_network()
        for host in bed.hosts:
            sockets = run(bed.exec_argv(host, ["ss", "-Hlntu"])).stdout.split("\n")
            local = [line.split()[4] for line in sockets if line.strip()]
            assert len(local) == 4, local  # grape UDP + grape HTTP + node REST + node RPC
            assert all(addr.startswith(host.addr + ":") for addr in local), local
        routes = run(bed.exec_argv(bed.hosts[0], ["ip", "route"])).stdout
        assert "default" not in routes and "10.77.0.0/24" in routes


def test_emulated_rtt_is_within_ten_percent_of_what_was_asked(tmp_path):
    with TestBed(2, Conditions(rtt_ms=80, jitter_ms=10), workdir=tmp_path) as bed:
        a, b = bed.hosts
        sample = measure_rtt(a.ns, b.ns, b.addr, count=20)
    assert sample.received == 20
    assert 72 <= sample.median_ms <= 88, sample.rtts_ms
    assert min(sample.rtts_ms) >= 80 - 10  # never faster than the shortest path asked


def test_no_delay_line_no_delay(tmp_path):
    """Without --rtt-ms the bridge is a LAN: the emulator adds nothing."""
    with TestBed(2, workdir=tmp_path) as bed:
        a, b = bed.hosts
        sample = measure_rtt(a.ns, b.ns, b.addr, count=20)
    assert sample.received == 20 and sample.median_ms < 20


def test_loss_drops_about_the_share_asked(tmp_path):
    """20 % per direction: a round trip survives with 0.8² = 64 % (bounds are ± 4.5 sd)."""
    with TestBed(2, Conditions(loss_pct=20), workdir=tmp_path) as bed:
        a, b = bed.hosts
        sample = measure_rtt(a.ns, b.ns, b.addr, count=200, interval_s=0.001, timeout_s=0.02)
        dropped = bed.switch_counters()["dropped"]
    assert 0.49 <= sample.received / sample.sent <= 0.79, sample.received
    assert dropped > 0  # by the switch's rule, not by chance


def test_partition_cuts_between_groups_and_heal_restores(tmp_path):
    with TestBed(3, workdir=tmp_path) as bed:
        h1, h2, h3 = bed.hosts
        bed.partition([h1], [h2, h3])
        cut = measure_rtt(h1.ns, h2.ns, h2.addr, count=5, interval_s=0, timeout_s=0.1)
        same_side = measure_rtt(h2.ns, h3.ns, h3.addr, count=5, interval_s=0)
        with bed.control():  # the control port is never cut
            control = measure_rtt(f"{PREFIX}ctl", h1.ns, h1.addr, count=5, interval_s=0)
        bed.heal()
        healed = measure_rtt(h1.ns, h2.ns, h2.addr, count=5, interval_s=0)
    assert (cut.received, same_side.received, control.received, healed.received) == (0, 5, 5, 5)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--hosts", "0"], "hosts must be 1 to 200"),
        (["--rtt-ms", "10", "--jitter-ms", "20"], "need 0 <= jitter <= rtt"),
        (["--loss-pct", "100"], "loss must be 0 to < 100 %"),
    ],
)
def test_bad_conditions_are_refused_before_anything_is_built(tmp_path, flags, message):
    argv = [sys.executable, "-m", "p2p_offers", "testbed", *flags, "--data-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert ours() == []


def test_sigint_while_starting_tears_down_even_if_inherited_as_ignored(tmp_path):
    """A shell starts background jobs with SIGINT ignored; the test bed must still obey it."""
    argv = [sys.executable, "-m", "p2p_offers", "testbed", "--hosts", "2"]
    argv += ["--data-dir", str(tmp_path / "bed")]

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, preexec_fn=ignore_sigint)
    try:
        for _ in range(600):
            if f"{PREFIX}h2" in ours():
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) in (0, 130)  # 130 when it was still starting
        assert ours() == []
    finally:
        if proc.poll() is None:
            proc.kill()
