"""Per-maker hash-chained feeds of fill receipts: the verifiable trade history.

Every maker appends each fill receipt it signs to its own feed. An entry names
its owner, its height (1-based), the hash of the previous entry, the receipt
and a time, and is signed by the owner. Because each entry commits to its
predecessor's hash, and the hash covers the signature, a feed's head hash pins
the whole history: a node holding the head can check any copy of the feed it
pulls from any peer, and a maker cannot rewrite a trade without either
breaking the chain or signing two different entries at one height, which is
itself proof of cheating (``ForkError`` carries both).

This module is pure: no I/O, no clock (``ts`` is passed in). The node stores
feeds, publishes heads and pulls entries; this decides what is valid.

Receipts are opaque here except that their ``maker`` must be the feed's owner.
Their signature is checked by a hook (``verify_receipt``), by default
``verify_receipt_signature``, because the node owns the receipt's fields.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.codec import canonical_json
from p2p_offers.signing import SignatureError, public_hex, sign_doc, verify_doc

LedgerEntry = dict[str, Any]
ReceiptCheck = Callable[[dict[str, Any]], None]

ENTRY_KIND = "ledger-entry"
RECEIPT_KIND = "receipt"
ENTRY_FIELDS = frozenset({"owner", "height", "prev", "receipt", "ts", "sig"})

_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX64 = re.compile(r"[0-9a-f]{128}")


class LedgerError(ValueError):
    """An entry or a chain that must not be believed; the message says why."""


class GapError(LedgerError):
    """Entries that do not continue the feed at its next height (some are missing)."""


class ForkError(LedgerError):
    """Two different signed entries at one height of one owner's feed.

    Both are kept on the exception: together they prove the owner equivocated.
    """

    def __init__(self, held: LedgerEntry, offered: LedgerEntry) -> None:
        super().__init__(f"fork at height {held['height']} of feed {held['owner']}")
        self.held = held
        self.offered = offered


def entry_hash(entry: LedgerEntry) -> str:
    """sha256 of the entry's canonical JSON, signature included, in hex."""
    return hashlib.sha256(canonical_json(entry)).hexdigest()


def _hash_or_none(entry: LedgerEntry) -> str | None:
    try:
        return entry_hash(entry)
    except (TypeError, ValueError):  # floats, NaN, unserializable values
        return None


def _hash_or_raise(entry: LedgerEntry) -> str:
    digest = _hash_or_none(entry)
    if digest is None:
        raise LedgerError(f"height {entry['height']}: not canonical JSON (a float?)")
    return digest


def _unsigned(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "sig"}


def verify_receipt_signature(receipt: dict[str, Any]) -> None:
    """The receipt is signed by its ``maker`` with kind ``receipt`` (raises ``LedgerError``)."""
    maker, sig = receipt.get("maker"), receipt.get("sig")
    if not isinstance(maker, str) or not isinstance(sig, str):
        raise LedgerError("receipt lacks a maker or a signature")
    try:
        verify_doc(maker, RECEIPT_KIND, _unsigned(receipt), sig)
    except (SignatureError, TypeError) as exc:
        raise LedgerError(f"receipt: {exc}") from None


def append(
    key: SigningKey,
    head: LedgerEntry | None,
    receipt: dict[str, Any],
    ts: int,
) -> LedgerEntry:
    """The next entry of ``key``'s feed after ``head`` (``None`` for the first one)."""
    owner = public_hex(key)
    if head is not None and head.get("owner") != owner:
        raise LedgerError("head belongs to another feed")
    if receipt.get("maker") != owner:
        raise LedgerError("a feed records only receipts its owner made")
    entry: LedgerEntry = {
        "owner": owner,
        "height": 1 if head is None else head["height"] + 1,
        "prev": "" if head is None else entry_hash(head),
        "receipt": receipt,
        "ts": ts,
    }
    entry["sig"] = sign_doc(key, ENTRY_KIND, entry)
    return entry


def _check_shape(entry: Any) -> None:
    if not isinstance(entry, dict) or set(entry) != ENTRY_FIELDS:
        raise LedgerError(f"an entry has exactly the fields {sorted(ENTRY_FIELDS)}")
    owner, height, prev = entry["owner"], entry["height"], entry["prev"]
    receipt, ts, sig = entry["receipt"], entry["ts"], entry["sig"]
    if not isinstance(owner, str) or not _HEX32.fullmatch(owner):
        raise LedgerError("owner must be a 32-byte public key in lowercase hex")
    if type(height) is not int or height < 1:
        raise LedgerError("height must be an integer >= 1")
    if not isinstance(prev, str) or not (_HEX32.fullmatch(prev) if height > 1 else prev == ""):
        raise LedgerError("prev must be a sha256 hex hash, or empty at height 1")
    if not isinstance(receipt, dict):
        raise LedgerError("receipt must be an object")
    if type(ts) is not int or ts < 0:
        raise LedgerError("ts must be a non-negative integer (ms)")
    if not isinstance(sig, str) or not _HEX64.fullmatch(sig):
        raise LedgerError("sig must be a 64-byte signature in lowercase hex")
    if receipt.get("maker") != owner:
        raise LedgerError("receipt maker is not the feed owner")


def _check_signature(entry: LedgerEntry) -> None:
    try:
        verify_doc(entry["owner"], ENTRY_KIND, _unsigned(entry), entry["sig"])
    except (SignatureError, TypeError) as exc:  # TypeError: a float hidden in the receipt
        raise LedgerError(f"height {entry['height']}: {exc}") from None


