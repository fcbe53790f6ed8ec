"""RFC 6298 retransmission timeouts (p2p_offers.rtt) and their use by the grape's RPCs."""

from __future__ import annotations

import asyncio
import math

import msgpack
import pytest
from kademlia.node import Node

from p2p_offers.grape.protocol import REQUEST, RESPONSE, GrapeProtocol
from p2p_offers.grape.storage import PeerTable, RecordStorage
from p2p_offers.rtt import Rto, RtoTable


def test_first_sample_sets_srtt_and_half_of_it_as_variance():
    rto = Rto(min_s=0.01, max_s=10)
    assert rto.timeout == 1.0  # no sample yet: the initial RTO
    rto.sample(0.3)
    assert (rto.srtt, rto.rttvar) == (0.3, 0.15)
    assert rto.timeout == pytest.approx(0.3 + 4 * 0.15)


def test_later_samples_smooth_with_alpha_and_beta():
    rto = Rto(min_s=0.01, max_s=10)
    rto.sample(0.1)
    rto.sample(0.2)
    assert rto.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert rto.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)
    for _ in range(200):  # a steady path: variance decays, RTO approaches the RTT
        rto.sample(0.08)
    assert rto.timeout == pytest.approx(0.08, abs=0.002)


def test_bounds_hold_both_ways():
    rto = Rto(min_s=0.25, max_s=2.0)
    rto.sample(0.001)  # loopback: the floor, as the fixed --rpc-timeout was
    assert rto.timeout == 0.25
    rto.sample(5.0)
    assert rto.timeout == 2.0


def test_timeouts_double_up_to_the_ceiling_and_a_sample_resets():
    rto = Rto(min_s=0.25, max_s=2.0)
    rto.sample(0.001)
    seen = []
    for _ in range(5):
        rto.timed_out()
        seen.append(rto.timeout)
    assert seen == [0.5, 1.0, 2.0, 2.0, 2.0]
    rto.sample(0.001)
    assert rto.timeout == 0.25


def test_karn_a_reply_to_a_resent_request_is_no_sample():
    rto = Rto(min_s=0.01, max_s=10)
    rto.sample(0.1)
    rto.timed_out()
    backed_off = rto.timeout
    rto.sample(0.9, retransmitted=True)
    assert rto.srtt == 0.1 and rto.timeout == backed_off


@pytest.mark.parametrize("bad", [math.nan, -1.0])
def test_a_broken_clock_reading_is_ignored(bad):
    rto = Rto()
    rto.sample(bad)
    assert rto.srtt is None


def test_table_keeps_one_estimator_per_contact_and_is_bounded():
    table = RtoTable(min_s=0.01, max_s=5, initial_s=0.5, limit=2)
    table.sample(("a", 1), 0.1)
    table.sample(("b", 1), 1.0)
    assert table.timeout(("a", 1)) == pytest.approx(0.3)
    assert table.timeout(("b", 1)) == pytest.approx(3.0)
    table.timed_out(("c", 1))  # a third contact evicts the least recently used ("a")
    assert len(table) == 2 and table.timeout(("a", 1)) == 0.5
    with pytest.raises(ValueError):
        RtoTable(min_s=0)


class Wire:
    """A transport that records what the protocol sends and delivers nothing."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def protocol(rpc_timeout: float) -> tuple[GrapeProtocol, Wire]:
    proto = GrapeProtocol(Node(b"\x01" * 20), RecordStorage(), 20, PeerTable(), rpc_timeout)
    wire = Wire()
    proto.transport = wire
    return proto, wire


async def until(check, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never saw {what}")


def test_a_lost_request_is_sent_again_and_its_late_reply_still_counts():
    """One lost datagram used to fail the RPC (and evict a live contact); now it is resent."""

    async def scenario() -> tuple[bool, object]:
        proto, wire = protocol(0.02)
        peer = ("10.77.0.12", 20001)
        call = proto.request(peer, "ping", b"\x01" * 20)
        await until(lambda: len(wire.sent) == 2, "the resend")
        assert wire.sent[0] == wire.sent[1] and wire.sent[0][0][:1] == REQUEST
        assert not call.done()
        msg_id = wire.sent[0][0][1:21]
        proto.datagram_received(RESPONSE + msg_id + msgpack.packb(b"\x02" * 20), peer)
        result = await call
        assert proto.rto.get(peer).srtt is None  # Karn: an answer to a resend is no sample
        return result

    assert asyncio.run(scenario()) == (True, b"\x02" * 20)


def test_a_contact_that_never_answers_fails_after_one_resend():
    async def scenario() -> tuple[tuple[bool, object], int]:
        proto, wire = protocol(0.01)
        result = await proto.request(("10.77.0.13", 20001), "ping", b"\x01" * 20)
        return result, len(wire.sent)

    assert asyncio.run(scenario()) == ((False, None), 2)


def test_replies_set_the_contacts_timeout_from_its_round_trip():
    async def scenario() -> tuple[object, object]:
        proto, wire = protocol(0.5)
        peer = ("10.77.0.14", 20001)
        results = []
        for source in (("10.77.0.99", 1), peer):
            call = proto.request(peer, "ping", b"\x01" * 20)
            msg_id = wire.sent[-1][0][1:21]
            proto.datagram_received(RESPONSE + msg_id + msgpack.packb(b"\x02" * 20), source)
            results.append(((await call)[0], proto.rto.get(peer).srtt))
        return results[0], results[1]

    from_elsewhere, from_peer = asyncio.run(scenario())
    assert from_elsewhere == (True, None)  # matched by id as before, but no sample
    ok, srtt = from_peer
    assert ok and srtt is not None and 0 <= srtt < 0.5
