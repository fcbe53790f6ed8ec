"""Regression tests for reviewer-found node bugs (one test per bug, in-process where possible)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import MemoryDht, PlannedSweeper
from nacl.signing import SigningKey
from node_helpers import wait_until

from p2p_offers import bids, offers
from p2p_offers.cluster import free_ports
from p2p_offers.link import GrapeError
from p2p_offers.node import errors
from p2p_offers.node.config import MAX_OFFER_TTL_S, NodeConfig
from p2p_offers.node.errors import DomainError
from p2p_offers.node.http.status import status_of
from p2p_offers.node.ledger import replicator as replicator_module
from p2p_offers.node.ledger.head import sign_head
from p2p_offers.node.network.client import OffersPage
from p2p_offers.node.network.intake import MAX_HASH_ONLY
from p2p_offers.node.network.peers import Peer
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.node.network.sync import MAX_PAGES_PER_PEER, Syncer
from p2p_offers.node.network.transport import MaybeDelivered
from p2p_offers.node.offers import taker as taker_module
from p2p_offers.node.offers.chains import Slot
from p2p_offers.node.runtime import Node
from p2p_offers.node.trading.uncross import Uncrosser
from p2p_offers.offers import FILLED, OPEN
from p2p_offers.records import Record

TAKER = SigningKey(bytes([7]) * 32)
T0 = 1_700_000_000_000


class Clock:
    def __init__(self, start: int = T0) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


def make_node(
    tmp_path: Path, clock: Clock | None = None, dht: MemoryDht | None = None, transport=None
) -> Node:
    """A node on an in-memory DHT; no thread is started."""
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    config = NodeConfig(port=4999, grape=url, data_dir=tmp_path)
    return Node(config, clock=clock or Clock(), dht=dht or MemoryDht(), transport=transport)


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
    parent = node.maker.create("sell", 3_000_000, 100_000_000)
    receipt = node.maker.accept_bid(bid_for(node, parent.id, 40_000_000))
    rest_id = receipt.remainder
    assert node.maker.own(parent.id).offer.status == FILLED
    for act in (
        lambda: node.maker.update(parent.id, None, 100_000_000),
        lambda: node.maker.cancel(parent.id),
    ):
        with pytest.raises(DomainError) as exc:
            act()
        assert status_of(exc.value) == 409 and exc.value.code == "offer_not_open"
        assert exc.value.details == {"offer_id": rest_id}
    rest = node.maker.own(rest_id)
    assert rest.offer.status == OPEN and rest.offer.amount == 60_000_000 and rest.seq == 1
    # the live record itself can still be changed, and bids on the parent still reach it
    assert node.maker.update(rest_id, None, 50_000_000).offer.amount == 50_000_000
    assert node.maker.accept_bid(bid_for(node, parent.id, 1, seq=1)).offer_id == rest_id
    node.stop()


# -- 2. uncrossing gives back only what it did not sell, even when the sweep fails ----------------


def _sell_then_fail(on_fill) -> None:
    """An owner's sqlite error after one fill: 400 sold, then the sweep fails."""
    on_fill(SimpleNamespace(amount=400))
    raise RuntimeError("boom after a fill")


def test_uncross_failure_after_a_fill_gives_back_only_the_unsold_part(tmp_path) -> None:
    node = make_node(tmp_path)
    own = node.maker.create("sell", 3_000_000, 1_000)
    entry = SimpleNamespace(id=own.id, side="sell", price=3_000_000, amount=1_000, priority=1)
    uncrosser = Uncrosser(
        node.client_id, node.index, node.maker, PlannedSweeper(600, _sell_then_fail), None
    )  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        uncrosser.uncross(entry)
    # 600 reserved, 400 of them sold: 1000 - 400 remain on offer, never the sold 400 again
    assert node.maker.own(own.id).offer.amount == 600
    node.stop()


# -- 3. a bid whose answer was lost is "in doubt": resent as is, never re-planned ---------------


class _LossyWire:
    """A peer transport that delivers each bid to ``owner`` but loses the first ``lose``
    replies (read timeouts: the bid may have been delivered)."""

    def __init__(self, owner: Node, lose: int) -> None:
        self.owner, self.lose, self.sent = owner, lose, []

    def call(self, address, action, payload, timeout_s):
        assert action == "bid", action
        self.sent.append(payload)
        try:
            answer = self.owner.maker.accept_bid(bids.Bid.from_wire(payload)).to_wire()
        except DomainError as exc:
            answer = exc
        if len(self.sent) <= self.lose:
            raise MaybeDelivered("reply lost")
        if isinstance(answer, DomainError):
            raise errors.from_wire(answer.code, answer.message, answer.details)
        return answer

    def close(self) -> None:
        pass


