"""Matching engine: unit cases, and hypothesis against a plain sorted-scan reference model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_offers.book import Book, Entry, MatchingEngine, Trade, plan


def entry_of(order: dict) -> Entry:
    return Entry(**{k: order[k] for k in ("id", "side", "price", "amount", "priority", "owner")})


@dataclass
class Reference:
    """Price-time matching done the obvious way: sort every crossing order, walk the list.

    Slow and short on purpose, so that it is easy to believe.
    """

    orders: list[dict] = field(default_factory=list)

    def submit(self, order_id, owner, side, price, amount, priority, tif="gtc") -> list[Trade]:
        if side == "buy":
            crossing = [o for o in self.orders if o["side"] == "sell" and o["price"] <= price]
            crossing.sort(key=lambda o: (o["price"], o["priority"], o["id"]))
        else:
            crossing = [o for o in self.orders if o["side"] == "buy" and o["price"] >= price]
            crossing.sort(key=lambda o: (-o["price"], o["priority"], o["id"]))
        trades = []
        for maker in crossing:
            if amount == 0:
                break
            if maker["owner"] == owner:
                continue
            take = min(amount, maker["amount"])
            maker["amount"] -= take
            amount -= take
            trades.append(Trade(maker["id"], order_id, maker["price"], take))
        self.orders = [o for o in self.orders if o["amount"]]
        if amount and tif == "gtc":
            self.orders.append(
                dict(
                    id=order_id,
                    owner=owner,
                    side=side,
                    price=price,
                    amount=amount,
                    priority=priority,
                )
            )
        return trades

    def cancel(self, order_id) -> bool:
        kept = [o for o in self.orders if o["id"] != order_id]
        found = len(kept) != len(self.orders)
        self.orders = kept
        return found

    def book(self, side: str) -> list[Entry]:
        sign = -1 if side == "buy" else 1
        mine = [o for o in self.orders if o["side"] == side]
        mine.sort(key=lambda o: (sign * o["price"], o["priority"], o["id"]))
        return [entry_of(o) for o in mine]


# -- unit cases ----------------------------------------------------------------


def test_fills_at_maker_price_best_first_then_rests() -> None:
    engine = MatchingEngine()
    assert engine.submit("s1", "a", "sell", 101, 5, 1) == []
    assert engine.submit("s2", "a", "sell", 100, 5, 2) == []
    assert engine.submit("s3", "b", "sell", 100, 5, 3) == []
    trades = engine.submit("b1", "c", "buy", 101, 12, 4)
    assert trades == [
        Trade("s2", "b1", 100, 5),
        Trade("s3", "b1", 100, 5),
        Trade("s1", "b1", 101, 2),
    ]
    assert engine.book.get("s1").amount == 3
    assert "b1" not in engine.book
    assert engine.submit("b2", "c", "buy", 102, 10, 5) == [Trade("s1", "b2", 101, 3)]
    assert engine.book.get("b2").amount == 7
    assert engine.book.depth("buy") == [(102, 7, 1)] and engine.book.depth("sell") == []


def test_ioc_rest_is_dropped() -> None:
    engine = MatchingEngine()
    engine.submit("s1", "a", "sell", 100, 5, 1)
    assert engine.submit("b1", "b", "buy", 100, 8, 2, tif="ioc") == [Trade("s1", "b1", 100, 5)]
    assert len(engine.book) == 0
    assert engine.submit("b2", "b", "buy", 100, 8, 3, tif="ioc") == []
    assert len(engine.book) == 0


def test_self_trade_prevention_skips_own_offers_without_blocking_others() -> None:
    engine = MatchingEngine()
    engine.submit("s1", "me", "sell", 100, 5, 1)
    engine.submit("s2", "you", "sell", 101, 5, 2)
    assert engine.submit("b1", "me", "buy", 101, 5, 3) == [Trade("s2", "b1", 101, 5)]
    assert engine.book.get("s1").amount == 5  # untouched
    assert engine.submit("b2", "me", "buy", 101, 1, 4) == []  # rests, crossing only itself
    assert engine.book.best("buy").id == "b2" and engine.book.best("sell").id == "s1"


def test_cancel() -> None:
    engine = MatchingEngine()
    engine.submit("s1", "a", "sell", 100, 5, 1)
    assert engine.cancel("s1") is True
    assert engine.cancel("s1") is False
    assert engine.cancel("never") is False
    assert engine.submit("b1", "b", "buy", 100, 5, 2) == []


def test_remainder_keeping_older_priority_queues_ahead() -> None:
    engine = MatchingEngine()
    engine.submit("s1", "a", "sell", 100, 5, 10)
    engine.submit("s2", "b", "sell", 100, 5, 3)  # e.g. a remainder of an order placed at t=3
    assert engine.submit("b1", "c", "buy", 100, 5, 11) == [Trade("s2", "b1", 100, 5)]


@pytest.mark.parametrize(
    "args",
    [
        ("x", "a", "hold", 100, 5, 1),
        ("x", "a", "buy", 0, 5, 1),
        ("x", "a", "buy", 100, 0, 1),
        ("x", "a", "buy", 100, -5, 1),
    ],
)
def test_invalid_orders_are_refused(args) -> None:
    with pytest.raises(ValueError):
        MatchingEngine().submit(*args)


def test_invalid_tif_and_duplicate_id_are_refused() -> None:
    engine = MatchingEngine()
    with pytest.raises(ValueError):
        engine.submit("x", "a", "buy", 100, 5, 1, tif="fok")
    engine.submit("x", "a", "buy", 100, 5, 1)
    with pytest.raises(ValueError):
        engine.submit("x", "a", "buy", 100, 5, 1)


def test_plan_walks_without_changing_the_book() -> None:
    book = Book()
    book.add(Entry("s1", "sell", 100, 5, 1, "me"))
    book.add(Entry("s2", "sell", 100, 5, 2, "you"))
    book.add(Entry("s3", "sell", 102, 5, 3, "you"))
    steps = [(e.id, take) for e, take in plan(book, "buy", 102, 7, "me")]
    assert steps == [("s2", 5), ("s3", 2)]
    assert list(plan(book, "buy", 99, 7, "x")) == []
    assert list(plan(book, "buy", 102, 0, "x")) == []
    assert [e.amount for e in book.entries("sell")] == [5, 5, 5]


def test_engine_over_a_shared_book_sees_added_entries() -> None:
    book = Book()
    book.add(Entry("s1", "sell", 100, 5, 1, "a"))
    engine = MatchingEngine(book)
    assert engine.submit("b1", "b", "buy", 100, 2, 2) == [Trade("s1", "b1", 100, 2)]
    assert book.get("s1") == Entry("s1", "sell", 100, 3, 1, "a")


# -- engine vs reference model -------------------------------------------------

submits = st.tuples(
    st.just("submit"),
    st.sampled_from(["alice", "bob", "carol"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(96, 104),  # few levels: deep queues and many crossings
    st.integers(1, 12),
    st.integers(0, 30),  # priorities out of order too: remainders keep their parent's
    st.sampled_from(["gtc", "gtc", "gtc", "ioc"]),
)
cancels = st.tuples(st.just("cancel"), st.integers(0, 10**6))
streams = st.lists(st.one_of(submits, submits, cancels), max_size=80)


def crossing_pairs(book: Book) -> list[tuple[Entry, Entry]]:
    bids, asks = list(book.entries("buy")), list(book.entries("sell"))
    return [(b, a) for b in bids for a in asks if b.price >= a.price and b.owner != a.owner]


@settings(max_examples=300, deadline=None)
@given(streams)
def test_engine_matches_reference_model(stream) -> None:
    engine, model = MatchingEngine(), Reference()
    submitted: dict[str, int] = {}
    owner_of: dict[str, str] = {}
    filled: dict[str, int] = {}
    gone: dict[str, int] = {}  # cancelled, or dropped by IOC
    for n, op in enumerate(stream):
        if op[0] == "cancel":
            if not submitted:
                continue
            order_id = list(submitted)[op[1] % len(submitted)]
            resting = engine.book.get(order_id)
            assert engine.cancel(order_id) == model.cancel(order_id) == (resting is not None)
            if resting is not None:
                gone[order_id] = resting.amount
        else:
            _, owner, side, price, amount, priority, tif = op
            order_id = f"o{n:03d}"
            submitted[order_id], owner_of[order_id] = amount, owner
            planned = [(e.id, take) for e, take in plan(engine.book, side, price, amount, owner)]
            trades = engine.submit(order_id, owner, side, price, amount, priority, tif)
            assert trades == model.submit(order_id, owner, side, price, amount, priority, tif)
            assert planned == [(t.maker_id, t.amount) for t in trades]
            for t in trades:
                assert owner_of[t.maker_id] != owner_of[t.taker_id]
                filled[t.maker_id] = filled.get(t.maker_id, 0) + t.amount
                filled[t.taker_id] = filled.get(t.taker_id, 0) + t.amount
            if tif == "ioc":
                gone[order_id] = amount - sum(t.amount for t in trades)
        assert crossing_pairs(engine.book) == []
        assert len(engine.book) == len(model.orders)
        for side in ("buy", "sell"):
            expected = model.book(side)
            assert list(engine.book.entries(side)) == expected
            assert engine.book.best(side) == (expected[0] if expected else None)
            levels: dict[int, list[int]] = {}
            for x in expected:
                levels.setdefault(x.price, []).append(x.amount)
            assert engine.book.depth(side) == [(p, sum(a), len(a)) for p, a in levels.items()]
    for order_id, amount in submitted.items():
        resting = engine.book.get(order_id)
        left = resting.amount if resting else 0
        assert filled.get(order_id, 0) + left + gone.get(order_id, 0) == amount, order_id


@settings(max_examples=100, deadline=None)
@given(st.lists(submits, min_size=1, max_size=40))
def test_best_bid_below_best_ask_when_owners_differ(stream) -> None:
    """With one owner per order, nothing can block a match, so the book never stays crossed."""
    engine = MatchingEngine()
    for n, (_, _, side, price, amount, priority, tif) in enumerate(stream):
        engine.submit(f"o{n:03d}", f"owner{n}", side, price, amount, priority, tif)
        bid, ask = engine.book.best("buy"), engine.book.best("sell")
        if bid and ask:
            assert bid.price < ask.price
        counts = [n for side in ("buy", "sell") for _, _, n in engine.book.depth(side)]
        assert len(engine.book) == sum(counts) == len(list(engine.book.entries()))
