"""Node-to-node traffic over Grenache RPC (issue 7.2): two whole nodes whose REST ports have
nothing listening, so announcements, bids, sync pages and ledger pulls can only go over
their RPC edges; and the transport's translation of what comes back."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fakes import MemoryDht
from node_helpers import trade_and_replicate, wait_until

from p2p_offers.cluster import free_ports
from p2p_offers.grenache import Dispatcher, HttpTransport, MockTransport, ServiceError
from p2p_offers.node import errors
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import APIS, MAX_BODY, create_app
from p2p_offers.node.http.rpc import start_rpc
from p2p_offers.node.network.transport import (
    BadReply,
    GrenacheTransport,
    MaybeDelivered,
    NotDelivered,
)
from p2p_offers.node.runtime import Node


class Recording(HttpTransport):
    def __init__(self) -> None:
        super().__init__()
        self.actions: list[str] = []

    def post(self, address: str, body: bytes, headers: Any, timeout: float) -> Any:
        found = re.search(rb'"action":"(\w+)"', body)
        self.actions.append(found.group(1).decode() if found else "?")
        return super().post(address, body, headers, timeout)


@pytest.mark.parametrize("propagation", ["gossip", "push"])
def test_two_nodes_trade_and_replicate_over_grenache_rpc_only(tmp_path, propagation) -> None:
    dht, wire = MemoryDht(), Recording()
    nodes, clients, servers = [], [], []
    ports = free_ports(4)
    for i, name in enumerate(("a", "b")):
        config = NodeConfig(
            port=ports[2 * i],  # announced under p2p_offers:rest:*, but nothing listens there
            rpc_port=ports[2 * i + 1],
            grape="http://127.0.0.1:1",
            data_dir=tmp_path / name,
            sync_interval_s=0.5,
            propagation=propagation,
        )
        node = Node(config, dht=dht, transport=GrenacheTransport(wire))
        app = create_app(config, node)
        nodes.append(node)
        clients.append(app.test_client())
        servers.append((app, node))
    rpcs = []
    b = nodes[1]
    try:
        for app, node in servers:
            node.start()
            rpcs.append(start_rpc(app, node, APIS, MAX_BODY))
        receipt = trade_and_replicate(clients, b)
        wait_until(lambda: b.index.get(receipt["remainder"]), 10, "the remainder on b")
        used = set(wire.actions)
        spread = "peerGossip" if propagation == "gossip" else "peerAnnounce"
        assert used >= {"peerIdentify", spread, "peerBid", "peerOffers", "peerFeed"}, used
    finally:
        for rpc in rpcs:
            rpc.stop()
        for node in nodes:
            node.stop()


def peer_dispatcher(handler: Any) -> MockTransport:
    d = Dispatcher()
    d.handle("p2p_offers:peer", handler)
    mock = MockTransport()
    mock.attach("peer:1", d.respond)
    return mock


def test_the_peers_error_comes_back_as_its_domain_class() -> None:
    def refuse(payload: Any) -> Any:
        exc = errors.InsufficientAmount.left("o1", 5, 3)
        raise ServiceError(errors.rpc_error(exc), exc.body())

    transport = GrenacheTransport(peer_dispatcher(refuse))
    with pytest.raises(errors.InsufficientAmount) as info:
        transport.call("peer:1", "bid", {"x": 1}, 1.0)
    assert info.value.available == 3


def test_frame_level_errors_and_lost_peers() -> None:
    transport = GrenacheTransport(peer_dispatcher(lambda p: 1 / 0))
    with pytest.raises(errors.Internal):
        transport.call("peer:1", "feeds", None, 1.0)
    with pytest.raises(NotDelivered):
        transport.call("peer:2", "feeds", None, 1.0)

    class Lost(MockTransport):
        def post(self, *a: Any) -> Any:
            from p2p_offers.grenache import MaybeDelivered as Lost_

            raise Lost_("ERR_TIMEOUT")

    with pytest.raises(MaybeDelivered):
        GrenacheTransport(Lost()).call("peer:1", "bid", {}, 1.0)

    class Garbage(MockTransport):
        def post(self, *a: Any) -> Any:
            return 200, b"<html>"

    with pytest.raises(BadReply):
        GrenacheTransport(Garbage()).call("peer:1", "feeds", None, 1.0)


def test_an_encoded_batch_is_framed_without_decoding() -> None:
    seen: list[Any] = []
    transport = GrenacheTransport(peer_dispatcher(lambda p: seen.append(p) or {"ok": 1}))
    body = json.dumps({"announcements": [{"hash": "ab"}]}).encode()
    assert transport.call("peer:1", "announce", body, 1.0) == {"ok": 1}
    assert seen == [{"action": "peerAnnounce", "args": [{"announcements": [{"hash": "ab"}]}]}]
