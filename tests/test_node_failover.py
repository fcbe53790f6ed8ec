"""#11.5: a node outlives its grape (real grapes and nodes as subprocesses)."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from node_helpers import wait_until

from p2p_offers.cluster import Cluster, Proc, free_ports
from p2p_offers.link import Link
from p2p_offers.node.network.peers import owner_service


def health(proc: Proc) -> dict:
    return requests.get(f"{proc.url}/health", timeout=5).json()


def warnings_in(proc: Proc) -> list[str]:
    return [line for line in Path(proc.log_path).read_text().splitlines() if " WARNING " in line]


def test_a_node_fails_over_to_its_second_grape_and_backs_off_when_all_are_gone(cluster: Cluster):
    dht, api, ports = free_ports(3), free_ports(3), free_ports(2)
    grapes = [
        cluster.grape(dht[i], api[i], [p for p in dht if p != dht[i]], ("--dpa", "2000"))
        for i in range(3)
    ]
    cluster.wait_ready(grapes)
    fast = ["--announce-interval", "0.5", "--sync-interval", "1"]
    maker = cluster.node(ports[0], f"{grapes[0].url},{grapes[1].url}", extra=fast)
    taker = cluster.node(ports[1], grapes[2].url, extra=fast)
    cluster.wait_ready([maker, taker])
    maker_id = health(maker)["client_id"]
    assert health(maker)["dht"]["grape"] == grapes[0].url

    cluster.kill(grapes[0])
    offer = requests.post(
        f"{maker.url}/offers",
        json={"side": "sell", "price_usd": "30000.00", "amount_btc": "1"},
        timeout=10,
    ).json()
    wait_until(lambda: health(maker)["dht"]["grape"] == grapes[1].url, what="failover")
    time.sleep(2.5)  # longer than the grapes' --dpa: the owner name lives only if re-announced
    assert maker.rpc in Link(grapes[2].url).lookup(owner_service(maker_id))
    wait_until(lambda: requests.get(f"{taker.url}/offers/{offer['id']}", timeout=5).ok)
    bid = requests.post(
        f"{taker.url}/offers/{offer['id']}/bids", json={"amount_btc": "0.1"}, timeout=10
    )
    assert bid.status_code in (200, 201), bid.text
    assert health(maker)["dht"]["announced"] is True

    cluster.kill(grapes[1])  # the maker has no grape left
    wait_until(lambda: not health(maker)["dht"]["announced"], what="announced: false")
    before = len(warnings_in(maker))
    requests.post(  # a put that must fail too
        f"{maker.url}/offers",
        json={"side": "sell", "price_usd": "31000.00", "amount_btc": "1"},
        timeout=10,
    )
    time.sleep(4)  # main logged ~9 warnings a second here
    state = health(maker)["dht"]
    assert state["announced"] is False and state["last_error"]
    new = warnings_in(maker)[before:]
    assert len(new) <= 5, new  # one per state change of each part; main: ~36
