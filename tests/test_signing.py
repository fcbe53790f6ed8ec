import stat

import pytest
from nacl.signing import SigningKey

from p2p_offers.signing import (
    SignatureError,
    load_or_create_key,
    mac_doc,
    pair_key,
    public_hex,
    sign_doc,
    verify_doc,
    verify_mac,
)


def test_sign_verify_and_domain_separation():
    key = SigningKey.generate()
    doc = {"bid_id": "b1", "amount": 5}
    sig = sign_doc(key, "bid", doc)
    verify_doc(public_hex(key), "bid", doc, sig)
    with pytest.raises(SignatureError):
        verify_doc(public_hex(key), "receipt", doc, sig)  # same bytes, other purpose
    with pytest.raises(SignatureError):
        verify_doc(public_hex(key), "bid", {**doc, "amount": 6}, sig)
    with pytest.raises(SignatureError):
        verify_doc("zz", "bid", doc, sig)


def test_key_file_is_private_and_stable(tmp_path):
    path = tmp_path / "node" / "key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path).encode() == key.encode()


def test_key_file_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "key"
    load_or_create_key(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_pair_keys_are_shared_by_exactly_two_nodes_and_macs_bind_kind_and_doc():
    a, b, c = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
    ab = pair_key(a, public_hex(b))
    assert ab == pair_key(b, public_hex(a))  # both ends compute it
    assert ab not in (pair_key(a, public_hex(c)), pair_key(c, public_hex(b)))
    doc = {"from": public_hex(a), "to": public_hex(b), "at": 1}
    mac = mac_doc(ab, "gossip", doc)
    verify_mac(ab, "gossip", doc, mac)
    for secret, kind, changed in (
        (pair_key(c, public_hex(b)), "gossip", doc),  # c claiming to be a
        (ab, "bid", doc),
        (ab, "gossip", {**doc, "at": 2}),
    ):
        with pytest.raises(SignatureError):
            verify_mac(secret, kind, changed, mac)
    for junk in ("00" * 32, "01" + "00" * 31, "zz" * 32, "ab"):
        with pytest.raises(SignatureError):
            pair_key(a, junk)