def _pair(tmp_path: Path, lose: int, monkeypatch) -> tuple[Node, Node, _LossyWire, object]:
    monkeypatch.setattr(taker_module, "IN_DOUBT_BACKOFF_S", 0.0)
    owner = make_node(tmp_path / "owner")
    wire = _LossyWire(owner, lose)
    taker = make_node(tmp_path / "taker", transport=wire)
    offer = owner.maker.create("sell", 3_000_000, 1_000)
    taker.index.apply(offer)
    taker.taker.peers.owner = lambda maker: ["127.0.0.1:9"]  # type: ignore[method-assign]
    return owner, taker, wire, offer


def test_bid_whose_reply_was_lost_is_resent_and_recorded(tmp_path, monkeypatch) -> None:
    owner, taker, wire, offer = _pair(tmp_path, 1, monkeypatch)
    receipt = taker.taker.bid(offer.id, 400)  # the owner filled it on the first send
    assert receipt.amount == 400
    assert len(wire.sent) == 2 and all(w == wire.sent[0] for w in wire.sent)  # the same bid
    assert taker.receipts.get(receipt.bid_id, "taker") is not None
    assert taker.taker.in_doubt() == [] and taker.health()["bids"]["in_doubt_resolved"] == 1
    owner.stop()
    taker.stop()


def test_a_bid_in_doubt_is_answered_at_once_and_resent_by_the_resolver(tmp_path, monkeypatch):
    """The request thread never sleeps through a back-off: after the one immediate resend it
    answers bid_in_doubt, and the resolver (its own thread) sends the same bid again."""
    owner, taker, wire, offer = _pair(tmp_path, 2, monkeypatch)
    monkeypatch.setattr(taker_module.time, "sleep", _no_sleep)
    with pytest.raises(errors.BidInDoubt) as exc:
        taker.taker.bid(offer.id, 400)
    assert status_of(exc.value) == 502 and exc.value.details["amount_btc"] == "0.00000400"
    assert len(wire.sent) == 2
    assert [b.bid_id for b in taker.taker.in_doubt()] == [wire.sent[0]["bid_id"]]
    assert taker.taker.due() == 0.0  # its first back-off resend is due (backoff 0 here)
    assert taker.taker.resolve_in_doubt(only_due=True) == 1
    assert len(wire.sent) == 3 and wire.sent[2] == wire.sent[0]  # the same signed bid
    fill = taker.receipts.get(wire.sent[0]["bid_id"], "taker")
    assert fill is not None and fill.receipt.amount == 400
    assert taker.taker.in_doubt() == [] and taker.health()["bids"]["in_doubt_filled"] == 1
    owner.stop()
    taker.stop()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s on the request thread")


def test_order_never_replans_or_rests_an_amount_in_doubt(tmp_path, monkeypatch) -> None:
    owner, taker, wire, offer = _pair(tmp_path, 10**6, monkeypatch)  # every reply is lost
    desk = taker.desk
    desk.start()
    order = desk.submit("buy", 3_000_000, 1_500)
    assert order.done.is_set()
    # the owner did sell 1000 sats; the taker never heard, so they are in doubt, not unfilled
    assert owner.maker.own(offer.id).offer.status == FILLED
    assert [b.amount for b in order.in_doubt] == [1_000] and order.fills == []
    assert taker.maker.own(order.offer_id).offer.amount == 500  # only the rest rests
    assert [b.bid_id for b in taker.taker.in_doubt()] == [order.in_doubt[0].bid_id]
    assert taker.health()["bids"]["in_doubt_open"] == 1
    assert len({json.dumps(w, sort_keys=True) for w in wire.sent}) == 1  # one bid, resent
    again = desk.get(order.id)
    assert again is not None and again.in_doubt == order.in_doubt
    desk.stop()
    owner.stop()
    taker.stop()


def test_order_records_its_bid_in_doubt_once_the_resolver_settles_it(tmp_path, monkeypatch) -> None:
    owner, taker, wire, _ = _pair(tmp_path, 10**6, monkeypatch)  # every reply is lost
    desk = taker.desk
    desk.start()
    order = desk.submit("buy", 3_000_000, 1_500)
    assert order.done.is_set() and [b.amount for b in order.in_doubt] == [1_000]
    wire.lose = 0  # the owner's answers come through again
    assert taker.taker.resolve_in_doubt() == 1
    assert taker.taker.in_doubt() == []
    fill = taker.receipts.get(order.in_doubt[0].bid_id, "taker")
    assert fill is not None and fill.receipt.amount == 1_000
    done = wait_until(lambda: (o := desk.get(order.id)) and not o.in_doubt and o, 5, "the order")
    assert [r.fill_id for r in done.fills] == [fill.receipt.fill_id]
    assert done.status == "partial" and done.offer_id == order.offer_id
    assert taker.health()["bids"]["in_doubt_filled"] == 1
    assert taker.taker.resolve_in_doubt() == 0  # nothing left: nothing sent again
    desk.stop()
    owner.stop()
    taker.stop()


