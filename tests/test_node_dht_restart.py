"""Real grapes lose our records (restarted empty): the node's next versions still land."""

from __future__ import annotations

import signal

from node_helpers import Net, wait_until

from p2p_offers.link import Link
from p2p_offers.records import mutable_target


def test_new_version_lands_after_grapes_restart_empty(tmp_path) -> None:
    net = Net(tmp_path, grapes=3, nodes=1)
    try:
        node = net.nodes[0]
        offer = net.create(node, amount="1")
        key = mutable_target(bytes.fromhex(offer["owner"]), offer["id"].encode()).hex()
        links = [Link(g.url) for g in net.grapes]

        def pending() -> int:
            return net.get(node, "/health")["publisher"]["pending"]

        def dht_seq() -> int:
            for link in links:
                try:
                    record = link.get_record(key)
                except Exception:
                    continue
                if record is not None:
                    return record.seq
            return 0

        wait_until(lambda: pending() == 0 and dht_seq() == 1, 15, "the first put")
        # the majority of the DHT restarts with empty storage; one grape keeps seq 1
        for grape in net.grapes[1:]:
            net.cluster.stop(grape, signal.SIGKILL)
        for grape in net.grapes[1:]:
            net.cluster.start(grape)
        net.cluster.wait_ready(net.grapes)

        resp = net.call(node, "PATCH", f"/offers/{offer['id']}", {"amount_btc": "0.5"})
        assert resp.status_code == 200, resp.text
        seq = resp.json()["seq"]
        wait_until(lambda: pending() == 0, 20, "the publisher to drain")
        assert dht_seq() == seq
        # and it keeps converging: one more version goes out with cas again
        resp = net.call(node, "PATCH", f"/offers/{offer['id']}", {"amount_btc": "0.4"})
        wait_until(lambda: pending() == 0 and dht_seq() == resp.json()["seq"], 20, "the next put")
        for link in links:
            link.close()
    finally:
        net.close()
