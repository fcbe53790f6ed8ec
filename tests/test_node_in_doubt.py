"""Bids in doubt are settled after the request that raised them, against a real owner process.

The owner is a real node process on a real grape; the taker is an in-process
node (so its taker timeout can be made short) running its background loops.
The owner is frozen with SIGSTOP so a bid times out and goes in doubt, then
resumed: the resolver must record the owner's receipt once and forget the doubt.
A bid the owner never got, on an offer it has since cancelled, is settled as
unfilled.
"""

from __future__ import annotations

import os
import signal

import pytest
from node_helpers import Net, data_dir_of, stored_fills, wait_until

from p2p_offers.bids import make_bid
from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.errors import BidInDoubt
from p2p_offers.node.network.client import PeerTimeouts
from p2p_offers.node.runtime import Node, now_ms
from p2p_offers.node.storage.receipts import Role

TAKER = Role.TAKER


@pytest.fixture
def net(tmp_path):
    network = Net(tmp_path / "net", grapes=1, nodes=1)
    yield network
    network.close()


def test_bids_in_doubt_are_resolved_once_the_owner_answers(net: Net, tmp_path) -> None:
    owner = net.nodes[0]
    owner_id = net.ids[owner.url]
    sold = net.create(owner, amount="1")
    gone = net.create(owner, amount="1")
    config = NodeConfig(
        port=free_ports(1)[0],
        grape=net.grapes[0].url,
        data_dir=tmp_path / "taker",
        resolve_interval_s=0.3,
    )
    node = Node(config)
    node.start()
    try:
        wait_until(lambda: node.index.get(sold["id"]), 15, "the taker to sync the offer")
        # a bid the owner never gets, on an offer it cancels meanwhile: recorded as in doubt
        never_sent = make_bid(
            node.key,
            offer_id=gone["id"],
            offer_seq=gone["seq"],
            maker=owner_id,
            amount=5_000_000,
            price=3_000_000,
            now_ms=now_ms(),
        )
        assert net.call(owner, "DELETE", f"/offers/{gone['id']}").status_code == 200
        node.peer_client.timeouts = PeerTimeouts(bid_s=0.5)
        pid = owner.popen.pid  # type: ignore[union-attr]
        os.kill(pid, signal.SIGSTOP)
        try:
            node.taker._doubt(never_sent)
            with pytest.raises(BidInDoubt) as raised:
                node.taker.bid(sold["id"], 10_000_000)
            doubted = raised.value.bid
            assert {b.bid_id for b in node.taker.in_doubt()} == {
                never_sent.bid_id,
                doubted.bid_id,
            }
            assert node.receipts.all(TAKER) == []
        finally:
            os.kill(pid, signal.SIGCONT)

        wait_until(lambda: node.taker.in_doubt() == [], 20, "the bids in doubt to be settled")
        fills = node.receipts.all(TAKER)
        assert [f.bid.bid_id for f in fills] == [doubted.bid_id]  # recorded exactly once
        receipt = fills[0].receipt
        receipt.verify()
        assert receipt.amount == 10_000_000
        maker_side = stored_fills(data_dir_of(owner), "maker")
        assert list(maker_side) == [receipt.fill_id]  # the owner filled it once, the same fill
        assert maker_side[receipt.fill_id]["bid_id"] == doubted.bid_id
        bids = node.health()["bids"]
        assert bids["in_doubt_open"] == 0
        assert bids["in_doubt_filled"] == 1 and bids["in_doubt_unfilled"] == 1
        assert node.receipts.get(never_sent.bid_id, TAKER) is None
        # later rounds change nothing: still one fill
        rounds = bids["resolve_rounds"]
        wait_until(lambda: node.taker.stats()["resolve_rounds"] > rounds + 1, 10, "more rounds")
        assert len(node.receipts.all(TAKER)) == 1
    finally:
        node.stop()
