"""Regression tests for the findings of the #12 review (each fails on main as it was).

In process, on the in-memory DHT and peer transport of ``fakes``: no grape needed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import MemoryDht, PlannedSweeper
from nacl.signing import SigningKey
from node_helpers import Clock

from p2p_offers import bids, ledger, offers
from p2p_offers.cluster import free_ports
from p2p_offers.node import errors
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.network.peers import REST_NODE_SERVICE, Peers
from p2p_offers.node.runtime import Node
from p2p_offers.node.storage.receipts import Role, StoredFill
from p2p_offers.node.trading.order import OrderStatus
from p2p_offers.node.trading.uncross import Uncrosser
from p2p_offers.offers import CANCELLED, OPEN, TransitionError
from p2p_offers.signing import public_hex

TAKER = SigningKey(bytes([7]) * 32)


def make_node(tmp_path: Path, clock: Clock | None = None) -> Node:
    config = NodeConfig(port=free_ports(1)[0], grape="http://127.0.0.1:1", data_dir=tmp_path)
    return Node(config, clock=clock or Clock(), dht=MemoryDht())


def bid_for(node: Node, offer_id: str, amount: int) -> bids.Bid:
    return bids.make_bid(
        TAKER,
        offer_id=offer_id,
        offer_seq=1,
        maker=node.client_id,
        amount=amount,
        price=3_000_000,
        now_ms=node.clock(),
    )


# -- peers: what is known of each address is read and written under one lock ------------------


class _InstantClient:
    def identify(self, address: str) -> str:
        return public_hex(SigningKey(int(address.rsplit(":", 1)[1]).to_bytes(32, "big")))


class _RacingIdentities(dict):
    """Plays a push thread forgetting an address just after a refresh checked it is known.

    It strikes on the second check of an address (the first one decides whether to probe
    it), which is where main's refresh went on to index the dict: a KeyError.
    """

    peers: Peers

    def __contains__(self, address: object) -> bool:
        known = super().__contains__(address)
        self.checks = getattr(self, "checks", {})
        self.checks[address] = self.checks.get(address, 0) + 1
        if known and self.checks[address] == 2:
            pusher = threading.Thread(target=self.peers.unreachable, args=(address,))
            pusher.start()
            pusher.join(0.05)  # with the fix it waits for the refresh to finish instead
        return known


def test_peer_refresh_survives_an_address_forgotten_by_a_push_thread() -> None:
    dht = MemoryDht()
    for port in (1, 2, 3):
        dht.announce(REST_NODE_SERVICE, port)
    peers = Peers(dht, _InstantClient(), "me")  # type: ignore[arg-type]
    peers.invalidate = lambda: None  # type: ignore[method-assign]  # no background refreshes
    assert len(peers._refresh()) == 3  # all three identified
    racing = _RacingIdentities(peers._identities)
    racing.peers = peers
    peers._identities = racing
    for _ in range(3):
        found = peers._refresh()  # never a KeyError for an address forgotten meanwhile
        assert {p.address for p in found} <= {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
    peers.close()


# -- own offers: expiry is checked under the chain's lock, by every change ---------------------


def test_update_refuses_an_expired_offer() -> None:
    offer = offers.create("sell", 3_000_000, 1_000, 0, 1_000)
    with pytest.raises(TransitionError) as exc:
        offer.update(1_000, amount=500)
    assert exc.value.code == "offer_expired"
    with pytest.raises(TransitionError):
        offer.refresh(1_000, 1_000)


def test_patch_of_an_expired_own_offer_is_409_and_never_reopens_it(tmp_path) -> None:
    clock = Clock()
    node = make_node(tmp_path, clock)
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=60_000)
    clock.now += 60_000
    with pytest.raises(errors.OfferExpired):
        node.maker.update(offer.id, None, 500)
    node.maker.refresh_due()
    assert node.maker.open_count() == 0 and node.maker.own(offer.id).seq == 1
    node.stop()


def test_refresh_sweep_cannot_drop_a_head_an_update_is_committing(tmp_path, monkeypatch) -> None:
    """An update commits while the sweep runs with the clock past expiry: the head the update
    wrote is not put back open-but-expired behind the sweep's back."""
    clock = Clock()
    node = make_node(tmp_path, clock)
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=60_000)
    clock.now += 59_000  # one second left: the update is allowed
    committing, release = threading.Event(), threading.Event()
    real_save = node.own_offers.save

    def slow_save(tx, versions):
        committing.set()
        assert release.wait(5)
        return real_save(tx, versions)

    monkeypatch.setattr(node.own_offers, "save", slow_save)
    updater = threading.Thread(target=lambda: node.maker.update(offer.id, None, 900))
    updater.start()
    assert committing.wait(5)
    clock.now += 2_000  # expired while the update is being written
    monkeypatch.setattr(node.own_offers, "save", real_save)
    node.maker.refresh_due()  # the chain is busy: it must wait, not drop the head now
    release.set()
    updater.join()
    node.maker.refresh_due()  # now it lets the expired offer go
    assert node.maker.open_count() == 0
    node.stop()


