"""A node that answered once and went silent is probed again soon, not shunned for minutes
(issue 8.4: the two halves of a healed partition must find each other within a round or two).
"""

from __future__ import annotations

import time

from fakes import MemoryDht

from p2p_offers.node.network.peers import REPROBE_S, SHUN_S, Peers
from p2p_offers.node.network.transport import REST_SERVICES

NODE_ID = "ab" * 32


def test_a_known_node_cut_off_is_reprobed_without_doubling_but_junk_still_backs_off():
    dht = MemoryDht()
    dht.announce(REST_SERVICES[0], 7000)  # a node (127.0.0.1:7000)
    dht.announce(REST_SERVICES[0], 7001)  # junk: never answers as a node
    up = {"127.0.0.1:7000": True}

    class Client:
        def identify(self, address: str) -> str | None:
            return NODE_ID if up.get(address) else None

    peers = Peers(dht, Client(), "me", probe_wait_s=5)  # type: ignore[arg-type]
    try:
        assert [p.address for p in peers._refresh()] == ["127.0.0.1:7000"]
        up["127.0.0.1:7000"] = False  # cut off by a partition
        peers.unreachable("127.0.0.1:7000")
        for _ in range(6):  # six failed probes of each, the shun run out before each
            for address in list(peers._shunned):
                peers._shunned[address] = (0.0, peers._shunned[address][1])
            assert peers._refresh() == []
        now = time.monotonic()
        node_until, node_failures = peers._shunned["127.0.0.1:7000"]
        junk_until, junk_failures = peers._shunned["127.0.0.1:7001"]
        # at least one failure per refresh (a probe still out from the one before may add one)
        assert node_failures >= 6 and junk_failures >= 6
        assert node_until <= now + REPROBE_S  # healed: found again within REPROBE_S
        assert junk_until >= now + SHUN_S * 2**5  # junk: doubling, as before
        up["127.0.0.1:7000"] = True
        peers._shunned["127.0.0.1:7000"] = (0.0, node_failures)
        assert [p.address for p in peers._refresh()] == ["127.0.0.1:7000"]
    finally:
        peers.close()
