"""Measure the round trip between two test bed hosts with a UDP echo: the emulator's own check.

The echo socket is made in one host's namespace and the probing socket in the
other's (``netns.inside``), both served from threads of this process, so a probe
crosses the switch twice, exactly like a grape's RPC and its reply.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import threading
import time
from dataclasses import dataclass

from p2p_offers.testbed import netns

ECHO_PORT = 9099
PROBE = struct.Struct("!16sd")  # nonce, send time


@dataclass(frozen=True)
class RttSample:
    sent: int
    rtts_ms: list[float]

    @property
    def received(self) -> int:
        return len(self.rtts_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.rtts_ms) if self.rtts_ms else float("nan")

    def quantile_ms(self, q: float) -> float:
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Echo:
    """A UDP echo on ``addr`` inside namespace ``ns``, answered by a daemon thread until closed."""

    def __init__(self, ns: str, addr: str, port: int = ECHO_PORT) -> None:
        with netns.inside(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, port))
        self.sock.settimeout(0.2)
        self.address = (addr, port)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True, name="echo")
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                data, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.sock.sendto(data, peer)

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


def measure_rtt(
    src_ns: str,
    dst_ns: str,
    dst_addr: str,
    count: int = 20,
    interval_s: float = 0.05,
    timeout_s: float = 2.0,
) -> RttSample:
    """``count`` sequential probes from ``src_ns`` to an echo in ``dst_ns``; lost ones are left out.

    Sequential (one in flight) so each probe measures the path, not the queue of
    the one before it; a reply that comes after its timeout is discarded.
    """
    echo = Echo(dst_ns, dst_addr)
    try:
        with netns.inside(src_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            rtts = []
            for _ in range(count):
                nonce = os.urandom(16)
                start = time.monotonic()
                sock.sendto(PROBE.pack(nonce, start), echo.address)
                deadline = start + timeout_s
                while (left := deadline - time.monotonic()) > 0:
                    sock.settimeout(left)
                    try:
                        data = sock.recv(2048)
                    except TimeoutError:
                        break
                    if len(data) == PROBE.size and PROBE.unpack(data)[0] == nonce:
                        rtts.append((time.monotonic() - start) * 1000)
                        break
                time.sleep(interval_s)
            return RttSample(count, rtts)
    finally:
        echo.close()