# -- orders: a rest that was posted is what the order says -------------------------------------


def test_order_failing_after_its_rest_was_posted_says_resting(tmp_path) -> None:
    node = make_node(tmp_path)

    def boom() -> None:
        raise RuntimeError("a listener failed after the rest was posted")

    node.desk.rested.connect(boom)
    node.desk.start()
    order = node.desk.submit("buy", 3_000_000, 1_000)
    assert order.done.is_set() and order.offer_id is not None
    assert node.maker.own(order.offer_id).offer.status == OPEN  # the rest is live ...
    assert order.status == OrderStatus.RESTING  # ... and the order says so
    assert node.orders.get(order.id).status == OrderStatus.RESTING
    node.desk.stop()
    node.stop()


# -- storage: constraints are told apart by what they are, never swallowed ----------------------


def test_a_receipt_that_breaks_a_constraint_is_an_error_not_a_duplicate(tmp_path) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    bid = bid_for(node, offer.id, 10)
    receipt = node.maker.accept_bid(bid)
    copy = StoredFill(bid, receipt, Role.TAKER)
    assert node.receipts.add(copy) is True
    assert node.receipts.add(copy) is False  # the same bid again: a no-op, said so
    broken = SimpleNamespace(**{**receipt.to_wire(), "fill_id": None}, to_wire=receipt.to_wire)
    with pytest.raises(Exception, match="NOT NULL"):
        node.receipts.add(StoredFill(bid_for(node, offer.id, 1), broken, Role.TAKER))  # type: ignore[arg-type]
    node.stop()


def test_a_gap_in_a_feed_is_a_gap_error_whatever_other_errors_say(tmp_path) -> None:
    key = SigningKey.generate()
    owner = public_hex(key)
    entries: list = []
    head = None
    for n in range(3):
        head = ledger.append(key, head, {"maker": owner, "n": n}, n)
        entries.append(head)
    with pytest.raises(ledger.GapError):
        ledger.Feed(owner, verify_receipt=None).extend([entries[0], entries[2]])
    node = make_node(tmp_path)

    def picky(receipt) -> None:  # an error whose text happens to read like a gap's
        raise ledger.LedgerError("receipt: expected height of the order book")

    feeds = {"gap": ledger.Feed(owner, verify_receipt=None), "picky": ledger.Feed(owner, picky)}
    node.replicator._feed = lambda o: feeds["gap"]  # type: ignore[method-assign]
    assert node.replicator.accept(owner, [entries[0], entries[2]]) == 0
    node.replicator._feed = lambda o: feeds["picky"]  # type: ignore[method-assign]
    assert node.replicator.accept(owner, entries[:1]) == 0
    stats = node.replicator.stats()
    assert (stats["gaps"], stats["invalid"]) == (1, 1)
    node.stop()


# -- uncrossing: only the reservation's own closing may post an amount anew --------------------


