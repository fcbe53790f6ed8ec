"""Book unit tests, plus a hypothesis check of the lazy-cancel invariants against a dict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p_offers.book import Book, Entry


def e(id: str, side: str, price: int, amount: int = 100, priority: int = 0, owner: str = "a"):
    return Entry(id=id, side=side, price=price, amount=amount, priority=priority, owner=owner)


def ids(entries) -> list[str]:
    return [x.id for x in entries]


def test_empty_book() -> None:
    book = Book()
    assert len(book) == 0
    assert book.best("buy") is None and book.best("sell") is None
    assert book.depth("buy") == [] and book.depth("sell") == []
    assert list(book.entries()) == []
    assert list(book.crossing("buy", 10**9)) == []
    assert book.remove("nope") is None and book.get("nope") is None and "nope" not in book


def test_best_is_price_then_priority_then_id() -> None:
    book = Book()
    for entry in [
        e("b1", "buy", 100, priority=5),
        e("b2", "buy", 101, priority=9),
        e("b3", "buy", 101, priority=3),
        e("s2", "sell", 105, priority=1),
        e("s1", "sell", 104, priority=7),
        e("s0", "sell", 104, priority=7),
    ]:
        book.add(entry)
    assert book.best("buy").id == "b3"
    assert book.best("sell").id == "s0"
    assert ids(book.entries("buy")) == ["b3", "b2", "b1"]
    assert ids(book.entries("sell")) == ["s0", "s1", "s2"]
    assert ids(book.entries()) == ["b3", "b2", "b1", "s0", "s1", "s2"]


def test_out_of_order_priority_is_queued_by_priority() -> None:
    book = Book()
    book.add(e("late", "sell", 100, priority=50))
    book.add(e("early", "sell", 100, priority=10))  # a remainder keeping its parent's priority
    book.add(e("mid", "sell", 100, priority=20))
    assert ids(book.entries("sell")) == ["early", "mid", "late"]


def test_replace_same_priority_keeps_place() -> None:
    book = Book()
    book.add(e("x", "sell", 100, amount=5, priority=1))
    book.add(e("y", "sell", 100, amount=5, priority=2))
    book.add(e("x", "sell", 100, amount=3, priority=1))
    assert ids(book.entries("sell")) == ["x", "y"]
    assert book.get("x").amount == 3
    assert book.depth("sell") == [(100, 8, 2)]
    assert len(book) == 2


def test_replace_with_new_priority_loses_place() -> None:
    book = Book()
    book.add(e("x", "sell", 100, priority=1))
    book.add(e("y", "sell", 100, priority=2))
    book.add(e("x", "sell", 100, priority=3))
    assert ids(book.entries("sell")) == ["y", "x"]
    assert len(book) == 2


def test_replace_with_new_price_moves_level_but_keeps_priority() -> None:
    book = Book()
    book.add(e("x", "buy", 100, priority=1))
    book.add(e("y", "buy", 101, priority=2))
    book.add(e("x", "buy", 101, priority=1))
    assert book.depth("buy") == [(101, 200, 2)]
    assert ids(book.entries("buy")) == ["x", "y"]


def test_replace_can_switch_side() -> None:
    book = Book()
    book.add(e("x", "buy", 100))
    book.add(e("x", "sell", 100))
    assert book.depth("buy") == [] and book.depth("sell") == [(100, 100, 1)]


def test_lazy_cancel_keeps_best_len_and_depth_exact() -> None:
    book = Book()
    for i in range(5):
        book.add(e(f"s{i}", "sell", 100, amount=10 + i, priority=i))
    book.add(e("t", "sell", 101, amount=1, priority=0))
    assert book.remove("s2").amount == 12  # middle: left in the queue, dead
    assert book.depth("sell") == [(100, 10 + 11 + 13 + 14, 4), (101, 1, 1)]
    assert book.remove("s0").id == "s0"  # front
    assert book.best("sell").id == "s1"
    for i in (1, 3, 4):
        book.remove(f"s{i}")
    assert book.best("sell").id == "t"
    assert book.depth("sell") == [(101, 1, 1)]
    assert len(book) == 1
    book.add(e("s2", "sell", 100, amount=7, priority=2))  # re-added after its dead record
    assert book.best("sell").id == "s2"
    assert book.depth("sell") == [(100, 7, 1), (101, 1, 1)]


def test_crossing_respects_limit_and_skips_own_offers() -> None:
    book = Book()
    book.add(e("s1", "sell", 100, owner="me", priority=1))
    book.add(e("s2", "sell", 100, owner="you", priority=2))
    book.add(e("s3", "sell", 102, owner="you"))
    book.add(e("s4", "sell", 103, owner="you"))
    book.add(e("b1", "buy", 99))
    assert ids(book.crossing("buy", 102)) == ["s1", "s2", "s3"]
    assert ids(book.crossing("buy", 102, exclude_owner="me")) == ["s2", "s3"]
    assert ids(book.crossing("buy", 99)) == []
    assert ids(book.crossing("sell", 99)) == ["b1"]
    assert ids(book.crossing("sell", 100)) == []


def test_depth_levels_limit() -> None:
    book = Book()
    for p in (100, 101, 102):
        book.add(e(f"b{p}", "buy", p))
    assert book.depth("buy", levels=2) == [(102, 100, 1), (101, 100, 1)]
    assert book.depth("buy", levels=0) == []


@pytest.mark.parametrize(
    "bad",
    [e("x", "hold", 100), e("x", "buy", 100, amount=0), e("x", "sell", 0)],
)
def test_invalid_entries_are_refused(bad: Entry) -> None:
    with pytest.raises(ValueError):
        Book().add(bad)


def test_bad_side_names_are_refused() -> None:
    book = Book()
    for call in (
        lambda: book.best("bid"),
        lambda: book.depth("ask"),
        lambda: list(book.entries("x")),
        lambda: book.crossing("hold", 100),
    ):
        with pytest.raises(ValueError):
            call()


def test_get_returns_current_entry() -> None:
    book = Book()
    first = e("x", "buy", 100)
    book.add(first)
    assert book.get("x") is first
    book.add(e("x", "buy", 100, amount=1))
    assert book.get("x").amount == 1


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 11),  # id: small pool so replaces and re-adds happen
            st.sampled_from(["buy", "sell"]),
            st.integers(98, 102),
            st.integers(1, 5),
            st.integers(0, 4),
        ),
        st.tuples(st.just("remove"), st.integers(0, 11)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_book_matches_a_dict_of_entries(script) -> None:
    """Whatever the sequence of adds, replaces and lazy removes, the views stay exact.

    Queue order is fully fixed by (price, priority, id), so a sorted dict is the model.
    """
    book, model = Book(), {}
    for op in script:
        if op[0] == "add":
            _, n, side, price, amount, priority = op
            entry = e(f"o{n}", side, price, amount, priority)
            model[entry.id] = entry
            book.add(entry)
        else:
            model.pop(f"o{op[1]}", None)
            book.remove(f"o{op[1]}")
        assert len(book) == len(model)
        for side in ("buy", "sell"):
            sign = -1 if side == "buy" else 1
            expected = sorted(
                (x for x in model.values() if x.side == side),
                key=lambda x: (sign * x.price, x.priority, x.id),
            )
            assert list(book.entries(side)) == expected
            assert book.best(side) == (expected[0] if expected else None)
            levels: dict[int, list[int]] = {}
            for x in expected:
                levels.setdefault(x.price, []).append(x.amount)
            assert book.depth(side) == [(p, sum(a), len(a)) for p, a in levels.items()]


def test_cancelled_offers_behind_a_live_front_do_not_pile_up() -> None:
    book = Book()
    book.add(e("front", "sell", 100, priority=0))
    for round_ in range(50):
        for i in range(20):
            book.add(e(f"x{round_}-{i}", "sell", 100, priority=1 + i))
        for i in range(20):
            book.remove(f"x{round_}-{i}")
    queue = book._sides["sell"].levels[100]
    assert len(queue) <= 3
    assert book.depth("sell") == [(100, 100, 1)] and len(book) == 1


# -- #9.1 manual offers and minimum takes -----------------------------------------------------


def test_walks_never_take_manual_offers_but_the_book_shows_them() -> None:
    book = Book()
    book.add(Entry("m", "sell", 100, 50, 0, "x", manual=True))
    book.add(Entry("a", "sell", 101, 50, 1, "y"))
    assert [(en.id, take) for en, take in book.plan("buy", 200, 80, None)] == [("a", 50)]
    assert ids(book.crossing("buy", 200)) == ["a"]
    assert book.depth("sell") == [(100, 50, 1), (101, 50, 1)]
    assert book.get("m") == Entry("m", "sell", 100, 50, 0, "x", manual=True)
    trades = book.match("t", "z", "buy", 200, 80, 5, "ioc")
    assert [(t.maker_id, t.amount) for t in trades] == [("a", 50)]
    assert "m" in book


def test_walks_skip_offers_whose_minimum_is_above_what_is_wanted() -> None:
    book = Book()
    book.add(Entry("big", "sell", 100, 100, 0, "x", min_amount=60))
    book.add(Entry("any", "sell", 101, 100, 1, "y"))
    assert [(en.id, t) for en, t in book.plan("buy", 200, 50, None)] == [("any", 50)]
    assert [(en.id, t) for en, t in book.plan("buy", 200, 60, None)] == [("big", 60)]
    # what is wanted after a first take counts: 130 = 100 of "big"... then 30 of "any"
    assert [(en.id, t) for en, t in book.plan("buy", 200, 130, None)] == [
        ("big", 100),
        ("any", 30),
    ]


def test_an_offer_holding_less_than_its_minimum_can_be_taken_whole() -> None:
    book = Book()
    book.add(Entry("small", "sell", 100, 30, 0, "x", min_amount=60))
    assert book.plan("buy", 200, 20, None) == []
    assert [(en.id, t) for en, t in book.plan("buy", 200, 30, None)] == [("small", 30)]
    trades = book.match("t", "z", "buy", 200, 45, 5, "ioc")
    assert [(t.maker_id, t.amount) for t in trades] == [("small", 30)]


def test_a_replace_keeping_its_place_updates_manual_and_min() -> None:
    book = Book()
    book.add(Entry("o", "sell", 100, 50, 0, "x"))
    book.add(Entry("o", "sell", 100, 50, 0, "x", manual=True))
    assert book.plan("buy", 200, 50, None) == []
    book.add(Entry("o", "sell", 100, 50, 0, "x", min_amount=40))
    assert book.plan("buy", 200, 30, None) == []
    assert book.get("o") == Entry("o", "sell", 100, 50, 0, "x", min_amount=40)
