"""The node list's lookup period adapts (issue 8.5): slow while the network is unchanged,
fast again on any change, so idle nodes stop re-learning a list that did not change
(at 50 hosts, one lookup a second per node was most of every grape's idle CPU) while
joins, partitions and restarts are found as quickly as before."""

from __future__ import annotations

import itertools

from fakes import MemoryDht

from p2p_offers.node.network.peers import REFRESH_MAX_S, REFRESH_MIN_S, Peers
from p2p_offers.node.network.transport import REST_SERVICES


def _peers(dht: MemoryDht, up: dict[str, bool]) -> Peers:
    class Client:
        def identify(self, address: str) -> str | None:
            return address.rsplit(":", 1)[1].zfill(64) if up.get(address) else None

    peers = Peers(dht, Client(), "me", probe_wait_s=5)  # type: ignore[arg-type]
    peers.invalidate = lambda: None  # type: ignore[method-assign]  # no background lookups
    return peers


def _settle(peers: Peers) -> None:
    for _ in range(10):
        peers._refresh()
    assert peers.refresh_s == REFRESH_MAX_S


def test_an_unchanged_list_is_looked_up_ever_less_often_up_to_the_cap() -> None:
    dht = MemoryDht()
    up = {}
    for port in (7000, 7001):
        dht.announce(REST_SERVICES[0], port)
        up[f"127.0.0.1:{port}"] = True
    dht.announce(REST_SERVICES[0], 7009)  # junk that never answers does not keep it fast
    peers = _peers(dht, up)
    try:
        periods = []
        for _ in range(8):
            assert len(peers._refresh()) == 2
            periods.append(peers.refresh_s)
        assert periods[0] == REFRESH_MIN_S  # the first lookup is a change (from nothing)
        assert periods == sorted(periods) and periods[-1] == REFRESH_MAX_S
        assert all(b in (2 * a, REFRESH_MAX_S) for a, b in itertools.pairwise(periods))
    finally:
        peers.close()


def test_a_new_node_resets_the_period() -> None:
    dht = MemoryDht()
    up = {"127.0.0.1:7000": True, "127.0.0.1:7001": True}
    dht.announce(REST_SERVICES[0], 7000)
    peers = _peers(dht, up)
    try:
        _settle(peers)
        dht.announce(REST_SERVICES[0], 7001)
        assert len(peers._refresh()) == 2
        assert peers.refresh_s == REFRESH_MIN_S
    finally:
        peers.close()


def test_a_known_node_gone_silent_keeps_the_lookups_fast_until_it_is_back() -> None:
    """A partition or a restart: the node is reprobed and the list looked up at the fast
    rate until it answers again, as before the adaptive period."""
    dht = MemoryDht()
    up = {"127.0.0.1:7000": True, "127.0.0.1:7001": True}
    for port in (7000, 7001):
        dht.announce(REST_SERVICES[0], port)
    peers = _peers(dht, up)
    try:
        _settle(peers)
        up["127.0.0.1:7001"] = False
        peers.unreachable("127.0.0.1:7001")  # a send failed: forget who was there
        for _ in range(4):
            peers._shunned.clear()  # each reprobe due (REPROBE_S), as time would make it
            assert len(peers._refresh()) == 1
            assert peers.refresh_s == REFRESH_MIN_S
        up["127.0.0.1:7001"] = True
        peers._shunned.clear()
        assert len(peers._refresh()) == 2
        assert peers.refresh_s == REFRESH_MIN_S  # the list changed: still fast once more
    finally:
        peers.close()


def test_invalidate_looks_up_now_and_fast_again() -> None:
    dht = MemoryDht()
    dht.announce(REST_SERVICES[0], 7000)
    up = {"127.0.0.1:7000": True}
    peers = Peers(dht, _peers(dht, up).client, "me")
    try:
        _settle(peers)
        lookups = peers.lookups
        peers.invalidate()
        assert len(peers.nodes()) == 1  # stale now: looked up (or waits for the one running)
        assert peers.lookups > lookups
        # reset, then at most one unchanged lookup since (the background one)
        assert peers.refresh_s <= 2 * REFRESH_MIN_S
    finally:
        peers.close()
