"""Gossip propagation across real processes (``--propagation gossip``, issue 8.3).

Eight nodes with a deliberately small mesh (d 3, d_low 2, d_high 4), so that an
owner's neighbours are not everyone and a version reaches most nodes only by
being forwarded. The counters are the nodes' own (``/health`` ``gossip``).
"""

from __future__ import annotations

import time

import pytest
import requests
from nacl.signing import SigningKey
from node_helpers import Net, foreign_offer, gossip_mesh, wait_until

from p2p_offers.gossip import wire
from p2p_offers.node.network.gossip import envelope
from p2p_offers.signing import public_hex

D_HIGH = 4
NODES = 8


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    with gossip_mesh(f"3,2,{D_HIGH}"):
        network = Net(
            tmp_path_factory.mktemp("gossip"),
            grapes=2,
            nodes=NODES,
            node_extra=["--propagation", "gossip", "--sync-interval", "2"],
        )
    try:
        wait_until(lambda: all(meshed(network, p) for p in network.nodes), 30, "meshes")
        yield network
    finally:
        network.close()


def meshed(net: Net, proc) -> bool:
    health = net.get(proc, "/health")
    return health["peers"] == NODES - 1 and health["gossip"]["mesh"] >= 2


def stats(net: Net) -> list[dict]:
    return [net.get(p, "/health") for p in net.nodes]


def visible_everywhere(net: Net, offer_id: str) -> bool:
    return all(net.offer(p, offer_id) is not None for p in net.nodes)


def test_owner_sends_each_version_to_its_mesh_only_and_everyone_gets_it(net: Net) -> None:
    owner = net.nodes[0]
    before = stats(net)
    made = []
    for i in range(3):
        offer = net.create(owner, price=f"3100{i}.00", amount="0.1")
        wait_until(lambda o=offer: visible_everywhere(net, o["id"]), 15, "gossip propagation")
        made.append(offer)
    after = stats(net)
    assert all(h["propagation"] == "gossip" for h in after)
    mine0, mine1 = before[0]["gossip"], after[0]["gossip"]
    published = mine1["published"] - mine0["published"]
    sent = mine1["sent_by_owner"] - mine0["sent_by_owner"]
    assert published == 3
    assert 1 <= sent <= D_HIGH * published  # the owner's cost is its mesh, not N - 1
    assert all(h["gossip"]["mesh"] <= D_HIGH for h in after)
    # With at most 4 neighbours of the owner's 7 peers, the others were reached by forwards.
    forwarded = sum(
        a["gossip"]["forwarded"] - b["gossip"]["forwarded"]
        for a, b in zip(after, before, strict=True)
    )
    assert forwarded > 0
    # nobody pushed announcements: it all went as gossip, over Grenache RPC (peerGossip)
    assert all("announce" not in h["announcements"] for h in after)
    # Every other node took all three versions from gossip envelopes. The owner need
    # not receive any: forwards skip a version's owner, and a digest round may not
    # have come its way yet.
    for b, a in zip(before[1:], after[1:], strict=True):
        got, had = a["gossip"], b["gossip"]
        assert got["envelopes_received"] > had["envelopes_received"]
        assert got["new"] + got["repaired"] - had["new"] - had["repaired"] >= published


def post(net: Net, proc, data: bytes) -> requests.Response:
    return net.http.post(
        proc.url + "/peer/gossip",
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def test_forged_record_is_counted_not_forwarded_and_envelopes_are_authenticated(net: Net) -> None:
    x, other = net.nodes[1], net.nodes[2]
    to = net.ids[x.url]
    genuine = foreign_offer(SigningKey.generate(), int(time.time() * 1000))
    forged = dict(genuine.record.to_json(), seq=genuine.seq + 1)  # a seq nobody signed
    message = {"t": "version", "hash": genuine.hash, "record": forged, "hops": 1}
    attacker = SigningKey.generate()
    at = int(time.time() * 1000)
    data = envelope(attacker, to, at, [wire.encode(message)])
    before = stats(net)

    resp = post(net, x, data)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"taken": 1}
    # the same envelope again is a replay; a changed body no longer matches the signature
    again = post(net, x, data)
    assert again.status_code == 400 and "replayed" in again.json()["error"]["message"]
    tampered = data.replace(b'"hops":1', b'"hops":2')
    assert post(net, x, tampered).json()["error"]["code"] == "invalid_signature"
    # an envelope claiming to come from a real neighbour, signed with another key
    prune = envelope(attacker, to, at + 5, [wire.encode(wire.prune())])
    claimed = prune.replace(public_hex(attacker).encode(), net.ids[other.url].encode(), 1)
    assert post(net, x, claimed).json()["error"]["code"] == "invalid_signature"
    # addressed to another node
    elsewhere = envelope(attacker, net.ids[other.url], at + 6, [wire.encode(wire.graft())])
    assert post(net, x, elsewhere).status_code == 400
    assert post(net, x, b'{"from": "nope"}').status_code == 400

    # a genuine version from x goes down the same per-neighbour queues, after the forgery
    offer = net.create(x, price="29999.00", amount="0.1")
    wait_until(lambda: visible_everywhere(net, offer["id"]), 15, "gossip propagation")
    after = stats(net)
    i = net.nodes.index(x)
    assert after[i]["gossip"]["invalid"] == before[i]["gossip"]["invalid"] + 1
    got = after[i]["announcements"]["gossip"]
    assert got["forged"] == before[i]["announcements"]["gossip"].get("forged", 0) + 1
    assert after[i]["gossip"]["refused_signature"] >= 2
    assert after[i]["gossip"]["refused_replay"] >= 1
    for j, health in enumerate(after):
        if j != i:  # the forgery went no further than x
            assert health["announcements"].get("gossip", {}).get("forged", 0) == 0
            assert health["gossip"]["invalid"] == before[j]["gossip"]["invalid"]
    assert net.offer(x, genuine.offer.id) is None


def test_push_node_refuses_gossip(tmp_path) -> None:
    """The old path stays: a --propagation push node answers peerGossip with not_found."""
    net = Net(tmp_path, grapes=1, nodes=1, node_extra=["--propagation", "push"])
    try:
        (node,) = net.nodes
        health = net.get(node, "/health")
        assert health["propagation"] == "push"
        key = SigningKey.generate()
        data = envelope(key, health["client_id"], int(time.time() * 1000), [])
        resp = post(net, node, data)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    finally:
        net.close()


def test_replay_protection_survives_a_restart(tmp_path) -> None:
    """The last envelope time accepted per sender is kept in the database: an envelope
    taken before a restart is still a replay after it (within the clock window)."""
    net = Net(tmp_path, grapes=1, nodes=1, node_extra=["--propagation", "gossip"])
    try:
        (node,) = net.nodes
        key = SigningKey.generate()
        at = int(time.time() * 1000)
        first = envelope(key, net.ids[node.url], at, [wire.encode(wire.prune())])
        assert post(net, node, first).json() == {"taken": 1}
        net.cluster.stop(node)
        net.restart(node)
        again = post(net, node, first)
        assert again.status_code == 400 and "replayed" in again.json()["error"]["message"]
        assert net.get(node, "/health")["gossip"]["refused_replay"] == 1
        # a newer envelope from the same sender is taken as before
        newer = envelope(key, net.ids[node.url], at + 1, [wire.encode(wire.prune())])
        assert post(net, node, newer).json() == {"taken": 1}
    finally:
        net.close()
