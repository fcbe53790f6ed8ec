"""Grapes and nodes on separate hosts at WAN conditions (issue 8.2, grape part).

Three hosts in network namespaces, 80 ms RTT ± 10 ms jitter and 1 % loss per
packet and direction (so about 2 % per round trip), driven from the test bed's
control namespace like a person at each host would. (300 ms: test_testbed_rto.py.)
Checks wait for conditions, never for a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from nacl.signing import SigningKey
from node_helpers import wait_until

from p2p_offers import records
from p2p_offers.link import Link
from p2p_offers.testbed import Conditions, TestBed, missing_requirements

REASON = missing_requirements()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"test bed: {REASON}")
WAN = Conditions(rtt_ms=80, jitter_ms=10, loss_pct=1)


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[TestBed]:
    with TestBed(3, WAN, tmp_path_factory.mktemp("wan")) as testbed:
        testbed.start_network(node_extra=["--sync-interval", "2"])
        yield testbed


@pytest.fixture(scope="module")
def links(bed) -> Iterator[list[Link]]:
    with bed.control():
        yield [Link(h.grape_url, timeout=10) for h in bed.hosts]


@pytest.fixture
def http(bed) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    with bed.control():
        yield session


def test_put_on_one_host_get_on_the_others(bed, links):
    with bed.control():
        for i in range(5):
            hash_ = links[i % 3].put({"v": f"wan {i}"})
            for link in links:
                assert link.get(hash_)["v"] == f"wan {i}"


def test_mutable_chain_written_from_every_host(bed, links):
    key, salt = SigningKey.generate(), b"wan"
    target = records.mutable_target(bytes(key.verify_key), salt).hex()
    with bed.control():
        links[0].put_mutable(key, b"1", 1, salt)
        for seq in range(2, 7):
            links[seq % 3].put_mutable(key, b"%d" % seq, seq, salt, cas=seq - 1)
        for link in links:
            assert link.get_record(target).seq == 6


def test_announce_on_one_host_lookup_on_the_others(bed, links):
    with bed.control():
        assert links[0].announce("wan-service", 4321, bed.hosts[0].addr) >= 2
        for link in links:
            assert link.lookup("wan-service") == [f"{bed.hosts[0].addr}:4321"]
        nodes = sorted(f"{h.addr}:5000" for h in bed.hosts)  # the Grenache RPC port: REST + 1000
        # every node announced itself with the address the others can dial (not 127.0.0.1)
        wait_until(lambda: sorted(links[2].lookup("p2p_offers:node")) == nodes, 20, "nodes")


def test_offer_propagates_across_hosts_and_a_remote_bid_fills_it(bed, http):
    a, b, c = bed.hosts
    made = http.post(
        f"{a.node_url}/offers",
        json={"side": "sell", "price_usd": "30100.00", "amount_btc": "1"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    offer_id = made.json()["id"]

    def seen(host, status="open"):
        resp = http.get(f"{host.node_url}/offers/{offer_id}", timeout=30)
        return resp.status_code == 200 and resp.json()["status"] == status

    wait_until(lambda: seen(b) and seen(c), 20, "the offer on every host")
    bid = http.post(f"{b.node_url}/offers/{offer_id}/bids", json={"amount_btc": "1"}, timeout=30)
    assert bid.status_code == 201, bid.text
    receipt = bid.json()
    assert receipt["amount_btc"] == "1.00000000" and receipt["offer_id"] == offer_id
    wait_until(lambda: all(seen(h, "filled") for h in bed.hosts), 20, "filled everywhere")
    late = http.post(f"{c.node_url}/offers/{offer_id}/bids", json={"amount_btc": "0.1"}, timeout=30)
    assert late.status_code == 409, late.text