# -- 5. a non-API failure while settling a batch answers every bid of it ------------------------


def test_settle_failure_outside_commit_answers_every_waiting_bid(tmp_path, monkeypatch) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    first, second = bid_for(node, offer.id, 10), bid_for(node, offer.id, 20)
    real_fill = node.receipts.get

    def broken_fill(bid_id, role):
        if bid_id == second.bid_id:
            raise sqlite3.OperationalError("disk I/O error")
        return real_fill(bid_id, role)

    monkeypatch.setattr(node.receipts, "get", broken_fill)
    slots = [Slot(first), Slot(second)]
    with pytest.raises(sqlite3.OperationalError):
        node.maker._settler._settle(offer.id, slots)
    for slot in slots:  # each waiter gets an answer: the failure, never "filled", never a bug
        assert slot.done
        with pytest.raises(sqlite3.OperationalError):
            slot.outcome()
    assert node.maker.own(offer.id).offer.amount == 1_000  # nothing was committed
    unsettled = Slot(first)
    unsettled.done = True
    with pytest.raises(errors.Internal) as exc:  # an explicit error, not an AssertionError
        unsettled.outcome()
    assert status_of(exc.value) == 500
    node.stop()


# -- 4. a record most replicas lost is put again without cas, and the queue drains --------------


class _LostMajorityLink:
    """A DHT whose majority lost our record: every put with ``cas`` is refused with 301, while
    a get still finds the old version on the one replica that kept it."""

    def __init__(self, survivor: Record) -> None:
        self.survivor, self.puts = survivor, []

    def put_record(self, record: Record, cas: int | None = None) -> str:
        self.puts.append(cas)
        if cas is not None:
            raise GrapeError("ERR_CAS_MISMATCH", "cas given but nothing is stored")
        self.survivor = record
        return record.hash

    def get_record(self, hash_: str) -> Record | None:
        return self.survivor


def test_put_after_the_dht_lost_our_record_drops_cas_and_lands(tmp_path) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000)
    newer = node.maker.update(offer.id, None, 900)
    link = _LostMajorityLink(offer.record)
    publisher = Publisher(link, node.peers, node.peer_client, lambda done: None)  # type: ignore[arg-type]
    publisher.published(offer.id, offer.seq)  # we put seq 1 before the grapes restarted
    assert publisher._put(newer)
    assert link.survivor.seq == newer.seq and link.puts[-1] is None
    node.stop()


# -- 6. a restart does not bring long-expired own offers back ------------------------------------


def test_restart_leaves_expired_own_offers_expired(tmp_path) -> None:
    node = make_node(tmp_path)
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=1_000)
    node.stop()
    again = make_node(tmp_path, Clock(T0 + 3_600_000))  # an hour later
    again.maker.load()
    assert again.maker.open_count() == 0
    assert again.maker.refresh_due() == 0
    assert again.maker.own(offer.id).seq == 1  # not refreshed
    with pytest.raises(DomainError) as exc:
        again.maker.accept_bid(bid_for(again, offer.id, 1))
    assert status_of(exc.value) == 409
    again.stop()


def test_expired_own_offer_is_not_refreshed_by_the_sweep(tmp_path) -> None:
    clock = Clock()
    node = make_node(tmp_path, clock)
    offer = node.maker.create("sell", 3_000_000, 1_000, ttl_ms=1_000)
    clock.now += 1_000
    assert node.maker.refresh_due() == 0
    assert node.maker.open_count() == 0 and node.maker.own(offer.id).seq == 1
    node.stop()


# -- 7. foreign offers cannot sign themselves eternal life or the front of every queue ----------


def _foreign(now: int, **changes) -> dict:
    key = SigningKey(bytes([9]) * 32)
    offer = offers.create("sell", 3_000_000, 1_000, now, 600_000)
    offer = offers.Offer(**{**offer.to_doc(), "fill": offer.fill, **changes})
    signed = offers.sign(key, offer, 1)
    return {"hash": signed.hash, "record": signed.record.to_json()}