def _uncross(node: Node, offer, reserve: int, during) -> dict[str, int]:
    entry = SimpleNamespace(id=offer.id, side="sell", price=offer.offer.price, amount=1_000)
    sweeper = PlannedSweeper(reserve, lambda on_fill: during())
    uncrosser = Uncrosser(node.client_id, node.index, node.maker, sweeper, None)  # type: ignore[arg-type]
    uncrosser.uncross(entry)  # type: ignore[arg-type]
    return uncrosser.stats()


def test_an_offer_cancelled_during_uncrossing_is_not_posted_again(tmp_path) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    stats = _uncross(node, offer, 600, lambda: node.maker.cancel(offer.id))
    assert node.maker.own(offer.id).offer.status == CANCELLED
    assert node.maker.open_count() == 0  # the 600 reserved were not posted as a new offer
    assert node.index.counts()["open"] == 0 and stats["given_back_dropped"] == 1
    node.stop()


def test_an_offer_repriced_during_uncrossing_gets_its_amount_back_at_the_new_price(
    tmp_path,
) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    _uncross(node, offer, 600, lambda: node.maker.update(offer.id, 3_100_000, None))
    after = node.maker.own(offer.id).offer
    assert (after.status, after.price, after.amount) == (OPEN, 3_100_000, 1_000)
    assert node.maker.open_count() == 1  # nothing posted anew at the old price
    node.stop()


def test_a_reservation_that_closed_the_offer_posts_what_it_did_not_use(tmp_path) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    _uncross(node, offer, 1_000, lambda: None)
    assert node.maker.own(offer.id).offer.status == CANCELLED
    [fresh] = node.index.select(status="open")
    assert fresh.signed.owner == node.client_id
    assert (fresh.signed.offer.price, fresh.signed.offer.amount) == (3_000_000, 1_000)
    node.stop()


def test_a_slow_probe_never_holds_up_readers_of_the_peer_list() -> None:
    """Two nodes probing each other's /health (which reads the peer list) must not wait on
    each other: probes run outside the lock."""
    dht = MemoryDht()
    dht.announce(REST_NODE_SERVICE, 1)
    probing = threading.Event()

    class SlowClient:
        def identify(self, address: str) -> str:
            probing.set()
            threading.Event().wait(1.0)
            return "ab" * 32

    peers = Peers(dht, SlowClient(), "me")  # type: ignore[arg-type]
    refresh = threading.Thread(target=peers._refresh)
    refresh.start()
    assert probing.wait(5)
    started = time.monotonic()
    peers.known_count()
    peers.unreachable("127.0.0.1:9")
    assert time.monotonic() - started < 0.5
    refresh.join()
    peers.close()


# -- junk under p2p_offers:node (#11.4) ---------------------------------------------------------


def test_addresses_that_do_not_answer_as_nodes_are_probed_once_and_never_hold_up_a_refresh() -> (
    None
):
    """200 junk entries: each probed once, then skipped; probes that hang do not hold up the
    peer list (main probed every junk address on every refresh, and waited for each)."""
    dht = MemoryDht()
    for port in range(1, 201):
        dht.announce(REST_NODE_SERVICE, port, "10.66.0.1")  # nothing there answers as a node
    hanging = [f"10.66.0.2:{port}" for port in range(1, 4)]
    for address in hanging:
        host, port = address.split(":")
        dht.announce(REST_NODE_SERVICE, int(port), host)
    dht.announce(REST_NODE_SERVICE, 7000)
    release = threading.Event()
    asked: list[str] = []

    class Client:
        def identify(self, address: str) -> str | None:
            asked.append(address)
            if address in hanging:
                release.wait(30)  # a black hole: never answers while the refreshes run
                return None
            return "ab" * 32 if address == "127.0.0.1:7000" else None

    peers = Peers(dht, Client(), "me", probe_wait_s=0.2)  # type: ignore[arg-type]
    try:
        for _ in range(5):
            assert [p.address for p in peers._refresh()] == ["127.0.0.1:7000"]
        assert sorted(asked) == sorted(set(asked))  # nobody was asked twice
        assert len(asked) == 204 and peers.shunned_count() == 200
    finally:
        release.set()
        peers.close()
