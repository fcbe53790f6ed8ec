"""Our ledger's head as a BEP44 record (salt ``ledger``, seq = height), and reading others'."""

from __future__ import annotations

from dataclasses import dataclass

from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.codec import DecodeError, canonical_json, parse_canonical_json
from p2p_offers.fields import DocError
from p2p_offers.records import Record
from p2p_offers.signing import public_hex

LEDGER_SALT = b"ledger"
HEAD_ID = LEDGER_SALT.decode()  # the publisher's queue key for our head


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A feed's head as a BEP44 record: salt ``ledger``, seq = height, v = {height, head}.

    It has the attributes the ``Publisher`` uses (``id``, ``seq``, ``hash``,
    ``record``), so our head is put and pushed like an offer version, and a
    burst of fills publishes only the newest head.
    """

    record: Record
    owner: str
    height: int
    head: str

    @property
    def id(self) -> str:
        return HEAD_ID

    @property
    def seq(self) -> int:
        return self.height

    @property
    def hash(self) -> str:
        return self.record.hash


def sign_head(key: SigningKey, height: int, head: str) -> SignedHead:
    v = canonical_json({"head": head, "height": height})
    return SignedHead(records.sign(key, v, height, LEDGER_SALT), public_hex(key), height, head)


def parse_head(record: Record) -> SignedHead:
    """Believe a head record only if it is signed, under salt ``ledger``, with seq = height.

    Raises ``RecordError`` (signature, sizes) or ``DocError`` (shape).
    """
    if not record.mutable or record.salt != LEDGER_SALT:
        raise DocError("a ledger head is a mutable record with salt 'ledger'")
    record.verify()
    try:
        doc = parse_canonical_json(record.v)
    except DecodeError as exc:
        raise DocError(str(exc)) from None
    if not isinstance(doc, dict) or set(doc) != {"head", "height"}:
        raise DocError("a ledger head is {height, head}")
    height, head = doc["height"], doc["head"]
    if type(height) is not int or height < 0 or height != record.seq:
        raise DocError("height must be a non-negative integer equal to seq")
    if not isinstance(head, str) or (len(head) != 64 if height else head != ""):
        raise DocError("head must be the head entry's sha256 hex, empty at height 0")
    assert record.k is not None
    return SignedHead(record, record.k.hex(), height, head)
