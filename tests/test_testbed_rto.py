"""Grapes across hosts at 300 ms RTT: what the fixed 250 ms RPC timeout broke (issue 8.2).

On main every RPC timed out there: grapes found no peers, gets answered
ERR_GRAPE_NO_PEERS. With the per-contact RTO (p2p_offers.rtt) and one resend they work.
"""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.link import Link
from p2p_offers.testbed import Conditions, TestBed, missing_requirements

REASON = missing_requirements()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"test bed: {REASON}")


def test_grapes_work_at_300_ms_rtt(tmp_path):
    """The fixed 250 ms RPC timeout failed every RPC here; the per-contact RTO does not."""
    with TestBed(3, Conditions(rtt_ms=300, loss_pct=1), tmp_path) as slow:
        slow.start_network(nodes=False)
        with slow.control():
            links = [Link(h.grape_url, timeout=20) for h in slow.hosts]
            key = SigningKey.generate()
            target = records.mutable_target(bytes(key.verify_key)).hex()
            links[0].put_mutable(key, b"one", 1)
            links[1].put_mutable(key, b"two", 2, cas=1)
            assert [link.get_record(target).v for link in links] == [b"two"] * 3
            assert links[2].announce("slow", 1, slow.hosts[2].addr) >= 2
            assert links[0].lookup("slow") == [f"{slow.hosts[2].addr}:1"]
