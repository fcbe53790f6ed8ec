"""Kill -9 and restart a third of the nodes during a trading run (issue 8.4).

Six hosts, each a maker with one sell offer; the takers bid on each other's
offers from four threads while the nodes of two hosts are killed with SIGKILL
(mid-trade: a bid to them may be in flight, so in doubt) and later restarted on
their own data. Checks: the live hosts keep filling bids among themselves while
the two are down; nothing is lost (every receipt any taker holds, the killed
ones included, is in its maker's verified ledger on every node); no maker
filled more than it offered; books and ledgers agree at the end. Bids that
cannot reach an owner fail cleanly, never with an internal error.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
from node_helpers import wait_until
from testbed_trading import FAILED_CLEANLY, Desk

from p2p_offers.money import parse_btc
from p2p_offers.testbed import Conditions, Host, TestBed, missing_requirements

REASON = missing_requirements()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"test bed: {REASON}")
OFFERED = "1"
BID = "0.01"


@pytest.fixture(scope="module")
def bed(tmp_path_factory) -> Iterator[TestBed]:
    with TestBed(6, Conditions(rtt_ms=20), tmp_path_factory.mktemp("churn")) as testbed:
        testbed.start_network(node_extra=["--sync-interval", "2"])
        yield testbed


class Trading:
    """Takers bidding on other makers' open offers until stopped; counts what happened."""

    def __init__(self, desk: Desk, hosts: list[Host]) -> None:
        self.desk, self.hosts = desk, hosts
        self.takers: set[int] = {h.index for h in hosts}
        self.fills: Counter[tuple[int, int]] = Counter()  # (taker, maker) -> fills
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def fills_between(self, hosts: list[Host]) -> int:
        idx = {h.index for h in hosts}
        with self.lock:
            return sum(n for (t, m), n in self.fills.items() if t in idx and m in idx)

    def run(self, worker: int) -> None:
        try:
            self._run(worker)
        except Exception as exc:  # a dead worker is a failure, not a quieter run
            with self.lock:
                self.failures.append(f"worker {worker}: {exc!r}")

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        ids = {self.desk.client_id(h): h.index for h in self.hosts}
        while not self.stop.is_set():
            with self.lock:
                takers = sorted(self.takers)
            if not takers:
                continue
            taker = self.hosts[rng.choice(takers) - 1]
            try:
                book = self.desk.get(taker, "/offers?status=open")["offers"]
                theirs = [o for o in book if ids.get(o["owner"]) not in (None, taker.index)]
                if not theirs:
                    continue
                offer = rng.choice(theirs)
                resp = self.desk.bid(taker, offer["id"], BID)
            except requests.ConnectionError:
                with self.lock:
                    if taker.index in self.takers:  # not one we killed under the request
                        raise
                continue
            code = resp.json().get("error", {}).get("code") if resp.status_code != 201 else None
            with self.lock:
                if resp.status_code == 201:
                    self.fills[(taker.index, ids[offer["owner"]])] += 1
                elif resp.status_code >= 500 and code not in FAILED_CLEANLY:
                    self.failures.append(resp.text)
                # 409s (stale version, taken meanwhile) and clean peer failures are fine


def test_a_third_of_the_nodes_killed_and_restarted_while_trading_lose_nothing(bed):
    desk = Desk(bed)
    hosts = bed.hosts
    doomed, live = hosts[4:], hosts[:4]
    made = [desk.offer(h, "sell", f"{30000 + h.index}.00", OFFERED) for h in hosts]
    wait_until(
        lambda: all(len(desk.book(h)) == len(made) for h in hosts), 30, "every offer everywhere"
    )
    trading = Trading(desk, hosts)
    workers = [threading.Thread(target=trading.run, args=(i,), daemon=True) for i in range(4)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: trading.fills_between(hosts) >= 8, 60, "trading under way")
        held_before = {h.index: taker_fills(desk, h) for h in doomed}
        with trading.lock:
            trading.takers -= {h.index for h in doomed}
        for h in doomed:
            assert h.node is not None and bed.cluster is not None
            bed.cluster.kill(h.node)  # SIGKILL, mid-trade
        base = trading.fills_between(live)
        wait_until(lambda: trading.fills_between(live) >= base + 8, 60, "the rest trading on")
        for h in doomed:
            bed.start_node(h, ["--sync-interval", "2"])
        with trading.lock:
            trading.takers |= {h.index for h in doomed}
        for h in doomed:  # nothing a killed taker held is gone
            assert held_before[h.index] <= taker_fills(desk, h)
        back = trading.fills_between(hosts)
        wait_until(lambda: trading.fills_between(hosts) >= back + 6, 60, "trading with all")
    finally:
        trading.stop.set()
        for w in workers:
            w.join(60)
    assert trading.failures == []
    wait_until(lambda: desk.agreement(hosts), 60, "books and ledgers agree")
    wait_until(lambda: desk.receipts_in_ledgers(hosts, hosts), 60, "every receipt everywhere")
    for h in hosts:  # no maker sold more than it offered
        me = desk.client_id(h)
        sold = sum(
            parse_btc(t["amount_btc"])
            for t in desk.get(h, f"/trades?maker={me}&limit=1000")["trades"]
        )
        assert sold <= parse_btc(OFFERED)


def taker_fills(desk: Desk, host: Host) -> set[str]:
    me = desk.client_id(host)
    return {t["fill_id"] for t in desk.get(host, f"/trades?taker={me}&limit=1000")["trades"]}
