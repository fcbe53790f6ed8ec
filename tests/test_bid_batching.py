"""Bids to one owner share requests (``BidBatcher``), and each still gets its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from nacl.signing import SigningKey

from p2p_offers.bids import Bid, make_bid
from p2p_offers.node import errors
from p2p_offers.node.network.batching import BidBatcher
from p2p_offers.node.network.transport import MaybeDelivered, NotDelivered
from p2p_offers.signing import public_hex

KEY = SigningKey(bytes(range(32)))
OWNER = public_hex(SigningKey(bytes(range(1, 33))))


def bid(amount: int) -> Bid:
    return make_bid(
        KEY, offer_id="0" * 36, offer_seq=1, maker=OWNER, amount=amount, price=1, now_ms=0
    )


class Owner:
    """A send function that answers like an owner: a receipt-ish reply per bid, an odd
    amount refused; it records every request and how many were out at once."""

    def __init__(self, pause_s: float = 0.02, fail: BaseException | None = None) -> None:
        self.pause_s, self.fail = pause_s, fail
        self.requests: list[list[str]] = []
        self.out = self.most_out = 0
        self.lock = threading.Lock()

    def __call__(self, address: str, bids: list[Bid], timeout_s: float) -> list[Any]:
        assert timeout_s > 0
        with self.lock:
            self.requests.append([b.bid_id for b in bids])
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        time.sleep(self.pause_s)  # the owner at work: later bids queue meanwhile
        with self.lock:
            self.out -= 1
        if self.fail is not None:
            raise self.fail
        return [
            errors.InsufficientAmount("odd") if b.amount % 2 else {"bid_id": b.bid_id} for b in bids
        ]


def fire(batcher: BidBatcher, bids: list[Bid], timeout_s: float = 5.0) -> list[Any]:
    def one(b: Bid) -> Any:
        try:
            return batcher.send("owner:1", b, timeout_s)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(bids)) as pool:
        return list(pool.map(one, bids))


def test_concurrent_bids_share_requests_and_each_gets_its_own_answer() -> None:
    owner = Owner()
    batcher = BidBatcher(owner, time.monotonic, max_batch=8, in_flight=2)
    bids = [bid(amount) for amount in range(2, 82)]
    answers = fire(batcher, bids)
    for b, answer in zip(bids, answers, strict=True):
        if b.amount % 2:
            assert isinstance(answer, errors.InsufficientAmount)
        else:
            assert answer == {"bid_id": b.bid_id}
    sent = [i for request in owner.requests for i in request]
    assert sorted(sent) == sorted(b.bid_id for b in bids)  # each sent exactly once
    assert len(owner.requests) < len(bids) / 2  # batched
    assert max(len(r) for r in owner.requests) <= 8
    assert owner.most_out <= 2
    assert batcher.busy() == 0  # no leader's place left behind


def test_a_lone_bid_goes_at_once_and_alone() -> None:
    owner = Owner(pause_s=0)
    batcher = BidBatcher(owner, time.monotonic)
    b = bid(2)
    assert batcher.send("owner:1", b, 1.0) == {"bid_id": b.bid_id}
    assert owner.requests == [[b.bid_id]]


def test_a_failed_request_fails_every_bid_in_it() -> None:
    owner = Owner(fail=MaybeDelivered("reset after sending"))
    batcher = BidBatcher(owner, time.monotonic, in_flight=1)
    answers = fire(batcher, [bid(2) for _ in range(12)])
    assert all(isinstance(a, MaybeDelivered) for a in answers)  # each of them in doubt
    assert len({id(a) for a in answers}) == len(answers)  # raised as one instance each
    assert batcher.busy() == 0


def test_a_bid_whose_time_ran_out_in_the_queue_is_never_sent() -> None:
    owner = Owner(pause_s=0.3)
    batcher = BidBatcher(owner, time.monotonic, in_flight=1)
    first, late = bid(2), bid(4)
    with ThreadPoolExecutor(2) as pool:
        ahead = pool.submit(batcher.send, "owner:1", first, 5.0)
        while not owner.requests:
            time.sleep(0.001)
        behind = pool.submit(batcher.send, "owner:1", late, 0.05)
        with pytest.raises(NotDelivered):
            behind.result()
        assert ahead.result() == {"bid_id": first.bid_id}
    assert owner.requests == [[first.bid_id]]
    assert batcher.busy() == 0
