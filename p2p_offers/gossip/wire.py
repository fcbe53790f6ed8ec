"""The gossip messages: JSON-able dicts out, strictly parsed typed messages in.

Every message comes from a peer we do not trust, so ``parse`` checks types,
sizes and ranges before anything else looks at it, and refuses unknown fields:
a message that is not exactly one of the shapes below is dropped whole
(``WireError``), never half-applied. Signatures are not checked here (that is
the node's validator, which the router calls); shapes are, including that a
version's claimed hash is the record's real address, so nothing downstream is
keyed by a claim.

Messages (``t`` names the type):

* ``version``  ``{hash, record, hops}``: one record version being gossiped.
* ``graft`` / ``prune``: "keep me as a neighbour" / "I dropped you".
* ``digest``   ``{start, end, owners: {owner: d}}``: per owner a 16-hex-digit
  digest of everything held of that owner, for owners in ``[start, end]``
  (``end`` null: to the last one) -- one page of an anti-entropy round.
* ``entries``  ``{owners: {owner: {key: seq}}, spans: {owner: [lo, hi]}}``: for
  owners whose digests differ, the highest seq held per record key; an owner
  with more keys than fit is sent as a window, and ``spans`` says which keys
  (``lo..hi``) the window covers.
* ``want``     ``{items: [[owner, key], ...]}``: send me your newest of these.
* ``versions`` ``{records: [...]}``: records answering a want or repairing a peer.

The bounds keep every message well under the peer transport's 64 KiB body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from p2p_offers.records import MAX_SALT, MAX_SEQ, Record, RecordError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HOPS = 16  # far above any path in a mesh of degree 6 (log N / log 5); a loop guard
MAX_DIGEST_OWNERS = 512  # ~86 bytes each
MAX_ENTRY_OWNERS = 64
MAX_ENTRIES = 512  # (owner, key) pairs in one entries message, ~60 bytes each
MAX_WANT = 256
MAX_VERSIONS = 16
VERSIONS_BUDGET = MAX_MESSAGE_BYTES - 1024  # bytes of records a sender packs in one message

_OWNER = re.compile(r"[0-9a-f]{64}")
_HASH = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"[0-9a-f]{16}")


class WireError(ValueError):
    """A message that is not one of ours; ``reason`` says which check refused it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Version:
    """One mutable record with its identity: (hash, seq) for the seen-cache, (owner, key)
    for digests. Built only from a parsed ``Record``, so the hash is the real address."""

    hash: str
    seq: int
    owner: str
    key: str
    record: Record

    @classmethod
    def of(cls, record: Record) -> Version:
        if record.k is None:
            raise WireError("record is not mutable")
        try:
            key = record.salt.decode()
        except UnicodeDecodeError:
            raise WireError("salt is not UTF-8") from None
        if not key:
            raise WireError("record has no salt")
        return cls(record.hash, record.seq, record.k.hex(), key, record)

    @property
    def id(self) -> tuple[str, int]:
        return (self.hash, self.seq)


@dataclass(frozen=True, slots=True)
class VersionMsg:
    version: Version
    hops: int


@dataclass(frozen=True, slots=True)
class Graft:
    pass


@dataclass(frozen=True, slots=True)
class Prune:
    pass


@dataclass(frozen=True, slots=True)
class DigestMsg:
    start: str
    end: str | None
    owners: dict[str, str]


@dataclass(frozen=True, slots=True)
class EntriesMsg:
    owners: dict[str, dict[str, int]]
    spans: dict[str, tuple[str, str]]


@dataclass(frozen=True, slots=True)
class WantMsg:
    items: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class VersionsMsg:
    versions: list[Version]


Message = VersionMsg | Graft | Prune | DigestMsg | EntriesMsg | WantMsg | VersionsMsg

# -- building ------------------------------------------------------------------------------


def version(v: Version, hops: int) -> dict[str, Any]:
    return {"t": "version", "hash": v.hash, "record": v.record.to_json(), "hops": hops}


