"""Two whole nodes in one process, on the in-memory DHT and peer transport of ``fakes``.

Every loop runs (announce, publish, sync, replicate), but no socket is opened: this is
what node unit tests can build on. The same path on real processes is in
``test_node_network``, ``test_orders_network`` and the rest.
"""

from __future__ import annotations

import pytest
from fakes import AppTransport, MemoryDht
from node_helpers import wait_until

from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.runtime import Node


@pytest.mark.parametrize("propagation", ["gossip", "push"])
def test_two_nodes_trade_and_replicate_without_a_grape(tmp_path, propagation) -> None:
    dht, transport = MemoryDht(), AppTransport()
    nodes, clients = [], []
    for name in ("a", "b"):
        port = free_ports(1)[0]
        config = NodeConfig(
            port=port,
            grape="http://127.0.0.1:1",
            data_dir=tmp_path / name,
            sync_interval_s=0.5,
            propagation=propagation,
        )
        node = Node(config, dht=dht, transport=transport)
        app = create_app(config, node)
        transport.add(f"127.0.0.1:{port}", app)
        nodes.append(node)
        clients.append(app.test_client())
    b = nodes[1]
    try:
        for node in nodes:
            node.start()
        offer = (
            clients[0]
            .post("/offers", json={"side": "sell", "price_usd": "30000", "amount_btc": "1"})
            .json
        )
        wait_until(lambda: b.index.get(offer["id"]), 10, "the offer to reach b")
        bid = clients[1].post(f"/offers/{offer['id']}/bids", json={"amount_btc": "0.25"})
        assert bid.status_code == 201, bid.json
        receipt = bid.json
        wait_until(
            lambda: (
                [t["fill_id"] for t in clients[1].get("/trades").json["trades"]]
                == [receipt["fill_id"]]
            ),
            10,
            "b to replicate a's feed",
        )
        assert clients[1].get("/ledger/verify").json["ok"] is True
        rest = wait_until(lambda: b.index.get(receipt["remainder"]), 10, "the remainder on b")
        assert rest.signed.offer.amount == 75_000_000
        spread = "gossip" if propagation == "gossip" else "announce"
        assert {action for _, action in transport.calls} >= {"identify", spread, "bid"}
        assert dht.records  # the versions were put, under BEP44's rules
    finally:
        for node in nodes:
            node.stop()
