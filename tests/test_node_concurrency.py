"""Bid storms on real processes: one owner, three taker nodes, hundreds of concurrent bids.

What must hold whatever the interleaving: no offer is ever filled beyond its
amount; every 201 a taker got is a receipt both the taker and the owner have
recorded; every node ends up agreeing on every record; and an owner killed with
SIGKILL mid-storm has, after restarting, every receipt it ever gave out.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from node_helpers import Net, data_dir_of, scrape, stored_fills, wait_until

from p2p_offers.cluster import Proc
from p2p_offers.money import format_btc, parse_btc

OFFER_SATS = 10_000
OFFERS = 5


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("storm"), nodes=4, node_extra=["--sync-interval", "2"])
    yield network
    network.close()


def place_offers(net: Net, owner: Proc) -> list[dict]:
    made = [net.create(owner, amount=format_btc(OFFER_SATS)) for _ in range(OFFERS)]
    takers = [p for p in net.nodes if p is not owner]

    def everywhere() -> bool:
        return all(net.offer(t, o["id"]) is not None for t in takers for o in made)

    wait_until(everywhere, 5, "offers on every taker")
    return made


def storm(
    takers: list[Proc],
    offers: list[dict],
    bids: int,
    threads: int = 48,
    on_progress: Any = None,
    sats: tuple[int, int] = (100, 900),
) -> tuple[list[tuple[Proc, dict]], dict[int, int]]:
    """Fire ``bids`` bids of random size at random offers from random takers, all at once."""
    local = threading.local()
    rng = random.Random(7)
    plan = [(rng.choice(takers), rng.choice(offers)["id"], rng.randint(*sats)) for _ in range(bids)]
    statuses: dict[int, int] = defaultdict(int)
    accepted: list[tuple[Proc, dict]] = []
    lock = threading.Lock()

    def one(step: tuple[Proc, str, int]) -> None:
        taker, offer_id, sats = step
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        try:
            resp = session.post(
                f"{taker.url}/offers/{offer_id}/bids",
                json={"amount_btc": format_btc(sats)},
                timeout=30,
            )
            status, body = resp.status_code, resp.json()
        except requests.RequestException:
            status, body = 0, None
        with lock:
            statuses[status] += 1
            if status == 201:
                accepted.append((taker, body))
        if on_progress is not None:
            on_progress()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, plan))
    return accepted, dict(statuses)


def chain_records(net: Net, proc: Proc, root: str) -> list[dict]:
    """The owner's records from the root along fill.remainder."""
    records, offer_id = [], root
    while offer_id:
        record = net.offer(proc, offer_id)
        assert record is not None, offer_id
        records.append(record)
        offer_id = (record["fill"] or {}).get("remainder")
    return records


def chain_sats(records: list[dict]) -> tuple[int, int]:
    """(filled, still open) satoshis of one chain."""
    filled = sum(parse_btc(r["fill"]["amount_btc"]) for r in records if r["fill"])
    open_ = sum(parse_btc(r["amount_btc"]) for r in records if r["status"] == "open")
    return filled, open_


def receipts_by_chain(accepted: list[tuple[Proc, dict]], chains: dict[str, set[str]]) -> dict:
    owner_of = {rec: root for root, recs in chains.items() for rec in recs}
    totals: dict[str, int] = defaultdict(int)
    for _, r in accepted:
        totals[owner_of[r["offer_id"]]] += parse_btc(r["amount_btc"])
    return totals


def test_bid_storm_never_overfills_and_everyone_agrees(net: Net) -> None:
    owner, *takers = net.nodes
    offers = place_offers(net, owner)
    accepted, statuses = storm(takers, offers, bids=360)
    assert set(statuses) <= {201, 409}, statuses
    assert statuses.get(201, 0) >= OFFERS  # every offer took bids
    batches = sum(
        value
        for taker in takers
        for (name, labels), value in scrape(taker.url).items()
        if name == "node_peer_calls_total" and ("action", "bids") in labels
    )
    assert batches > 0  # takers sent bids together: the owner settled batches of them

    chains = {o["id"]: chain_records(net, owner, o["id"]) for o in offers}
    chain_ids = {root: {r["id"] for r in recs} for root, recs in chains.items()}
    by_chain = receipts_by_chain(accepted, chain_ids)
    for root, recs in chains.items():
        filled, open_ = chain_sats(recs)
        assert filled == by_chain[root] <= OFFER_SATS
        assert filled + open_ == OFFER_SATS

    # every 201 is a receipt recorded on both sides, exactly once
    fill_ids = [r["fill_id"] for _, r in accepted]
    assert len(set(fill_ids)) == len(fill_ids)
    maker_fills = stored_fills(data_dir_of(owner), "maker")
    assert set(fill_ids) == set(maker_fills)
    for taker in takers:
        mine = {r["fill_id"] for t, r in accepted if t is taker}
        assert mine == set(stored_fills(data_dir_of(taker), "taker"))

    # all nodes converge on the owner's view of every record
    truth = {r["id"]: (r["seq"], r["status"]) for recs in chains.values() for r in recs}

    def agreed() -> bool:
        for proc in takers:
            for rec_id, state in truth.items():
                seen = net.offer(proc, rec_id)
                if seen is None or (seen["seq"], seen["status"]) != state:
                    return False
        return True

    wait_until(agreed, 10, "all nodes agreeing")