def test_intake_rejects_implausible_expiry_and_priority(tmp_path) -> None:
    node = make_node(tmp_path)
    now = node.clock()
    day = 86_400_000
    bad = [
        _foreign(now, expires=now + MAX_OFFER_TTL_S * 1000 + day),  # never expires
        _foreign(now, priority=0),  # older than its own placement: jumps every queue
        _foreign(now, priority=now + day, created=now + day, expires=now + 2 * day),  # future
    ]
    for item in bad:
        assert node.intake.receive(item["hash"], item["record"], "test") == "implausible"
    outcomes = node.intake.receive_many(((b["hash"], b["record"]) for b in bad), "batch")
    assert outcomes == {"implausible": 3}
    assert node.index.counts().get("open", 0) == 0
    assert node.intake.counters()["test"]["implausible"] == 3
    good = [
        _foreign(now),
        _foreign(now, expires=now + MAX_OFFER_TTL_S * 1000),  # the longest a user may ask
        _foreign(now, priority=now + 5_000, created=now - 5_000),  # repriced: queued again
        _foreign(now, parent=str(uuid.uuid4()), priority=now - day, created=now - 1),  # remainder
        _foreign(now + 30_000),  # a peer whose clock is a little ahead
    ]
    for item in good:
        assert node.intake.receive(item["hash"], item["record"], "test") == "applied"
    node.stop()


# -- 8. a peer cannot keep anti-entropy paging forever ------------------------------------------


class _EndlessPeer:
    """``GET /peer/offers`` that always has a next page: the same cursor, or ever larger ones."""

    def __init__(self, advancing: bool) -> None:
        self.advancing, self.calls = advancing, 0

    def nodes(self) -> list[Peer]:
        return [Peer("127.0.0.1:9", "ab" * 32)]

    def offers(self, address, cursor, limit):
        self.calls += 1
        if self.calls > 100_000:
            raise ValueError("runaway sync")  # only reached without the fix
        nxt = f"{self.calls:012d}" if self.advancing else "same"
        return OffersPage([{"junk": self.calls}], nxt)


@pytest.mark.parametrize("advancing", [False, True])
def test_sync_stops_on_a_cursor_that_does_not_advance_or_never_ends(tmp_path, advancing) -> None:
    node = make_node(tmp_path)
    peer = _EndlessPeer(advancing)
    syncer = Syncer(peer, peer, node.intake, node.index, page_limit=1)  # type: ignore[arg-type]
    syncer.sync_once()
    if advancing:
        assert peer.calls == MAX_PAGES_PER_PEER
        assert syncer.stats()["page_cap"] == 1
    else:
        assert peer.calls == 2  # the second page named the cursor it was asked for
        assert syncer.stats()["bad_cursor"] == 1
    node.stop()


# -- 9. a batch of hash-only announcements costs a bounded number of DHT gets ------------------


def test_hash_only_batch_is_deduplicated_and_capped(tmp_path, monkeypatch) -> None:
    node = make_node(tmp_path)
    gets: list[str] = []

    def get_record(hash_: str) -> None:
        gets.append(hash_)
        return None

    monkeypatch.setattr(node.intake.dht, "get_record", get_record)
    hashes = [f"{i % 500:040x}" for i in range(1000)]  # 500 distinct, each twice
    outcomes = node.intake.receive_many(((h, None) for h in hashes), "announce")
    assert len(gets) == MAX_HASH_ONLY == len(set(gets))
    assert outcomes["unknown"] == MAX_HASH_ONLY
    assert outcomes["over_limit"] + outcomes["duplicate"] == 1000 - MAX_HASH_ONLY
    assert node.intake.counters()["announce"]["over_limit"] == outcomes["over_limit"]
    node.stop()


# -- 10. ledger heads from ever new keys cannot grow the pull queue without bound --------------


def test_ledger_heads_from_fresh_keys_fill_a_bounded_queue(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(replicator_module, "MAX_WANTED", 50)
    node = make_node(tmp_path)
    replicator = node.replicator
    heads = [sign_head(SigningKey(i.to_bytes(32, "big")), 1, "00" * 32) for i in range(1, 121)]
    for head in heads:
        node.intake.receive(head.hash, head.record.to_json(), "announce")
    counted = node.intake.counters()["announce"]
    assert counted["applied"] == 50 and counted["over_limit"] == 70
    assert len(replicator._wanted) == 50
    # an owner already queued still gets its newer head noted
    again = sign_head(SigningKey((1).to_bytes(32, "big")), 2, "11" * 32)
    assert replicator.receive_head(again.record) == "applied"
    node.stop()
