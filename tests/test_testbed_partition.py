"""Six hosts split 3|3 while both sides trade, then heal (issue 8.4).

During the cut each side creates offers and fills bids inside itself; a bid on
an offer whose owner is on the other side fails cleanly (owner unreachable or
in doubt, never a fill the owner does not know of). An owner on the far side
also cancels an offer the near side still lists. After the heal, every host's
open book and every ledger head agree, and no offer is overfilled.

``make test`` runs an 8 s cut with a 2 s anti-entropy interval; the 30 s cut
the issue asks for is ``@pytest.mark.slow``. Checks wait for states, not times;
the number of anti-entropy rounds the repair took is read from ``/health``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from node_helpers import wait_until
from testbed_trading import FAILED_CLEANLY, Desk

from p2p_offers.testbed import Conditions, TestBed, missing_requirements

REASON = missing_requirements()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"test bed: {REASON}")
SYNC_S = 2
WAN = Conditions(rtt_ms=40, jitter_ms=5, loss_pct=0)


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[TestBed]:
    with TestBed(6, WAN, tmp_path_factory.mktemp("partition")) as testbed:
        testbed.start_network(node_extra=["--sync-interval", str(SYNC_S)])
        yield testbed


def rounds(desk: Desk, bed: TestBed) -> list[int]:
    return [desk.get(h, "/health")["gossip"]["rounds"] for h in bed.hosts]


def split_trade_heal(bed: TestBed, cut_s: float) -> None:
    desk = Desk(bed)
    hosts = bed.hosts
    left, right = hosts[:3], hosts[3:]
    price = {"l": "30000.00", "r": "31000.00"}
    # before the cut: one offer per side that everybody sees
    far = desk.offer(right[0], "sell", price["r"], "1")  # the left will bid across the cut
    doomed = desk.offer(left[0], "sell", price["l"], "1")  # cancelled while the right is cut off
    wait_until(
        lambda: all(desk.status(h, o["id"]) == "open" for h in hosts for o in (far, doomed)),
        30,
        "both offers on every host",
    )
    bed.partition(left, right)
    cut_at = time.monotonic()
    remainders: list[str] = []  # what is left of the offers filled in part inside each side
    for side, (maker, taker, _) in (("l", left), ("r", right)):
        offer = desk.offer(maker, "sell", price[side], "0.5")
        wait_until(
            lambda t=taker, o=offer["id"]: desk.status(t, o) == "open", 20, "offer on its side"
        )
        filled = desk.bid(taker, offer["id"], "0.2")
        assert filled.status_code == 201, filled.text
        remainders.append(filled.json()["remainder"])
    # across the cut: the owner cannot be reached; the bid fails cleanly, no fill
    across = desk.bid(left[1], far["id"], "0.3")
    assert across.status_code in (502, 503, 504), across.text
    assert across.json()["error"]["code"] in FAILED_CLEANLY, across.text
    cancel = desk.call("DELETE", left[0], f"/offers/{doomed['id']}")
    assert cancel.status_code == 200, cancel.text
    assert desk.status(right[1], doomed["id"]) == "open"  # the right has not heard
    more = desk.offer(right[1], "buy", "29000.00", "0.1")  # a new offer the left will learn
    left_over = cut_s - (time.monotonic() - cut_at)
    if left_over > 0:
        time.sleep(left_over)  # the cut lasts this long: a condition of the test, not a check
    before = rounds(desk, bed)
    bed.heal()
    state = wait_until(lambda: desk.agreement(hosts), 60, "books and ledgers agree after heal")
    after = rounds(desk, bed)
    ids = {i for i, _ in state["book"]}
    assert doomed["id"] not in ids  # the cancel made while cut off reached the other side
    assert more["id"] in ids  # and the offer made there reached this one
    check_far(desk, bed, far["id"], ids, across.json()["error"]["code"])
    for rest in remainders:
        assert rest in ids
        assert desk.get(hosts[0], f"/offers/{rest}")["amount_btc"] == "0.30000000"
    assert desk.receipts_in_ledgers(hosts, hosts)
    # Each node starts one round per interval. The target is two rounds; allowed here: the
    # round under way at the heal, and one for the ledger heads, which follow the offers
    # (measured 2 to 3; main took 10 after a 30 s cut, its halves shunning each other).
    assert max(a - b for a, b in zip(after, before, strict=True)) <= 4, (before, after)


def check_far(desk: Desk, bed: TestBed, far_id: str, book: set[str], code: str) -> None:
    """The offer bid on across the cut: untouched, or (a bid in doubt, re-sent by its taker
    after the heal) filled once; never more than it offered."""
    owner = bed.hosts[3]
    far = desk.get(owner, f"/offers/{far_id}")
    if far["status"] == "open":
        assert far["amount_btc"] == "1.00000000" and far_id in book
        return
    assert code == "bid_in_doubt", far  # only a bid that may have arrived can have filled it
    fill = far["fill"]
    assert (far["status"], fill["amount_btc"]) == ("filled", "0.30000000"), far
    rest = desk.get(owner, f"/offers/{fill['remainder']}")
    assert rest["amount_btc"] == "0.70000000" and rest["id"] in book  # 0.3 + 0.7 = 1, no overfill


def test_a_short_partition_heals(bed):
    split_trade_heal(bed, cut_s=8)


@pytest.mark.slow
def test_a_30_second_partition_heals(bed):
    split_trade_heal(bed, cut_s=30)
