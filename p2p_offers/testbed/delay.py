"""A user-space delay line for the test bed's switch: NFQUEUE over raw netlink.

This kernel has no ``netem``, so delay and jitter are made here: an iptables
rule in the switch namespace hands every forwarded IPv4 packet to queue
``--queue``; this process holds each one for its delay and then tells the
kernel to let it through (an ``NF_ACCEPT`` verdict). The kernel keeps the
packet meanwhile; only its id and IP header (``COPY_RANGE`` bytes) come up.

Why raw netlink rather than the ``NetfilterQueue`` package: that package ships
no wheels, so it would need a C compiler and ``libnetfilter-queue-dev`` on every
machine, for four message layouts that fit in this file.

Each packet crosses the switch once, so its one-way delay is ``rtt/2`` plus a
uniform jitter in ``[-jitter/2, +jitter/2]``: a round trip then lies within
``rtt ± jitter`` and its median is ``rtt``. Packets between the same two
addresses leave in the order they came (a packet never overtakes the one
before it), as on a real path; TCP would otherwise see reordering on every
burst. Loss is not done here: iptables' ``statistic`` match drops before the
queue, which costs no context switch.

Run as ``python -m p2p_offers.testbed.delay --queue 0 --rtt-ms 80 --jitter-ms 10``
inside the switch namespace; it stops on SIGTERM/SIGINT (packets still held are
let through, so nothing is stuck in the kernel).
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_PAYLOAD = 1, 2, 10
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
NFGEN = struct.Struct("!BBH")  # family, version, queue number (network order)
ATTR = struct.Struct("=HH")  # len, type
COPY_RANGE = 20  # the IPv4 header: enough for the source and destination address
QUEUE_MAXLEN = 20_000  # packets the kernel holds for us at once
RCVBUF = 8 << 20
REALTIME_PRIORITY = 50  # below the kernel's own threads (which use up to 99)


def _attr(kind: int, payload: bytes) -> bytes:
    body = ATTR.pack(ATTR.size + len(payload), kind) + payload
    return body + b"\0" * (-len(body) % 4)


def _message(
    kind: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0
) -> bytes:
    body = NFGEN.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found = {}
    while offset + ATTR.size <= end:
        length, kind = ATTR.unpack_from(data, offset)
        if length < ATTR.size:
            break
        found[kind & 0x7FFF] = data[offset + ATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


class Queue:
    """One bound NFQUEUE: packets in (id, IP header), verdicts out."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.bind((0, 0))
        kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_CONFIG
        self._config(kind, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)), 1)
        params = struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET)
        self._config(kind, _attr(NFQA_CFG_PARAMS, params), 2)
        self._config(kind, _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)), 3)
        self.sock.setblocking(False)

    def _config(self, kind: int, attrs: bytes, seq: int) -> None:
        """Send one config message and wait for its ack: a refused bind must fail loudly."""
        self.sock.send(_message(kind, self.number, attrs, NLM_F_REQUEST | NLM_F_ACK, seq))
        data = self.sock.recv(65536)
        _, mtype, _, _, _ = NLMSG_HDR.unpack_from(data)
        if mtype == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", data, NLMSG_HDR.size)
            if error != 0:
                raise OSError(-error, f"nfqueue config {seq}: {os.strerror(-error)}")

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[tuple[int, bytes]]:
        """Every packet waiting now, as (packet id, first bytes); [] when none."""
        packets: list[tuple[int, bytes]] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return packets
            except OSError:  # ENOBUFS: the kernel dropped some; they count as loss
                continue
            offset = 0
            while offset + NLMSG_HDR.size <= len(data):
                length, mtype, _, _, _ = NLMSG_HDR.unpack_from(data, offset)
                if length < NLMSG_HDR.size:
                    break
                if mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    start = offset + NLMSG_HDR.size + NFGEN.size
                    attrs = _attrs(data, start, offset + length)
                    header = attrs.get(NFQA_PACKET_HDR)
                    if header is not None:
                        (packet_id,) = struct.unpack_from("!I", header)
                        packets.append((packet_id, attrs.get(NFQA_PAYLOAD, b"")))
                offset += (length + 3) & ~3

    def accept(self, packet_id: int) -> None:
        kind = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
        try:
            self.sock.send(_message(kind, self.number, verdict))
        except BlockingIOError:
            select.select([], [self.sock], [], 1.0)
            self.sock.send(_message(kind, self.number, verdict))


