"""Exact money at the edges: decimal strings outside, integer cents and satoshis inside."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CENTS_PER_USD = 100
SATS_PER_BTC = 100_000_000
MAX_PRICE_CENTS = 10**12  # ten billion USD per BTC: far beyond any sane quote
MAX_AMOUNT_SATS = 21_000_000 * SATS_PER_BTC  # every bitcoin there will ever be


# A decimal string as users write it: no exponents, no underscores, no signs but minus.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
SPACES = " \t\n\r\f\v"  # what may surround a decimal string (ASCII only: the API says so)
MAX_DIGITS = 30  # far beyond any field's maximum; longer input is refused before arithmetic


class MoneyError(ValueError):
    """A money field the user must correct; the message says how."""


def parse_usd(value: object) -> int:
    """Price in USD (≤ 2 decimals, > 0) → integer cents."""
    return _parse(value, 2, MAX_PRICE_CENTS, "USD")


def parse_btc(value: object) -> int:
    """Amount in BTC (≤ 8 decimals, > 0) → integer satoshis."""
    return _parse(value, 8, MAX_AMOUNT_SATS, "BTC")


def format_usd(cents: int) -> str:
    return _format(cents, 2)


def format_btc(sats: int) -> str:
    return _format(sats, 8)


def _parse(value: object, places: int, maximum: int, unit: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal | float):
        raise MoneyError(f"must be a decimal string or number of {unit}")
    if isinstance(value, float):
        # JSON numbers reach us as Decimal (the app parses floats as Decimal);
        # a float from elsewhere is taken at its shortest repr, never its binary value.
        value = repr(value)
    if isinstance(value, str):
        if len(value) > MAX_DIGITS:  # spaces included: the API describes it as maxLength
            raise MoneyError(f"at most {MAX_DIGITS} characters")
        value = value.strip(SPACES)
        if not _DECIMAL_TEXT.fullmatch(value):
            raise MoneyError(f"{value[:40]!r} is not a decimal number like 123.45")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise MoneyError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise MoneyError("must be a finite number")
    if number.adjusted() > MAX_DIGITS:
        raise MoneyError(f"must be at most {_format(maximum, places)} {unit}")
    try:
        scaled = number.scaleb(places)
        exact = scaled == scaled.to_integral_value()
    except ArithmeticError:  # an exponent like 1e-999999 underflows the context
        raise MoneyError(f"at most {places} decimal places") from None
    if not exact:
        raise MoneyError(f"at most {places} decimal places")
    units = int(scaled)
    if units <= 0:
        raise MoneyError("must be greater than 0")
    if units > maximum:
        raise MoneyError(f"must be at most {_format(maximum, places)} {unit}")
    return units


def _format(units: int, places: int) -> str:
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"