def verify_entry(
    entry: LedgerEntry,
    prev: LedgerEntry | None,
    verify_receipt: ReceiptCheck | None = verify_receipt_signature,
) -> None:
    """Raise ``LedgerError`` unless ``entry`` is a valid successor of ``prev``.

    ``prev`` is the already-trusted entry before it, or ``None`` for height 1.
    Cheap structural checks run before the signature checks, so junk from a
    peer costs no cryptography.
    """
    _check_link(entry, prev, "" if prev is None else entry_hash(prev))
    _check_signature(entry)
    _check_receipt(entry, verify_receipt)


def _check_link(entry: Any, prev: LedgerEntry | None, prev_hash: str) -> None:
    """Shape, height and ``prev`` hash: everything about ``entry`` but its signatures."""
    _check_shape(entry)
    if prev is None:
        if entry["height"] != 1:
            raise LedgerError(f"height {entry['height']} has no previous entry")
    else:
        if entry["owner"] != prev["owner"]:
            raise LedgerError("entry continues another owner's feed")
        if entry["height"] != prev["height"] + 1:
            raise LedgerError(f"height {entry['height']} does not follow {prev['height']}")
        if entry["prev"] != prev_hash:
            raise LedgerError(f"prev hash at height {entry['height']} does not match")


def _check_receipt(entry: LedgerEntry, verify_receipt: ReceiptCheck | None) -> None:
    if verify_receipt is None:
        return
    try:
        verify_receipt(entry["receipt"])
    except LedgerError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise LedgerError(f"receipt at height {entry['height']}: {exc}") from None


class Feed:
    """One owner's verified chain, grown only by verified, contiguous continuations.

    What a node replicates per maker. Everything held has been verified against
    its predecessor, so the head hash vouches for all of it.

    ``every_signature=False`` is how a replicating node reads a batch: each
    entry's shape, height, ``prev`` hash and receipt (``verify_receipt``) are
    checked, but only the batch's last entry's signature. That signature covers
    its ``prev``, the hash of the entry before it, signature included, and so on
    down to the head already held: the owner's one signature authenticates the
    whole batch, as a signed tree root does in Hypercore or Certificate
    Transparency. One Ed25519 verification per batch instead of two per entry
    (the entry's and its receipt's, both the owner's key) is most of what
    replication costs a node per trade. The audit (``every_signature=True``, the
    default) still checks every signature, the receipts' included.
    """

    def __init__(
        self,
        owner: str,
        verify_receipt: ReceiptCheck | None = verify_receipt_signature,
        every_signature: bool = True,
    ):
        self.owner = owner
        self._verify_receipt = verify_receipt
        self._every_signature = every_signature
        self._entries: list[LedgerEntry] = []
        self._hashes: list[str] = []

    @property
    def height(self) -> int:
        return len(self._entries)

    @property
    def head(self) -> LedgerEntry | None:
        return self._entries[-1] if self._entries else None

    @property
    def head_hash(self) -> str:
        """Hash of the head entry; ``""`` for an empty feed, like a first entry's ``prev``."""
        return self._hashes[-1] if self._hashes else ""

    def entries_from(self, height: int) -> list[LedgerEntry]:
        """Entries at ``height`` and above (1-based), what a peer asks for to catch up."""
        return self._entries[max(height, 1) - 1 :]

    def extend(self, entries: Iterable[LedgerEntry]) -> int:
        """Append a continuation; return how many entries were new.

        Entries already held are accepted again if identical (peers resend
        overlapping ranges), but a different entry at a held height raises
        ``ForkError``, and a batch that starts past ``height + 1`` or skips a
        height raises ``LedgerError``. All or nothing: on error the feed is
        unchanged.
        """
        added: list[LedgerEntry] = []
        hashes: list[str] = []
        for entry in entries:
            if not isinstance(entry, dict) or type(entry.get("height")) is not int:
                raise LedgerError("malformed entry")
            if entry.get("owner") != self.owner:
                raise LedgerError("entry belongs to another feed")
            height = entry["height"]
            if added or height > self.height:
                expected = self.height + len(added) + 1
                if height != expected:
                    raise GapError(f"expected height {expected}, got {height}")
                prev, prev_hash = (added[-1], hashes[-1]) if added else (self.head, self.head_hash)
                _check_link(entry, prev, prev_hash)
                if self._every_signature:
                    _check_signature(entry)
                _check_receipt(entry, self._verify_receipt)
                hashes.append(_hash_or_raise(entry))
                added.append(entry)
            elif height < 1:
                raise LedgerError("height must be >= 1")
            elif _hash_or_none(entry) != self._hashes[height - 1]:
                # Only a second entry the owner really signed proves a fork;
                # anything else is junk from whoever relayed it.
                _check_shape(entry)
                _check_signature(entry)
                raise ForkError(self._entries[height - 1], entry)
        if added and not self._every_signature:
            _check_signature(added[-1])  # vouches for every entry before it (see the class)
        self._entries.extend(added)
        self._hashes.extend(hashes)
        return len(added)

    def append(self, key: SigningKey, receipt: dict[str, Any], ts: int) -> LedgerEntry:
        """The owner's side: sign the next entry for ``receipt`` and hold it."""
        entry = append(key, self.head, receipt, ts)
        self.extend([entry])
        return entry
