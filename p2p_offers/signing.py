"""Signatures over JSON documents (bids, receipts, ledger entries) and the node's key file.

Every signature is bound to a ``kind`` so that a signature made for one purpose
(say, a bid) can never be replayed as another (say, a receipt). BEP44 records
are signed in ``records``, because their bytes are fixed by BEP44.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box
from nacl.signing import SigningKey, VerifyKey

from p2p_offers.codec import canonical_json

DOMAIN = b"p2p-offers/1/"


class SignatureError(ValueError):
    """The signature does not verify, or the key or signature is malformed."""


def _message(kind: str, doc: dict[str, Any]) -> bytes:
    return DOMAIN + kind.encode() + b"\n" + canonical_json(doc)


def sign_doc(key: SigningKey, kind: str, doc: dict[str, Any]) -> str:
    """Hex signature of ``doc`` (which must not contain its own ``sig``) for ``kind``."""
    return key.sign(_message(kind, doc)).signature.hex()


def verify_doc(public_hex: str, kind: str, doc: dict[str, Any], sig_hex: str) -> None:
    try:
        VerifyKey(bytes.fromhex(public_hex)).verify(_message(kind, doc), bytes.fromhex(sig_hex))
    except (BadSignatureError, ValueError, TypeError):
        raise SignatureError(f"invalid {kind} signature") from None


def pair_key(key: SigningKey, peer_hex: str) -> bytes:
    """A secret only we and the node ``peer_hex`` can compute: X25519 of our key and theirs
    (each Ed25519 key taken to its Curve25519 form, as libsodium provides; ``Box``'s
    precomputed key), hashed for this one use.

    For messages meant for one peer, a MAC under this key proves the sender to the
    receiver as a signature would, for a keyed hash's cost instead of Ed25519's (sign
    ~45 µs and verify ~75 µs of CPU here, per message; ``bench/bench_crypto.py``).
    Unlike a signature it convinces nobody else, which is all a point-to-point message
    needs. Raises ``SignatureError``
    for a key that is no usable public key.
    """
    try:
        theirs = VerifyKey(bytes.fromhex(peer_hex)).to_curve25519_public_key()
        shared = Box(key.to_curve25519_private_key(), theirs).shared_key()
    except (CryptoError, ValueError, TypeError):
        raise SignatureError("not a usable public key") from None
    return hashlib.blake2b(shared, digest_size=32, person=b"p2p-offers/mac").digest()


def mac_doc(secret: bytes, kind: str, doc: dict[str, Any]) -> str:
    """Hex keyed blake2b of ``doc`` for ``kind`` (the bytes ``sign_doc`` would sign)."""
    return hashlib.blake2b(_message(kind, doc), key=secret, digest_size=32).hexdigest()


def verify_mac(secret: bytes, kind: str, doc: dict[str, Any], mac_hex: str) -> None:
    if not hmac.compare_digest(mac_doc(secret, kind, doc), mac_hex):
        raise SignatureError(f"invalid {kind} authentication code")


def public_hex(key: SigningKey) -> str:
    """A node's identity (``client_id``): its Ed25519 public key in hex."""
    return bytes(key.verify_key).hex()


def load_or_create_key(path: Path) -> SigningKey:
    """The node's identity survives restarts; the file is created 0600 and never widened."""
    path = Path(path)
    if path.exists():
        seed = bytes.fromhex(path.read_text().strip())
        return SigningKey(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    # Written aside, fsynced, then renamed: a crash can leave no key or the whole key,
    # never an empty file that would stop the node from starting again.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key
