"""Byte-exact encodings that signatures and hashes depend on.

Two encodings matter: bencode, because BEP44 signs bencoded bytes and any other
DHT must be able to verify what we sign; and canonical JSON, because an offer
document is signed as text and every node must re-derive exactly those bytes.
Floats are refused by both: an amount that passed through a float is no longer
exact, so it must never reach a signature.
"""

from __future__ import annotations

import json
from typing import Any

Bencodable = int | bytes | str | list[Any] | dict[Any, Any]

MAX_DEPTH = 32
# Integers and string lengths longer than this are refused before int() sees them:
# BEP44 needs int64 at most, and int() of thousands of digits is slow or raises.
MAX_INT_DIGITS = 20


class DecodeError(ValueError):
    """Raised for any input that is not exactly one well-formed bencoded value."""


def bencode(value: Bencodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, bytes | bytearray):
        out.append(b"%d:" % len(value))
        out.append(bytes(value))
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        keys = {(k.encode() if isinstance(k, str) else k): v for k, v in value.items()}
        if len(keys) != len(value) or not all(isinstance(k, bytes) for k in keys):
            raise TypeError("bencode dict keys must be distinct str or bytes")
        out.append(b"d")
        for key in sorted(keys):
            _encode(key, out)
            _encode(keys[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Bencodable:
    """Decode strictly: canonical integers, sorted unique keys, no trailing bytes.

    Strictness matters because decoded values are re-encoded for hashing: a
    lenient decoder would let two different byte strings stand for one value.
    """
    if not isinstance(data, bytes | bytearray):
        raise DecodeError("bdecode takes bytes")
    value, end = _decode(bytes(data), 0, 0)
    if end != len(data):
        raise DecodeError("trailing bytes after value")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Bencodable, int]:
    if depth > MAX_DEPTH:
        raise DecodeError("nesting too deep")
    if pos >= len(data):
        raise DecodeError("unexpected end of data")
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.find(b"e", pos)
        if end < 0:
            raise DecodeError("unterminated integer")
        text = data[pos + 1 : end]
        if not _canonical_int(text):
            raise DecodeError("non-canonical integer")
        return int(text), end + 1
    if lead.isdigit():
        colon = data.find(b":", pos)
        if colon < 0:
            raise DecodeError("string without length separator")
        text = data[pos:colon]
        if not _canonical_int(text) or text.startswith(b"-"):
            raise DecodeError("bad string length")
        start, length = colon + 1, int(text)
        if start + length > len(data):
            raise DecodeError("string runs past end of data")
        return data[start : start + length], start + length
    if lead == b"l":
        items: list[Bencodable] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos + 1
    if lead == b"d":
        result: dict[bytes, Bencodable] = {}
        last: bytes | None = None
        pos += 1
        while data[pos : pos + 1] != b"e":
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise DecodeError("dict key is not a string")
            if last is not None and key <= last:
                raise DecodeError("dict keys not sorted and unique")
            result[key], pos = _decode(data, pos, depth + 1)
            last = key
        return result, pos + 1
    raise DecodeError(f"unexpected byte {lead!r} at {pos}")


def _canonical_int(text: bytes) -> bool:
    digits = text[1:] if text.startswith(b"-") else text
    return (
        len(digits) <= MAX_INT_DIGITS
        and digits.isdigit()
        and (digits == b"0" or not digits.startswith(b"0"))
        and text != b"-0"
    )


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the exact bytes a signature covers."""
    _reject_floats(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _reject_floats(value: Any) -> None:
    if isinstance(value, float):
        raise TypeError("floats are not allowed in signed documents")
    if isinstance(value, dict):
        for item in value.values():
            _reject_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _reject_floats(item)


def parse_canonical_json(data: bytes) -> Any:
    """Parse a document and insist it is in canonical form.

    A signed document that is not canonical would still verify, but two nodes
    could then disagree on its bytes; refusing it keeps one text per document.
    """
    try:
        value = json.loads(data, parse_float=_no_float, parse_constant=_no_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"invalid JSON: {exc}") from exc
    if canonical_json(value) != data:
        raise DecodeError("document is not canonical JSON")
    return value


def _no_float(text: str) -> Any:
    raise DecodeError(f"non-integer number {text!r} in document")
