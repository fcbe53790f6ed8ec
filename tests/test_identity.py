"""Signed identify: an address proves which node listens there, and cannot pass as another.

The pure proof (``node/network/identity.py``), a node's ``/peer/identify`` in process,
and impostors on real Grenache RPC sockets that claim, relay or rewrite a real node's
answer: none of them gets its address taken for the real node's id.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import AppTransport, MemoryDht
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers.cluster import free_ports
from p2p_offers.grenache import PeerRPCServer
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.network import identity
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.transport import PEER_SERVICE, GrenacheTransport
from p2p_offers.node.runtime import Node
from p2p_offers.signing import public_hex

KEY = SigningKey.generate()
ME = public_hex(KEY)


def test_a_proof_holds_only_for_its_challenge_address_and_key():
    probe = identity.challenge()
    proof = identity.prove(KEY, probe, "10.0.0.1:5000")
    assert identity.proven_id(proof, probe, "10.0.0.1:5000") == ME
    assert identity.proven_id(proof, identity.challenge(), "10.0.0.1:5000") is None
    assert identity.proven_id(proof, probe, "10.0.0.2:5000") is None
    other = public_hex(SigningKey.generate())
    assert identity.proven_id({**proof, "client_id": other}, probe, "10.0.0.1:5000") is None
    assert identity.proven_id({"client_id": ME}, probe, "10.0.0.1:5000") is None
    assert identity.challenge() != identity.challenge()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


@given(JSON)
def test_junk_replies_prove_nothing_and_never_raise(reply: Any):
    assert identity.proven_id(reply, "00" * 16, "127.0.0.1:1") is None


@given(st.fixed_dictionaries({"client_id": st.just(ME), "sig": st.text(max_size=200)}))
def test_a_forged_signature_proves_nothing(reply: dict[str, str]):
    assert identity.proven_id(reply, "00" * 16, "127.0.0.1:1") is None


@pytest.mark.parametrize(
    ("address", "hosts", "ports", "own"),
    [
        ("10.0.0.1:5000", {"10.0.0.1"}, {4000, 5000}, True),
        ("10.0.0.1:4000", {"10.0.0.1"}, {4000, 5000}, True),  # the REST port too
        ("10.0.0.1:5001", {"10.0.0.1"}, {4000, 5000}, False),
        ("10.0.0.2:5000", {"10.0.0.1"}, {4000, 5000}, False),
        ("10.0.0.2:5000", set(), {4000, 5000}, True),  # binds everything: the port alone
        ("[::1]:5000", {"::1"}, {5000}, True),
        ("[0:0::1]:5000", {"::1"}, {5000}, True),  # the same address written otherwise
        ("Node.Example:5000", {"node.example"}, {5000}, True),
        ("10.0.0.1", {"10.0.0.1"}, {5000}, False),
        ("10.0.0.1:x", {"10.0.0.1"}, {5000}, False),
        (":5000", {"10.0.0.1"}, {5000}, False),
    ],
)
def test_is_own(address: str, hosts: set[str], ports: set[int], own: bool):
    assert identity.is_own(address, hosts, ports) is own


def test_without_an_announced_host_a_node_knows_only_its_ports():
    base = {"grape": "http://127.0.0.1:1", "data_dir": Path("unused")}
    config = NodeConfig(port=4000, rpc_port=4500, host="0.0.0.0", **base)
    assert config.listens_at() == (set(), {4000, 4500})
    announced = NodeConfig(port=4000, announce_host="10.0.0.1", **base)
    assert announced.listens_at() == ({"10.0.0.1"}, {4000, 5000})


@pytest.fixture
def node(tmp_path) -> Iterator[tuple[Node, Any, str]]:
    """A node (not started) with its app's test client and the address it listens at."""
    port = free_ports(1)[0]
    config = NodeConfig(
        port=port, grape="http://127.0.0.1:1", data_dir=tmp_path / "n", announce_host="127.0.0.1"
    )
    made = Node(config, dht=MemoryDht(), transport=AppTransport())
    app = create_app(config, made)
    yield made, app, f"127.0.0.1:{config.grenache_port}"
    made.stop()


def probe(client: Any, address: str, challenge: str | None = None) -> Any:
    body = {"challenge": challenge or identity.challenge(), "address": address}
    return client.post("/peer/identify", json=body)


def test_a_node_proves_its_id_only_where_it_listens(node):
    made, app, address = node
    client = app.test_client()
    challenge = identity.challenge()
    reply = probe(client, address, challenge)
    assert reply.status_code == 200
    assert identity.proven_id(reply.get_json(), challenge, address) == made.client_id
    rest = f"127.0.0.1:{made.config.port}"
    assert probe(client, rest).status_code == 200
    for elsewhere in ("127.0.0.2:" + address.split(":")[1], "127.0.0.1:1"):
        refused = probe(client, elsewhere)
        assert refused.status_code == 421
        assert refused.get_json()["error"]["code"] == "misdirected"
    for bad in ({"challenge": "zz", "address": address}, {"address": address}, [1]):
        answer = client.post("/peer/identify", json=bad)
        assert answer.status_code == 400, bad
        assert answer.get_json()["error"]["code"] == "invalid_input"


def test_a_peer_client_learns_the_id_through_the_node_itself(node):
    made, app, address = node
    transport = AppTransport()
    transport.add(address, app)
    transport.add("127.0.0.9:9", app)  # the same node reached at an address it does not own
    peer = PeerClient(transport)
    assert peer.identify(address) == made.client_id
    assert peer.identify("127.0.0.9:9") is None


def impostor(answer: Any) -> tuple[PeerRPCServer, str]:
    """A Grenache RPC server on a real socket whose identify answer ``answer(args)`` gives."""
    server = PeerRPCServer(workers=2)
    server.handle(PEER_SERVICE, lambda payload: answer(payload["args"][0]))
    port = server.listen(0, "127.0.0.1")
    return server, f"127.0.0.1:{port}"


def test_an_address_cannot_claim_relay_or_rewrite_another_nodes_proof(node):
    made, app, real = node
    inside = AppTransport()
    inside.add(real, app)

    def relay(args: dict[str, Any]) -> Any:
        return inside.call(real, "identify", args, 5.0)

    def relay_rewritten(args: dict[str, Any]) -> Any:
        return inside.call(real, "identify", {**args, "address": real}, 5.0)

    def claim(args: dict[str, Any]) -> Any:
        return {"client_id": made.client_id, "sig": "00" * 64}

    def honest(args: dict[str, Any]) -> Any:
        return identity.prove(KEY, args["challenge"], args["address"])

    prober = PeerClient(GrenacheTransport())
    servers = []
    try:
        outcomes = {}
        for name, answer in [
            ("claim", claim),
            ("relay", relay),
            ("rewritten", relay_rewritten),
            ("honest", honest),
        ]:
            server, address = impostor(answer)
            servers.append(server)
            outcomes[name] = prober.identify(address)
        # the control: an answer made for this address with its own key is believed
        assert outcomes == {"claim": None, "relay": None, "rewritten": None, "honest": ME}
    finally:
        prober.transport.close()
        for server in servers:
            server.stop()
