"""A close missed while cut off is repaired by digests after ``closed_keep`` (issue 8.3/8.4).

Three real nodes on loopback. C is frozen (SIGSTOP) while the owner A cancels an
offer C lists as open, and stays frozen until A and B have let the closed record
go from their books (``--closed-keep 1``, so that takes a second, not a minute).
Before tombstones, A and B then held only a seq floor, their digests no longer
named the offer, and C went on listing it open after it came back.

The mesh is ``2,1,4``: with ``d_low`` 1 a node whose mesh still has a peer does not
retry the frozen C, so the cancel is never queued for C. (A request to a frozen
process waits in its socket buffer and is served when it thaws: the cancel would
then reach C by push and the test would prove nothing.)
"""

from __future__ import annotations

import os
import signal

import pytest
from node_helpers import Net, gossip_mesh, wait_until

from p2p_offers.offers import OPEN


@pytest.fixture
def net(tmp_path):
    with gossip_mesh("2,1,4"):
        network = Net(
            tmp_path,
            grapes=1,
            nodes=3,
            node_extra=["--sync-interval", "1", "--closed-keep", "1"],
        )
    try:
        yield network
    finally:
        network.close()


def neighbours(net: Net, proc) -> list[str]:
    return list(net.get(proc, "/health")["gossip"]["neighbours"])


def listed(net: Net, proc, offer_id: str) -> bool:
    return offer_id in {o["id"] for o in net.get(proc, "/offers")["offers"]}


def rounds_of(net: Net, proc) -> int:
    return int(net.get(proc, "/health")["gossip"]["rounds"])


def test_close_missed_while_cut_off_is_repaired_after_peers_let_it_go(net: Net) -> None:
    a, b, c = net.nodes
    wait_until(lambda: all(neighbours(net, p) for p in net.nodes), 30, "meshes")
    offer = net.create(a, price="30500.00", amount="0.1")
    wait_until(lambda: all(net.offer(p, offer["id"]) for p in net.nodes), 15, "propagation")

    repaired = net.get(c, "/health")["gossip"]["repaired"]
    pid = c.popen.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    try:
        # sends to C fail until A and B drop it (3 failures, then backoff); each of them
        # then has the other, and with d_low 1 does not retry C
        wait_until(
            lambda: all(neighbours(net, p) == [net.ids[q.url]] for p, q in ((a, b), (b, a))),
            60,
            "C out of A's and B's meshes",
        )
        assert net.call(a, "DELETE", f"/offers/{offer['id']}").status_code == 200
        # closed, then shrunk out of both books (``/offers`` lists what the index holds,
        # open or closed), and a digest round on each after that: what A and B describe
        # now is all that can repair C
        wait_until(lambda: not any(listed(net, p, offer["id"]) for p in (a, b)), 15, "shrunk")
        rounds = [rounds_of(net, p) for p in (a, b)]
        wait_until(
            lambda: all(rounds_of(net, p) > r for p, r in zip((a, b), rounds, strict=True)),
            15,
            "a digest round on A and B",
        )
    finally:
        os.kill(pid, signal.SIGCONT)

    def closed_on_c() -> bool:
        view = net.offer(c, offer["id"])
        return view is not None and view["status"] != OPEN

    wait_until(closed_on_c, 20, "C to learn of the close by anti-entropy")
    assert offer["id"] not in {o["id"] for o in net.get(c, "/offers?status=open")["offers"]}
    # by a digest exchange (``versions``), not by a push that waited in C's socket buffer
    assert net.get(c, "/health")["gossip"]["repaired"] > repaired
