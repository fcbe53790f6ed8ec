"""Regression tests for reviewer-found node bugs (one test per bug, in-process where possible)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from nacl.signing import SigningKey

from p2p_offers import bids
from p2p_offers.cluster import free_ports
from p2p_offers.link import Link
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.errors import ApiError
from p2p_offers.node.runtime import Node
from p2p_offers.node.uncross import Uncrosser
from p2p_offers.offers import FILLED, OPEN

TAKER = SigningKey(bytes([7]) * 32)
T0 = 1_700_000_000_000


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def make_node(tmp_path: Path, clock: Clock | None = None) -> Node:
    """A node whose grape is unreachable; no thread is started, so nothing talks to it."""
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    config = NodeConfig(port=4999, grape=url, data_dir=tmp_path)
    return Node(config, clock=clock or Clock(), link=Link(url))


def bid_for(node: Node, offer_id: str, amount: int, seq: int = 1) -> bids.Bid:
    return bids.make_bid(
        TAKER,
        offer_id=offer_id,
        offer_seq=seq,
        maker=node.client_id,
        amount=amount,
        price=3_000_000,
        now_ms=node.clock(),
    )


# -- 1. PATCH/DELETE on a filled parent must not touch the live remainder ------------------------


def test_update_and_cancel_of_filled_parent_refuse_and_name_live_record(tmp_path) -> None:
    node = make_node(tmp_path)
    parent = node.service.create("sell", 3_000_000, 100_000_000)
    receipt = node.service.accept_bid(bid_for(node, parent.id, 40_000_000))
    rest_id = receipt.remainder
    assert node.service.own(parent.id).offer.status == FILLED
    for act in (
        lambda: node.service.update(parent.id, None, 100_000_000),
        lambda: node.service.cancel(parent.id),
    ):
        with pytest.raises(ApiError) as exc:
            act()
        assert exc.value.status == 409 and exc.value.code == "offer_not_open"
        assert exc.value.details == {"offer_id": rest_id}
    rest = node.service.own(rest_id)
    assert rest.offer.status == OPEN and rest.offer.amount == 60_000_000 and rest.seq == 1
    # the live record itself can still be changed, and bids on the parent still reach it
    assert node.service.update(rest_id, None, 50_000_000).offer.amount == 50_000_000
    assert node.service.accept_bid(bid_for(node, parent.id, 1, seq=1)).offer_id == rest_id
    node.stop()


# -- 2. uncrossing gives back only what it did not sell, even when the sweep fails ----------------


class _FailingSweeper:
    """Plans ``reserve`` sats, fills ``sold`` of them, then fails (an owner's sqlite error...)."""

    def __init__(self, reserve: int, sold: int) -> None:
        self.reserve, self.sold = reserve, sold

    def usable(self, entry) -> bool:
        return True

    def plan(self, book, side, limit, amount, eligible=None):
        return [(SimpleNamespace(id="x", owner="y", priority=0), self.reserve)]

    def take(self, side, limit, amount, eligible=None, on_fill=None, on_doubt=None):
        if on_fill is not None:
            on_fill(SimpleNamespace(amount=self.sold))
        raise RuntimeError("boom after a fill")


def test_uncross_failure_after_a_fill_gives_back_only_the_unsold_part(tmp_path) -> None:
    node = make_node(tmp_path)
    own = node.service.create("sell", 3_000_000, 1_000)
    entry = SimpleNamespace(id=own.id, side="sell", price=3_000_000, amount=1_000, priority=1)
    uncrosser = Uncrosser(node.client_id, node.index, node.service, _FailingSweeper(600, 400), None)
    with pytest.raises(RuntimeError):
        uncrosser.uncross(entry)
    # 600 reserved, 400 of them sold: 1000 - 400 remain on offer, never the sold 400 again
    assert node.service.own(own.id).offer.amount == 600
    node.stop()
