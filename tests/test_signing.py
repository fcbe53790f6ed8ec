import stat

import pytest
from nacl.signing import SigningKey

from p2p_offers.signing import SignatureError, load_or_create_key, public_hex, sign_doc, verify_doc


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
