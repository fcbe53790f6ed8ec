"""The wire of ``grenache-nodejs-http`` 0.7.x: frames, gzip, bounds. Pure functions, no I/O.

A request is ``POST /`` with the JSON body ``[rid, key, payload]`` and the header
``grc-compress: gzip|none``; the reply is ``[rid, err, data]`` with ``err`` null
or a string, gzipped when the request was. Node's server drops a frame it
cannot parse (the client waits for its timeout); ours answers every frame: a
frame it cannot read gets ``[rid or null, "ERR_...: why", null]`` with an HTTP
4xx status (Node's client reads the body whatever the status), one it can read
is 200 whatever the handler said.

Every size is bounded, including what gzip inflates to: a small compressed body
must not become gigabytes in memory.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

COMPRESS_HEADER = "grc-compress"
MAX_REQUEST = 1024 * 1024  # bytes of a request frame, after inflating
MAX_REPLY = 16 * 1024 * 1024  # bytes of a reply frame a client accepts, after inflating

Rid = str | int | None


class RawJson(bytes):
    """A reply's data already encoded as JSON: spliced into the frame, not decoded and
    encoded again (a node's sync page is rendered once as JSON text)."""


class FrameError(Exception):
    """A request frame this server cannot take; ``err`` is the reply's error string."""

    def __init__(self, err: str, status: int, rid: Rid = None, compress: bool = False) -> None:
        super().__init__(err)
        self.err = err
        self.status = status
        self.rid = rid
        self.compress = compress


class ReplyError(Exception):
    """A reply that is not a Grenache reply frame."""


@dataclass(frozen=True, slots=True)
class Request:
    rid: Rid
    key: str
    payload: Any
    compress: bool


def wants_gzip(headers: Mapping[str, str]) -> bool:
    """Node sends ``grc-compress: gzip`` or ``none``; anything containing gzip means gzip."""
    return "gzip" in (headers.get(COMPRESS_HEADER) or "").lower()


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` to at most ``limit`` bytes; ``ValueError`` if larger or not gzip."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"not gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ValueError(f"inflates to more than {limit} bytes")
    if not inflater.eof:
        raise ValueError("truncated gzip stream")
    return out


def gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


# -- requests ----------------------------------------------------------------------------


def encode_request(
    rid: str, key: str, payload: Any, compress: bool
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a request; ``payload`` as ``bytes`` is JSON already encoded
    (one announcement sent to many peers is encoded once)."""
    if isinstance(payload, bytes):
        body = b"[" + dumps(rid) + b"," + dumps(key) + b"," + payload + b"]"
    else:
        body = dumps([rid, key, payload])
    headers = {COMPRESS_HEADER: "gzip" if compress else "none", "Content-Type": "application/json"}
    return (gzip(body) if compress else body), headers


def decode_request(
    body: bytes,
    headers: Mapping[str, str],
    limit: int = MAX_REQUEST,
    parse_float: Callable[[str], Any] | None = None,
) -> Request:
    """The frame in ``body``; ``FrameError`` (with the reply's error string) if it is not one."""
    compress = wants_gzip(headers)
    if len(body) > limit:
        raise FrameError(f"ERR_BODY_TOO_LARGE: the body is larger than {limit} bytes", 413)
    if compress:
        try:
            body = gunzip(body, limit)
        except ValueError as exc:
            status = 413 if "more than" in str(exc) else 400
            code = "ERR_BODY_TOO_LARGE" if status == 413 else "ERR_INVALID_JSON"
            raise FrameError(f"{code}: grc-compress says gzip, but {exc}", status) from None
    try:
        frame = json.loads(body, parse_float=parse_float, parse_constant=_no_constant)
    except RecursionError:
        raise FrameError(
            "ERR_INVALID_JSON: the frame nests too deep", 400, None, compress
        ) from None
    except ValueError as exc:  # also bad UTF-8
        raise FrameError(
            f"ERR_INVALID_JSON: the frame is not JSON: {exc}", 400, None, compress
        ) from None
    if not isinstance(frame, list) or len(frame) != 3:
        raise FrameError(
            "ERR_INVALID_INPUT: a request frame is [rid, key, payload]", 400, None, compress
        )
    rid, key, payload = frame
    if not (
        rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool))
    ):
        raise FrameError("ERR_INVALID_INPUT: rid must be a string", 400, None, compress)
    if not isinstance(key, str) or not key:
        raise FrameError("ERR_INVALID_INPUT: key must be a service name", 400, rid, compress)
    return Request(rid, key, payload, compress)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# -- replies -----------------------------------------------------------------------------


def encode_reply(rid: Rid, err: str | None, data: Any, compress: bool) -> bytes:
    if isinstance(data, RawJson):
        body = b"[" + dumps(rid) + b"," + dumps(err) + b"," + bytes(data) + b"]"
    else:
        body = dumps([rid, err, data])
    return gzip(body) if compress else body


def decode_reply(
    body: bytes, compress: bool, limit: int = MAX_REPLY
) -> tuple[Rid, str | None, Any]:
    """(rid, err, data) of a reply; ``ReplyError`` if it is not a reply frame."""
    if compress:
        try:
            body = gunzip(body, limit)
        except ValueError as exc:
            raise ReplyError(f"ERR_REPLY_ENCODING_COMPRESSION: {exc}") from None
    elif len(body) > limit:
        raise ReplyError(f"reply larger than {limit} bytes")
    try:
        frame = json.loads(body)
    except (ValueError, RecursionError):
        raise ReplyError("reply is not JSON") from None
    if not isinstance(frame, list) or len(frame) != 3:
        raise ReplyError("reply is not [rid, err, data]")
    rid, err, data = frame
    if err is not None and not isinstance(err, str):
        raise ReplyError("reply err is neither null nor a string")
    return rid, err, data
