"""Reply timeouts towards peers follow their measured round trips (issue 8.2, node part).

A fake transport on a fake clock: each call "takes" the time the test says and
records the timeout it was given. On main every call got the fixed maximum.
"""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from p2p_offers.bids import make_bid
from p2p_offers.node import errors
from p2p_offers.node.network import identity
from p2p_offers.node.network.client import PeerClient, PeerTimeouts
from p2p_offers.node.network.transport import MaybeDelivered, NotDelivered
from p2p_offers.signing import public_hex

KEY = SigningKey.generate()  # the node every address of the wire belongs to
ME = public_hex(KEY)


class Wire:
    """Answers after ``delay`` seconds of the fake clock, or times out if that exceeds it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delay = 0.0
        self.refuse = False
        self.given: list[tuple[str, str, float]] = []

    def clock(self) -> float:
        return self.now

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        self.given.append((address, action, timeout_s))
        if self.refuse:
            raise NotDelivered("connection refused")  # at once: no round trip measured
        if self.delay > timeout_s:
            self.now += timeout_s
            raise MaybeDelivered("read timed out")
        self.now += self.delay
        if payload == "error":
            raise errors.InvalidInput("the peer answered with an error")
        if action == "identify":
            return identity.prove(KEY, payload["challenge"], payload["address"])
        return {"feeds": [], "node": ""}

    def close(self) -> None:
        pass


def client() -> tuple[PeerClient, Wire]:
    wire = Wire()
    return PeerClient(wire, PeerTimeouts(), clock=wire.clock), wire


def last_timeout(wire: Wire) -> float:
    return wire.given[-1][2]


def test_an_unmeasured_peer_gets_the_maximum_then_its_measured_rto():
    peer, wire = client()
    wire.delay = 0.3  # a 300 ms link
    peer.feeds("a:1")
    assert last_timeout(wire) == PeerTimeouts().ledger_s  # nothing measured yet: as before
    for _ in range(20):
        peer.feeds("a:1")
    # SRTT -> 0.3, RTTVAR -> small: RTO = the floor, far below the 5 s maximum
    assert last_timeout(wire) == pytest.approx(PeerTimeouts().floor_s)
    wire.delay = 2.0  # a slow peer (an owner settling a batch): the RTO grows with it
    timed_out = 0
    for _ in range(30):
        try:
            peer.feeds("a:1")
        except MaybeDelivered:
            timed_out += 1  # the first at 1 s; the doubled RTO then lets the reply in
    assert timed_out == 1
    assert 2.0 < last_timeout(wire) <= PeerTimeouts().ledger_s
    peer.feeds("b:1")  # another address: measured on its own
    assert last_timeout(wire) == PeerTimeouts().ledger_s


def test_a_timeout_doubles_the_rto_up_to_the_maximum_and_a_refusal_measures_nothing():
    peer, wire = client()
    wire.delay = 0.01
    for _ in range(10):
        assert peer.identify("a:1") == ME
    assert last_timeout(wire) == pytest.approx(1.0)
    wire.delay = 100.0  # silent: each timeout doubles the next wait, capped by identify_s
    assert peer.identify("a:1") is None
    assert peer.identify("a:1") is None and last_timeout(wire) == pytest.approx(2.0)
    assert peer.identify("a:1") is None and last_timeout(wire) == pytest.approx(2.0)
    wire.refuse = True
    before = peer.timeout("a:1", "identify", 10.0)
    assert peer.identify("a:1") is None
    assert peer.timeout("a:1", "identify", 10.0) == before  # refused at once: no sample
    wire.refuse, wire.delay = False, 0.01
    assert peer.identify("a:1") == ME  # a reply: the backoff ends
    assert peer.timeout("a:1", "identify", 10.0) == pytest.approx(1.0)


def test_an_error_answer_is_a_sample_and_a_bid_never_waits_past_its_budget():
    peer, wire = client()
    wire.delay = 0.05
    for _ in range(10):
        with pytest.raises(errors.InvalidInput):
            peer._call("a:1", "bid", "error", 5.0)
    assert peer.timeout("a:1", "bid", 5.0) == pytest.approx(1.0)
    bid = make_bid(
        SigningKey.generate(),
        offer_id="o1",
        offer_seq=1,
        maker="cd" * 32,
        amount=1,
        price=1,
        now_ms=1,
    )
    wire.delay = 100.0  # the owner is silent: every attempt of the burst shares the 5 s
    while True:
        try:
            peer.bid("a:1", bid)
        except MaybeDelivered:
            continue
        except NotDelivered:
            break
    waited = sum(t for _, action, t in wire.given if action == "bid")
    bids = [t for _, action, t in wire.given if action == "bid"]
    assert bids[10] == pytest.approx(1.0) and bids[11] == pytest.approx(2.0)
    assert waited - sum(bids[:10]) <= PeerTimeouts().bid_total_s + 1e-9
