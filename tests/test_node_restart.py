"""Issue #10.1: a restarted node lists the whole book, not only its own offers.

Before the fix, the "seen" floor a node restores at start rejected the unchanged
current version of every foreign offer as stale (``sync: {received: N, stale: N}``),
so a restarted node listed only its own offers until their owners next changed them
(a refresh, minutes later). Real grapes and nodes; the nodes run with a sync interval
far longer than the test, so only what a restart itself does (the first sync, the
pushes of the owners' offers, pulls from peers that came up since) can fill the book.
"""

from __future__ import annotations

import pytest
from nacl.signing import SigningKey
from node_helpers import Net, foreign_offer, wait_until

from p2p_offers.cluster import Proc
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.outcomes import Outcome

OFFERS_PER_NODE = 4


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("restart"), node_extra=["--sync-interval", "600"])
    yield network
    network.close()


def open_ids(net: Net, proc: Proc) -> set[str]:
    return {o["id"] for o in net.get(proc, "/offers?status=open")["offers"]}


@pytest.fixture(scope="module")
def book(net: Net) -> set[str]:
    """Offers on every node, seen by every node."""
    ids = {
        net.create(proc, price=f"{30000 + i}.00", amount="0.1")["id"]
        for proc in net.nodes
        for i in range(OFFERS_PER_NODE)
    }
    for proc in net.nodes:
        wait_until(lambda p=proc: open_ids(net, p) == ids, 15, f"{proc.name} to see the book")
    return ids


def synced(net: Net, proc: Proc) -> bool:
    health = net.get(proc, "/health")
    return health["synced"] and health["sync"]["runs"] >= 1


def test_one_restarted_node_lists_the_whole_book_after_its_first_sync(
    net: Net, book: set[str]
) -> None:
    node = net.nodes[2]
    assert net.cluster.stop(node) == 0
    net.restart(node)
    wait_until(lambda: synced(net, node), 15, "the first sync")
    assert open_ids(net, node) == book  # at once: no waiting for owners to refresh
    applied = net.get(node, "/health")["announcements"]["sync"].get("applied", 0)
    assert applied >= len(book) - OFFERS_PER_NODE  # the foreign offers came by the sync


def test_a_whole_network_restarted_at_once_lists_the_whole_book(net: Net, book: set[str]) -> None:
    for proc in net.nodes:
        assert net.cluster.stop(proc) == 0
    for proc in net.nodes:
        net.cluster.start(proc)
    net.cluster.wait_ready(net.nodes)
    for proc in net.nodes:
        wait_until(lambda p=proc: synced(net, p), 15, f"{proc.name}'s first sync")
        wait_until(lambda p=proc: open_ids(net, p) == book, 15, f"{proc.name} to see the book")


def test_a_floor_takes_its_own_version_and_refuses_older_ones() -> None:
    """The root of it, on the index alone: a restored floor is not a version held."""
    now = 1_700_000_000_000
    key = SigningKey(b"\x0c" * 32)
    index = OfferIndex(lambda: now)
    v1 = foreign_offer(key, now, seq=1)
    index.restore_floor(v1.id, v1.owner, 1, v1.offer.expires)
    assert index.apply(v1) == Outcome.APPLIED  # the version seen before the restart
    assert index.get(v1.id) is not None and index.apply(v1) == Outcome.STALE
    other = foreign_offer(key, now, seq=3)
    index.restore_floor(other.id, other.owner, 5, other.offer.expires)
    assert index.apply(other) == Outcome.STALE  # below the floor: a replay