def test_owner_killed_mid_storm_loses_no_receipt(net: Net) -> None:
    owner = net.add_node(grape=1)
    takers = net.nodes[1:]
    offers = place_offers(net, owner)
    done = [0]
    lock = threading.Lock()

    def progress() -> None:
        with lock:
            done[0] += 1
            if done[0] == 60:
                net.cluster.kill(owner)  # SIGKILL, mid-storm

    accepted, statuses = storm(takers, offers, bids=300, on_progress=progress)
    assert not owner.alive
    assert statuses.get(201, 0) > 0 and statuses.get(502, 0) > 0, statuses

    given_out = {r["fill_id"] for _, r in accepted}
    assert given_out <= set(stored_fills(data_dir_of(owner), "maker"))

    net.restart(owner)
    # the restarted owner still has every receipt it gave out, and no chain is overfilled
    maker_fills = stored_fills(data_dir_of(owner), "maker")
    assert given_out <= set(maker_fills)
    for o in offers:
        filled, open_ = chain_sats(chain_records(net, owner, o["id"]))
        assert filled + open_ == OFFER_SATS
    # and trading resumes on the same chains without overfilling them
    more, statuses = storm(takers, offers, bids=120)
    assert set(statuses) <= {201, 409}, statuses
    for o in offers:
        filled, open_ = chain_sats(chain_records(net, owner, o["id"]))
        assert filled + open_ == OFFER_SATS and filled <= OFFER_SATS
    total = sum(r["amount"] for r in stored_fills(data_dir_of(owner), "maker").values())
    assert total <= OFFER_SATS * OFFERS
    assert {r["fill_id"] for _, r in accepted + more} <= set(
        stored_fills(data_dir_of(owner), "maker")
    )
    net.cluster.stop(owner)


@pytest.mark.slow
def test_hot_offer_soak_sells_every_satoshi_exactly_once(net: Net) -> None:
    """One big offer bid down to zero by all takers, with an owner SIGKILL on the way."""
    owner = net.add_node(grape=2)
    takers = net.nodes[1:]
    bids_wanted, bid_sats = 3_000, 1_000
    offer = net.create(owner, amount=format_btc(bids_wanted * bid_sats))
    wait_until(lambda: all(net.offer(t, offer["id"]) for t in takers), 5, "propagation")
    hot = [offer]
    killed = threading.Event()

    def kill_once() -> None:
        if not killed.is_set():
            killed.set()
            net.cluster.kill(owner)

    accepted, _ = storm_fixed(takers, hot, 1_200, bid_sats, on_progress_at=(400, kill_once))
    net.restart(owner)
    more, _ = storm_fixed(takers, hot, 2 * bids_wanted, bid_sats)
    receipts = accepted + more
    chain = chain_records(net, owner, offer["id"])
    filled, open_ = chain_sats(chain)
    assert filled + open_ == bids_wanted * bid_sats and open_ == 0
    given = {r["fill_id"] for _, r in receipts}
    stored = stored_fills(data_dir_of(owner), "maker")
    assert given <= set(stored)
    assert sum(r["amount"] for r in stored.values()) == bids_wanted * bid_sats
    net.cluster.stop(owner)


def storm_fixed(
    takers: list[Proc],
    offers: list[dict],
    bids: int,
    sats: int,
    on_progress_at: tuple[int, Any] | None = None,
) -> tuple[list[tuple[Proc, dict]], dict[int, int]]:
    """Like ``storm`` with one bid size, and an action after ``n`` answers."""
    count = [0]
    lock = threading.Lock()

    def progress() -> None:
        with lock:
            count[0] += 1
            due = on_progress_at is not None and count[0] == on_progress_at[0]
        if due:
            on_progress_at[1]()

    return storm(takers, offers, bids, on_progress=progress, sats=(sats, sats))
