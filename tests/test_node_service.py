"""The owner's service in process: group-committed bids under contention, restarts, the store."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from nacl.signing import SigningKey
from node_helpers import Clock, local_node

from p2p_offers import bids
from p2p_offers.node.errors import DomainError
from p2p_offers.node.http.status import status_of
from p2p_offers.node.storage.receipts import Role
from p2p_offers.offers import FILLED, OPEN

MAKER = Role.MAKER

TAKERS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]


def bid_for(node, offer_id: str, amount: int, key: SigningKey = TAKERS[0], **kw) -> bids.Bid:
    args = {"offer_seq": 1, "maker": node.client_id, "price": 3_000_000, "now_ms": node.clock()}
    return bids.make_bid(key, offer_id=offer_id, amount=amount, **{**args, **kw})


def chain_of(node, root: str) -> list:
    """Own records from ``root`` along fill.remainder, newest versions."""
    out, offer_id = [], root
    while offer_id:
        signed = node.maker.own(offer_id)
        out.append(signed.offer)
        offer_id = signed.offer.fill.remainder if signed.offer.fill else None
    return out


def test_concurrent_bids_never_overfill_and_each_bid_fills_once(grape_url, tmp_path) -> None:
    _, node, _ = local_node(grape_url, tmp_path)
    offers_ = [node.maker.create("sell", 3_000_000, 5_000) for _ in range(3)]
    plan = [bid_for(node, offers_[i % 3].id, 37 + (i * 7) % 90, TAKERS[i % 4]) for i in range(600)]
    plan += plan[:50]  # retries of the same signed bids, racing their originals
    outcomes: dict[str, list] = {}
    lock = threading.Lock()

    def one(bid: bids.Bid) -> None:
        try:
            result: object = node.maker.accept_bid(bid)
        except DomainError as exc:
            result = exc.code
        with lock:
            outcomes.setdefault(bid.bid_id, []).append(result)

    with ThreadPoolExecutor(24) as pool:
        list(pool.map(one, plan))

    receipts = {}
    for results in outcomes.values():
        won = [r for r in results if isinstance(r, bids.Receipt)]
        # a bid and its retry get the same answer: the same receipt, or the same refusal
        assert len({r.fill_id for r in won}) <= 1
        assert not won or len(won) == len(results)
        if won:
            receipts[won[0].fill_id] = won[0]
    assert {f.receipt.fill_id for f in node.receipts.all(MAKER)} == set(receipts)
    for offer in offers_:
        chain = chain_of(node, offer.id)
        filled = sum(o.fill.amount for o in chain if o.fill)
        open_ = sum(o.amount for o in chain if o.status == OPEN)
        assert filled + open_ == 5_000
        ids = {o.id for o in chain}
        assert filled == sum(r.amount for r in receipts.values() if r.offer_id in ids)
    node.stop()


def test_a_bid_id_reused_on_two_chains_fills_only_once(grape_url, tmp_path) -> None:
    _, node, _ = local_node(grape_url, tmp_path)
    a = node.maker.create("sell", 3_000_000, 1_000)
    b = node.maker.create("sell", 3_000_000, 1_000)
    first = bid_for(node, a.id, 10)
    twin = bid_for(node, b.id, 10, bid_id=first.bid_id)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def go(bid: bids.Bid) -> None:
        barrier.wait()
        try:
            results.append(node.maker.accept_bid(bid))
        except DomainError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=go, args=(x,)) for x in (first, twin)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, bids.Receipt) for r in results) == 1
    assert "duplicate_bid" in results
    assert len(node.receipts.all(MAKER)) == 1
    node.stop()


def test_restart_restores_heads_seqs_and_pending_publications(grape_url, tmp_path) -> None:
    clock = Clock()
    _, node, _link = local_node(grape_url, tmp_path, clock)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    receipt = node.maker.accept_bid(bid_for(node, offer.id, 400))
    node.db.close()

    _, again, link2 = local_node(grape_url, tmp_path, clock)
    assert again.client_id == node.client_id
    again.maker.load()
    rest = again.maker.own(receipt.remainder)
    assert rest.offer.status == OPEN and rest.offer.amount == 600
    assert again.maker.own(offer.id).offer.status == FILLED
    # the remainder is managed again: bids on the root land on it, seqs continue
    second = again.maker.accept_bid(bid_for(again, offer.id, 600, TAKERS[1]))
    assert second.offer_id == rest.id and second.remainder is None
    assert again.maker.own(rest.id).seq == 2
    # nothing was published before the "crash", so everything is queued again
    assert again.publisher.pending() >= 2
    assert link2.get_record(offer.hash) is None and link2.get_record(rest.hash) is None
    again.publisher.start()
    again.publisher.stop(flush_timeout_s=5)
    assert link2.get_record(offer.hash) is not None
    stored = link2.get_record(rest.hash)
    assert stored is not None and stored.seq == 2
    again.db.close()


def test_expired_own_offer_refuses_bids_and_stays_expired(grape_url, tmp_path) -> None:
    clock = Clock()
    _, node, _ = local_node(grape_url, tmp_path, clock)
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=1_000)
    clock.now += 1_000
    with pytest.raises(DomainError) as exc:
        node.maker.accept_bid(bid_for(node, offer.id, 1))
    assert exc.value.code == "offer_expired"
    assert node.maker.refresh_due() == 0  # an expired offer is let go, not revived
    with pytest.raises(DomainError) as exc:
        node.maker.accept_bid(bid_for(node, offer.id, 1))
    assert status_of(exc.value) == 409
    assert node.maker.own(offer.id).seq == 1
    node.stop()
