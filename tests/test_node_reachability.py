"""#11.6: a node that would be unreachable says so; bids to a silent owner end in bounded time."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from node_helpers import Clock, announcement, foreign_offer, local_node

from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig, announce_problem
from p2p_offers.node.network.client import PeerTimeouts
from p2p_offers.node.network.peers import rest_owner_service
from p2p_offers.signing import public_hex


def config(host: str, grape: str, announce_host: str | None = None) -> NodeConfig:
    return NodeConfig(4000, grape, Path("/nonexistent"), host=host, announce_host=announce_host)


@pytest.mark.parametrize(
    "host, grape, announce_host, refused",
    [
        ("127.0.0.1", "http://127.0.0.1:30001", None, False),  # one machine: loopback is right
        ("0.0.0.0", "http://127.0.0.1:30001", None, True),  # the reported case
        ("0.0.0.0", "http://localhost:30001", None, True),
        ("10.0.0.5", "http://10.0.0.1:30001,http://[::1]:30001", None, True),
        ("0.0.0.0", "http://127.0.0.1:30001", "10.0.0.5", False),
        ("0.0.0.0", "http://10.0.0.1:30001", None, False),  # the grape sees our real address
        ("0.0.0.0", "http://10.0.0.1:30001", "127.0.0.1", True),
        ("127.0.0.1", "http://127.0.0.1:30001", "127.0.0.1", False),
    ],
)
def test_a_node_refuses_to_announce_an_address_its_peers_cannot_dial(
    host, grape, announce_host, refused
):
    problem = announce_problem(config(host, grape, announce_host))
    assert (problem is not None) == refused, problem
    if refused:
        assert "--announce-host" in problem


def test_the_cli_says_why_and_exits_2(tmp_path):
    port = free_ports(1)[0]
    argv = [sys.executable, "-m", "p2p_offers", "node", "--port", str(port), "--host", "0.0.0.0"]
    argv += ["--grape", "http://127.0.0.1:1", "--data-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--announce-host" in done.stderr and "127.0.0.1" in done.stderr


class Recording:
    """The node's own transport, noting how long each bid attempt was allowed."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.bids = inner, []

    def call(self, address: str, action: str, payload: Any, timeout_s: float) -> Any:
        if action == "bid":
            self.bids.append((time.monotonic(), timeout_s))
        return self.inner.call(address, action, payload, timeout_s)

    def close(self) -> None:
        self.inner.close()


def test_a_bid_to_an_owner_that_never_answers_is_decided_within_5_s(grape_url, tmp_path):
    """The owner announced three addresses where a socket accepts and never answers: main
    waited 10 s on each (and twice on the first), 40 s."""
    client, node, link = local_node(grape_url, tmp_path, clock := Clock())
    silent = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes connections; nobody ever reads them
        silent.append(sock)
    try:
        owner = SigningKey.generate()
        rec = foreign_offer(owner, clock.now)
        assert client.post("/peer/announce", json=announcement(rec)).status_code == 200
        for sock in silent:
            link.announce(rest_owner_service(public_hex(owner)), sock.getsockname()[1], "127.0.0.1")
        recording = Recording(node.peer_client.transport)
        node.peer_client.transport = recording
        resp = client.post(f"/offers/{rec.id}/bids", json={"amount_btc": "0.1"})
        assert resp.status_code == 502
        assert resp.json["error"]["code"] in ("bid_in_doubt", "owner_unreachable")
        # every attempt was allowed only what was left of the first one's 5 s
        first = recording.bids[0][0]
        deadlines = [start + allowed - first for start, allowed in recording.bids]
        assert max(deadlines) <= PeerTimeouts().bid_total_s + 0.01, recording.bids
        assert node.receipts.all() == []
    finally:
        for sock in silent:
            sock.close()
        node.stop()
