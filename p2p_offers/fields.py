"""Strict checks for fields of signed documents (offers, bids, receipts).

These documents arrive from the network, so nothing about them is trusted:
every field is checked for its exact type and range, and ``bool`` is never
accepted where an integer is expected (``True`` is an ``int`` in Python, and a
price of ``true`` must not become one cent).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeGuard

from p2p_offers.money import MAX_AMOUNT_SATS, MAX_PRICE_CENTS

MAX_MS = 2**53  # timestamps stay exact in every JSON implementation
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class DocError(ValueError):
    """A document that is not well formed; the message names the field."""


def exact_keys(
    doc: object, required: set[str] | frozenset[str], optional: frozenset[str] = frozenset()
) -> Mapping:
    """``doc`` must be an object with all ``required`` keys and nothing unknown."""
    if not isinstance(doc, dict):
        raise DocError("document must be a JSON object")
    missing = required - doc.keys()
    unknown = doc.keys() - required - optional
    if missing:
        raise DocError(f"missing fields: {', '.join(sorted(missing))}")
    if unknown:
        raise DocError(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
    return doc


def integer(doc: Mapping, name: str, low: int, high: int) -> int:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DocError(f"{name} must be an integer")
    if not low <= value <= high:
        raise DocError(f"{name} must be between {low} and {high}")
    return value


def is_seconds(value: object) -> TypeGuard[float]:
    """A finite, non-negative JSON/msgpack number: NaN and infinity never become a lifetime."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def price(doc: Mapping, name: str = "price") -> int:
    return integer(doc, name, 1, MAX_PRICE_CENTS)


def amount(doc: Mapping, name: str = "amount") -> int:
    return integer(doc, name, 1, MAX_AMOUNT_SATS)


def millis(doc: Mapping, name: str) -> int:
    return integer(doc, name, 0, MAX_MS)


def choice(doc: Mapping, name: str, allowed: tuple[str, ...]) -> str:
    value = doc.get(name)
    if value not in allowed:
        raise DocError(f"{name} must be one of {', '.join(allowed)}")
    return value


def uuid4(doc: Mapping, name: str, nullable: bool = False) -> Any:
    """A lowercase canonical uuid4: one spelling per id, so ids compare as strings."""
    value = doc.get(name)
    if value is None and nullable:
        return None
    if not is_uuid4(value):
        raise DocError(f"{name} must be a lowercase uuid4")
    return value


def is_uuid4(value: object) -> bool:
    """``str(uuid.UUID(value)) == value`` with version 4 (RFC 4122 variant), as a pattern."""
    return isinstance(value, str) and _UUID4.fullmatch(value) is not None


def public_key(doc: Mapping, name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise DocError(f"{name} must be a 32-byte public key in lowercase hex")
    return value


def signature(doc: Mapping, name: str = "sig") -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not _HEX128.fullmatch(value):
        raise DocError(f"{name} must be a 64-byte signature in lowercase hex")
    return value


def is_public_key(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def new_id() -> str:
    return str(uuid.uuid4())
