"""BEP44 records: the only thing the DHT stores and the unit every node verifies.

A mutable record is writable only by the holder of the Ed25519 key ``k``; its
address is ``sha1(k ‖ salt)`` and ``seq`` orders its versions. An immutable
record is addressed by ``sha1(bencode(v))``. The checks here are pure so that
the grape (before storing) and the node (before believing) run the very same
code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from p2p_offers.codec import DecodeError, bdecode, bencode

MAX_V = 1000  # bencoded size of v, as BEP44 says
MAX_SALT = 64
MAX_SEQ = 2**63 - 1
KEY_BYTES = 32
SIG_BYTES = 64

# BEP44 error codes, used by the grape on the wire and by callers to branch.
CAS_MISMATCH = 301
SEQ_TOO_LOW = 302
V_TOO_BIG = 205
INVALID_SIGNATURE = 206
SALT_TOO_BIG = 207
MALFORMED = 203  # BEP5's "protocol error": the record is not well formed


class RecordError(ValueError):
    """A record that must not be stored or believed; ``code`` is BEP44's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Record:
    """One BEP44 item. ``k``/``sig`` are None for an immutable record."""

    v: bytes
    k: bytes | None = None
    salt: bytes = b""
    seq: int = 0
    sig: bytes | None = None

    @property
    def mutable(self) -> bool:
        return self.k is not None

    @property
    def target(self) -> bytes:
        return mutable_target(self.k, self.salt) if self.k is not None else immutable_target(self.v)

    @property
    def hash(self) -> str:
        return self.target.hex()

    def verify(self) -> None:
        """Raise RecordError unless sizes and (for mutable records) the signature hold."""
        check_sizes(self.v, self.salt)
        if self.k is None:
            return
        if len(self.k) != KEY_BYTES or self.sig is None or len(self.sig) != SIG_BYTES:
            raise RecordError(MALFORMED, "k must be 32 bytes and sig 64 bytes")
        if not 0 <= self.seq <= MAX_SEQ:
            raise RecordError(MALFORMED, "seq out of range")
        try:
            VerifyKey(self.k).verify(signed_buffer(self.salt, self.seq, self.v), self.sig)
        except (BadSignatureError, ValueError):
            raise RecordError(INVALID_SIGNATURE, "invalid signature") from None

    def encode(self) -> bytes:
        """The bencoded dict a grape stores and sends to other DHT nodes."""
        if self.k is None:
            return bencode({"v": self.v})
        fields: dict[str, bytes | int] = {"v": self.v, "k": self.k, "seq": self.seq}
        fields["sig"] = self.sig or b""
        if self.salt:
            fields["salt"] = self.salt
        return bencode(fields)

    @classmethod
    def decode(cls, data: bytes) -> Record:
        """Parse the stored form; the result still has to be verified."""
        try:
            fields = bdecode(data)
        except DecodeError as exc:
            raise RecordError(MALFORMED, f"undecodable record: {exc}") from None
        if not isinstance(fields, dict) or not isinstance(fields.get(b"v"), bytes):
            raise RecordError(MALFORMED, "record must be a dict with a byte-string v")
        if set(fields) == {b"v"}:
            return cls(v=fields[b"v"])
        if not set(fields) <= {b"v", b"k", b"seq", b"sig", b"salt"}:
            raise RecordError(MALFORMED, "unknown record fields")
        k, seq, sig = fields.get(b"k"), fields.get(b"seq"), fields.get(b"sig")
        salt = fields.get(b"salt", b"")
        if not (isinstance(k, bytes) and isinstance(sig, bytes) and isinstance(salt, bytes)):
            raise RecordError(MALFORMED, "k, sig and salt must be byte strings")
        if not isinstance(seq, int):
            raise RecordError(MALFORMED, "seq must be an integer")
        return cls(v=fields[b"v"], k=k, salt=salt, seq=seq, sig=sig)

    def to_json(self) -> dict[str, object]:
        """Grenache's JSON shape: v and salt as text, k and sig as hex."""
        out: dict[str, object] = {"v": self.v.decode("utf-8", errors="replace")}
        if self.k is not None:
            out.update(
                k=self.k.hex(),
                sig=(self.sig or b"").hex(),
                seq=self.seq,
                salt=self.salt.decode("utf-8", errors="replace"),
            )
        return out

    @classmethod
    def from_json(cls, data: object) -> Record:
        """Parse untrusted JSON (a grape reply, an announcement): types first, then shape."""
        if not isinstance(data, dict):
            raise RecordError(MALFORMED, "record must be an object")
        v = data.get("v")
        if not isinstance(v, str):
            raise RecordError(MALFORMED, "v must be a string")
        if data.get("k") is None:
            return cls(v=_utf8(v, "v"))
        k, sig, seq, salt = data.get("k"), data.get("sig"), data.get("seq"), data.get("salt", "")
        if not (isinstance(k, str) and isinstance(sig, str)):
            raise RecordError(MALFORMED, "k and sig must be hex strings")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise RecordError(MALFORMED, "seq must be an integer")
        if not isinstance(salt, str | None):
            raise RecordError(MALFORMED, "salt must be a string")
        try:
            kb, sigb = bytes.fromhex(k), bytes.fromhex(sig)
        except ValueError:
            raise RecordError(MALFORMED, "k and sig must be hex strings") from None
        return cls(v=_utf8(v, "v"), k=kb, salt=_utf8(salt or "", "salt"), seq=seq, sig=sigb)