class DelayLine:
    """When each packet may leave: base delay plus jitter, never before its predecessor."""

    def __init__(self, one_way_s: float, jitter_s: float, rng: random.Random | None = None):
        self.one_way_s = one_way_s
        self.jitter_s = jitter_s
        self.rng = rng or random.Random()
        self._last: dict[bytes, float] = {}

    def release_at(self, now: float, header: bytes) -> float:
        delay = self.one_way_s + self.rng.uniform(-self.jitter_s / 2, self.jitter_s / 2)
        path = header[12:20]  # source and destination address
        due = max(now + max(delay, 0.0), self._last.get(path, 0.0))
        self._last[path] = due
        if len(self._last) > 100_000:
            self._last = {k: v for k, v in self._last.items() if v > now}
        return due


class Lateness:
    """How late packets left against their due time, in whole ms: the delay line's own error.

    A bucket per millisecond (bounded: 10 s and more share the last), so p99 under load
    can be told apart from the network's: the measured RTT minus this is the rest.
    """

    LAST = 10_000

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}

    def add(self, late_s: float) -> None:
        ms = min(self.LAST, max(0, int(late_s * 1000)))
        self.buckets[ms] = self.buckets.get(ms, 0) + 1

    def quantile_ms(self, q: float) -> int:
        total = sum(self.buckets.values())
        seen = 0
        for ms in sorted(self.buckets):
            seen += self.buckets[ms]
            if seen >= q * total:
                return ms
        return 0

    def summary(self) -> str:
        return (
            f"late p50 {self.quantile_ms(0.5)} ms, p99 {self.quantile_ms(0.99)} ms, "
            f"max {max(self.buckets, default=0)} ms"
        )


def serve(queue: Queue, line: DelayLine, stopping: list[bool], late: Lateness | None = None) -> int:
    """Hold and release packets until ``stopping``; how many packets went through."""
    held: list[tuple[float, int, int]] = []
    count = 0
    late = late if late is not None else Lateness()
    while not stopping:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
        readable, _, _ = select.select([queue], [], [], timeout)
        now = time.monotonic()
        if readable:
            for packet_id, header in queue.receive():
                heapq.heappush(held, (line.release_at(now, header), count, packet_id))
                count += 1
        now = time.monotonic()
        while held and held[0][0] <= now:
            due, _, packet_id = heapq.heappop(held)
            late.add(now - due)
            queue.accept(packet_id)
    for _, _, packet_id in held:
        queue.accept(packet_id)
    return count


def prefer_cpu() -> str:
    """Run before everything else on the machine: a delay line that waits for a CPU adds its
    wait to every packet. Real-time FIFO when allowed (root), else the highest nice."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
        return "SCHED_FIFO"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -20)
        return "nice -20"
    except OSError:
        return "normal priority"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2p_offers.testbed.delay", description=__doc__)
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.rtt_ms < 0 or args.jitter_ms < 0 or args.jitter_ms > args.rtt_ms:
        parser.error("need 0 <= jitter-ms <= rtt-ms")
    stopping: list[bool] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    priority = prefer_cpu()
    queue = Queue(args.queue)
    print(
        f"delay: queue {args.queue} bound, rtt {args.rtt_ms} ms ± {args.jitter_ms}, {priority}",
        flush=True,
    )
    line = DelayLine(args.rtt_ms / 2000, args.jitter_ms / 1000)
    late = Lateness()
    count = serve(queue, line, stopping, late)
    print(f"delay: stopped after {count} packets, {late.summary()}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
