from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_offers.money import (
    MAX_AMOUNT_SATS,
    MoneyError,
    format_btc,
    format_usd,
    parse_btc,
    parse_usd,
)


@pytest.mark.parametrize(
    ("value", "cents"),
    [
        ("50000", 5_000_000),
        ("50000.5", 5_000_050),
        ("0.01", 1),
        (42, 4200),
        (Decimal("1.10"), 110),
        (" 7.00 ", 700),
    ],
)
def test_parse_usd(value, cents):
    assert parse_usd(value) == cents


@pytest.mark.parametrize(
    "value", ["0", "-1", "0.001", "abc", "", None, True, [], "1e400", "NaN", "Infinity"]
)
def test_parse_usd_rejects(value):
    with pytest.raises(MoneyError):
        parse_usd(value)


def test_parse_btc_limits():
    assert parse_btc("0.00000001") == 1
    assert parse_btc("21000000") == MAX_AMOUNT_SATS
    with pytest.raises(MoneyError):
        parse_btc("0.000000001")
    with pytest.raises(MoneyError):
        parse_btc("21000000.00000001")


def test_float_is_taken_at_its_shortest_repr():
    assert parse_usd(0.1) == 10
    assert parse_btc(0.3) == 30_000_000


@given(st.integers(min_value=1, max_value=MAX_AMOUNT_SATS))
def test_btc_round_trip(sats):
    assert parse_btc(format_btc(sats)) == sats


@given(st.integers(min_value=1, max_value=10**12))
def test_usd_round_trip(cents):
    assert parse_usd(format_usd(cents)) == cents


@pytest.mark.parametrize(
    "value",
    [
        "1e999999",
        "1_000",
        "1e3",
        "+5",
        "0x10",
        "1" * 40,
        Decimal("1E+999999"),
        Decimal("1E-999999"),
    ],
)
def test_parse_rejects_exotic_numbers_with_money_error(value):
    # Decimal would accept these (or overflow): only plain decimal text is money.
    for parse in (parse_usd, parse_btc):
        with pytest.raises(MoneyError):
            parse(value)