def graft() -> dict[str, Any]:
    return {"t": "graft"}


def prune() -> dict[str, Any]:
    return {"t": "prune"}


def digest(start: str, end: str | None, owners: dict[str, str]) -> dict[str, Any]:
    return {"t": "digest", "start": start, "end": end, "owners": owners}


def entries(
    owners: dict[str, dict[str, int]], spans: dict[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "t": "entries",
        "owners": owners,
        "spans": {o: list(span) for o, span in (spans or {}).items()},
    }


def want(items: list[tuple[str, str]]) -> dict[str, Any]:
    return {"t": "want", "items": [list(i) for i in items]}


def versions(vs: list[Version]) -> dict[str, Any]:
    return {"t": "versions", "records": [v.record.to_json() for v in vs]}


def size(v: Version) -> int:
    """Bytes ``v``'s record takes in a message: at most ~6.3 KB (a ``v`` of control
    characters, each escaped to six), so one always fits."""
    return len(encode(v.record.to_json())) + 1


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode()


# -- parsing -------------------------------------------------------------------------------


def decode(data: bytes) -> Message:
    """Bytes from the transport to a message; ``WireError`` for anything else."""
    return parse(loads(data))


def loads(data: bytes) -> object:
    """Bytes to JSON, bounded; ``parse`` does the rest."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("message too large")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WireError("not JSON") from None


def claimed_id(obj: object) -> tuple[str, int] | None:
    """The (hash, seq) a ``version`` message claims, read without parsing the record.

    Most version messages a node receives are repeats (one per neighbour that has
    it), so the router looks this up in its seen-cache first. A claim is enough
    for that: if it is seen, we already hold a validated version with that id, and
    a message that lies about it is dropped either way.
    """
    if not isinstance(obj, dict) or obj.get("t") != "version":
        return None
    claimed, record = obj.get("hash"), obj.get("record")
    seq = record.get("seq") if isinstance(record, dict) else None
    if isinstance(claimed, str) and isinstance(seq, int) and not isinstance(seq, bool):
        return (claimed, seq)
    return None


def parse(obj: object) -> Message:
    """A decoded JSON value to a typed message, checking every field."""
    if not isinstance(obj, dict):
        raise WireError("message must be an object")
    kind = obj.get("t")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise WireError("unknown message type")
    fields, fn = parser
    if set(obj) != fields:
        raise WireError(f"{kind}: fields must be exactly {sorted(fields)}")
    return fn(obj)


def _version(obj: dict[str, Any]) -> VersionMsg:
    claimed, hops = obj["hash"], obj["hops"]
    if not (isinstance(claimed, str) and _HASH.fullmatch(claimed)):
        raise WireError("version: hash must be 40 hex digits")
    if not _int(hops) or not 0 <= hops <= MAX_HOPS:
        raise WireError(f"version: hops must be an integer in 0..{MAX_HOPS}")
    v = _record(obj["record"])
    if v.hash != claimed:
        raise WireError("version: hash is not the record's address")
    return VersionMsg(v, hops)


def _digest(obj: dict[str, Any]) -> DigestMsg:
    start, end, owners = obj["start"], obj["end"], obj["owners"]
    if not (isinstance(start, str) and (start == "" or _OWNER.fullmatch(start))):
        raise WireError("digest: start must be an owner id or empty")
    if not (end is None or (isinstance(end, str) and _OWNER.fullmatch(end))):
        raise WireError("digest: end must be an owner id or null")
    if end is not None and end < start:
        raise WireError("digest: end before start")
    if not isinstance(owners, dict) or len(owners) > MAX_DIGEST_OWNERS:
        raise WireError(f"digest: owners must be an object of at most {MAX_DIGEST_OWNERS}")
    for owner, d in owners.items():
        _owner(owner)
        if not (start <= owner and (end is None or owner <= end)):
            raise WireError("digest: owner outside [start, end]")
        if not (isinstance(d, str) and _DIGEST.fullmatch(d)):
            raise WireError("digest: a digest is 16 hex digits")
    return DigestMsg(start, end, dict(owners))


def _entries(obj: dict[str, Any]) -> EntriesMsg:
    owners = obj["owners"]
    if not isinstance(owners, dict) or len(owners) > MAX_ENTRY_OWNERS:
        raise WireError(f"entries: owners must be an object of at most {MAX_ENTRY_OWNERS}")
    total = 0
    out: dict[str, dict[str, int]] = {}
    for owner, held in owners.items():
        _owner(owner)
        if not isinstance(held, dict):
            raise WireError("entries: each owner maps keys to seqs")
        total += len(held)
        if total > MAX_ENTRIES:
            raise WireError(f"entries: more than {MAX_ENTRIES} entries")
        for key, seq in held.items():
            _key(key)
            if not _int(seq) or not 0 <= seq <= MAX_SEQ:
                raise WireError("entries: seq out of range")
        out[owner] = dict(held)
    spans = obj["spans"]
    if not isinstance(spans, dict):
        raise WireError("entries: spans must be an object")
    parsed: dict[str, tuple[str, str]] = {}
    for owner, span in spans.items():
        if owner not in out or not (isinstance(span, list) and len(span) == 2):
            raise WireError("entries: a span is [lo, hi] for a listed owner")
        _key(span[0])
        _key(span[1])
        if span[1] < span[0] or any(not span[0] <= k <= span[1] for k in out[owner]):
            raise WireError("entries: a span must cover its keys, lo <= hi")
        parsed[owner] = (span[0], span[1])
    return EntriesMsg(out, parsed)


def _want(obj: dict[str, Any]) -> WantMsg:
    items = obj["items"]
    if not isinstance(items, list) or len(items) > MAX_WANT:
        raise WireError(f"want: items must be a list of at most {MAX_WANT}")
    out: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2):
            raise WireError("want: each item is [owner, key]")
        _owner(item[0])
        _key(item[1])
        out.append((item[0], item[1]))
    return WantMsg(out)


def _versions(obj: dict[str, Any]) -> VersionsMsg:
    records = obj["records"]
    if not isinstance(records, list) or len(records) > MAX_VERSIONS:
        raise WireError(f"versions: records must be a list of at most {MAX_VERSIONS}")
    return VersionsMsg([_record(r) for r in records])


def _record(data: object) -> Version:
    try:
        record = Record.from_json(data)
    except RecordError as exc:
        raise WireError(f"record: {exc.message}") from None
    if not 0 <= record.seq <= MAX_SEQ:
        raise WireError("record: seq out of range")
    if record.k is None or len(record.k) != 32:
        raise WireError("record: k must be a 32-byte key")
    if len(record.salt) > MAX_SALT:
        raise WireError("record: salt too long")
    return Version.of(record)


def _owner(value: object) -> None:
    if not (isinstance(value, str) and _OWNER.fullmatch(value)):
        raise WireError("owner must be 64 hex digits")


def _key(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise WireError("key must be a non-empty string")
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        raise WireError("key is not valid UTF-8 text") from None
    if size > MAX_SALT:
        raise WireError(f"key longer than {MAX_SALT} bytes")


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PARSERS: dict[str, tuple[frozenset[str], Any]] = {
    "version": (frozenset({"t", "hash", "record", "hops"}), _version),
    "graft": (frozenset({"t"}), lambda _obj: Graft()),
    "prune": (frozenset({"t"}), lambda _obj: Prune()),
    "digest": (frozenset({"t", "start", "end", "owners"}), _digest),
    "entries": (frozenset({"t", "owners", "spans"}), _entries),
    "want": (frozenset({"t", "items"}), _want),
    "versions": (frozenset({"t", "records"}), _versions),
}
