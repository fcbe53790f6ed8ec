"""The rotation the ledger's anti-entropy asks peers by (``peers.Rotation``)."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from p2p_offers.node.network.peers import Peer, Rotation


def peers(ids: range | list[int]) -> list[Peer]:
    return [Peer(f"10.0.0.{i}:1", f"{i:064x}") for i in ids]


@given(n=st.integers(0, 60), per_round=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_every_peer_is_asked_within_a_cycle_and_no_round_asks_more(n, per_round, seed):
    rotation = Rotation(per_round, random.Random(seed))
    present = peers(range(n))
    cycle = math.ceil(n / per_round) if n else 1
    asked: list[list[Peer]] = [rotation.take(present) for _ in range(4 * cycle)]
    assert all(len(r) == min(per_round, n) for r in asked)
    assert all(len(set(r)) == len(r) for r in asked)  # nobody twice in one round
    # a peer first in one cycle may be last in the next: any two cycles' rounds ask all
    for start in range(len(asked) - 2 * cycle + 1):
        assert {p for r in asked[start : start + 2 * cycle] for p in r} == set(present)


def test_peers_gone_are_not_asked_and_new_peers_are():
    rotation = Rotation(3, random.Random(1))
    rotation.take(peers(range(10)))
    now = peers([*range(5), 20, 21])
    asked = {p for _ in range(4) for p in rotation.take(now)}
    assert asked == set(now)


def test_a_three_three_split_heals_in_one_round():
    """Why three: a node of one half asks three of its five peers, so one from the other."""
    for seed in range(50):
        mine, others = peers(range(2)), peers(range(2, 5))
        asked = Rotation(3, random.Random(seed)).take(mine + others)
        assert set(asked) & set(others)
