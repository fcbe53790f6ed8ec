"""Trading on the test bed, shared by the partition and churn tests (issue 8.4).

Everything goes from the control namespace (undelayed, never cut) to each
host's node, as a person at each keyboard would. Checks wait for a state, never
for a time.
"""

from __future__ import annotations

import threading
from typing import Any

import requests

from p2p_offers.testbed import Host, TestBed

FAILED_CLEANLY = {"owner_unreachable", "bid_in_doubt", "peer_failure"}


class Desk:
    """HTTP from the control namespace to every host's node (a session per thread)."""

    def __init__(self, bed: TestBed) -> None:
        self.bed = bed
        self.local = threading.local()
        self.ids: dict[str, str] = {}

    def call(self, method: str, host: Host, path: str, **kw: Any) -> requests.Response:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.trust_env = False
        with self.bed.control():
            return session.request(method, host.node_url + path, timeout=30, **kw)

    def get(self, host: Host, path: str) -> Any:
        resp = self.call("GET", host, path)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def client_id(self, host: Host) -> str:
        if host.addr not in self.ids:
            self.ids[host.addr] = self.get(host, "/health")["client_id"]
        return self.ids[host.addr]

    def offer(self, host: Host, side: str, price: str, amount: str) -> dict:
        body = {"side": side, "price_usd": price, "amount_btc": amount}
        resp = self.call("POST", host, "/offers", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def bid(self, host: Host, offer_id: str, amount: str) -> requests.Response:
        return self.call("POST", host, f"/offers/{offer_id}/bids", json={"amount_btc": amount})

    def status(self, host: Host, offer_id: str) -> str | None:
        resp = self.call("GET", host, f"/offers/{offer_id}")
        return resp.json()["status"] if resp.status_code == 200 else None

    def book(self, host: Host) -> list[tuple[str, int]]:
        offers = self.get(host, "/offers?status=open")["offers"]
        return sorted((o["id"], o["seq"]) for o in offers)

    def heads(self, host: Host) -> dict[str, Any] | None:
        """The verified ledger's feeds (owner -> its check) if everything verifies, else None."""
        report = self.get(host, "/ledger/verify")
        if not report["ok"]:
            return None
        return {f["owner"]: f for f in report["feeds"]}

    def agreement(self, hosts: list[Host]) -> dict[str, Any] | None:
        """The common open book and ledger heads if every host has the same, else None."""
        books = [self.book(h) for h in hosts]
        if any(b != books[0] for b in books):
            return None
        heads = [self.heads(h) for h in hosts]
        if heads[0] is None or any(x != heads[0] for x in heads):
            return None
        return {"book": books[0], "heads": heads[0]}

    def receipts_in_ledgers(self, takers: list[Host], hosts: list[Host]) -> bool:
        """Every receipt a taker holds is in its maker's verified feed on every host."""
        held = []
        for taker in takers:
            me = self.client_id(taker)
            held += self.get(taker, f"/trades?taker={me}&limit=1000")["trades"]
        for host in hosts:
            trades = {self.fill_key(t) for t in self.get(host, "/trades?limit=1000")["trades"]}
            if not all(self.fill_key(t) in trades for t in held) or self.heads(host) is None:
                return False
        return True

    @staticmethod
    def fill_key(trade: dict) -> str:
        return str(trade["fill_id"])