def _utf8(text: str, field: str) -> bytes:
    """JSON can carry lone surrogates that have no UTF-8 form: malformed input, not a crash."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise RecordError(MALFORMED, f"{field} is not valid UTF-8 text") from None


def signed_buffer(salt: bytes, seq: int, v: bytes) -> bytes:
    """The exact bytes BEP44 signs: ``4:salt<len>:<salt>3:seqi<seq>e1:v<bencoded v>``."""
    head = b"4:salt" + bencode(salt) if salt else b""
    return head + b"3:seqi%de1:v" % seq + bencode(v)


def mutable_target(k: bytes, salt: bytes = b"") -> bytes:
    return hashlib.sha1(k + salt).digest()


def immutable_target(v: bytes) -> bytes:
    return hashlib.sha1(bencode(v)).digest()


def check_sizes(v: bytes, salt: bytes) -> None:
    if len(bencode(v)) > MAX_V:
        raise RecordError(V_TOO_BIG, f"v is larger than {MAX_V} bytes bencoded")
    if len(salt) > MAX_SALT:
        raise RecordError(SALT_TOO_BIG, f"salt is longer than {MAX_SALT} bytes")


def sign(key: SigningKey, v: bytes, seq: int, salt: bytes = b"") -> Record:
    check_sizes(v, salt)
    sig = key.sign(signed_buffer(salt, seq, v)).signature
    return Record(v=v, k=bytes(key.verify_key), salt=salt, seq=seq, sig=sig)


def check_update(stored: Record | None, new: Record, cas: int | None = None) -> None:
    """BEP44's write rule for a node that holds ``stored`` and is offered ``new``.

    An identical re-put of the stored version is allowed (it is how replicas are
    refreshed); anything not newer is refused, so a stale copy can never come
    back through republishing.
    """
    if stored is None:
        if cas is not None and cas != 0:
            raise RecordError(CAS_MISMATCH, "cas given but nothing is stored")
        return
    if cas is not None and cas != stored.seq:
        raise RecordError(CAS_MISMATCH, f"cas {cas} does not match stored seq {stored.seq}")
    if new.seq < stored.seq or (new.seq == stored.seq and new != stored):
        raise RecordError(SEQ_TOO_LOW, f"seq {new.seq} is not above stored seq {stored.seq}")


def newest(records: list[Record]) -> Record | None:
    """The record a get must return among replicas' answers: highest seq wins.

    Equal seqs with different contents only happen if a key holder signed two
    versions (equivocation); the majority among replicas wins, then the larger
    signature, so every reader picks the same one.
    """
    if not records:
        return None
    top = max(r.seq for r in records)
    candidates = [r for r in records if r.seq == top]
    return max(candidates, key=lambda r: (candidates.count(r), r.sig or b""))
