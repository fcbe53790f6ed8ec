import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.records import Record, RecordError, check_update, newest, sign


@pytest.fixture(scope="module")
def vectors(bep44_vectors_path):
    return json.loads(bep44_vectors_path.read_text())


def mutable_vectors(vectors):
    return [v for v in vectors["vectors"] if "seq" in v]


def test_signed_buffer_matches_bep44(vectors):
    for vec in mutable_vectors(vectors):
        buf = records.signed_buffer(vec["salt"].encode(), vec["seq"], vec["v"].encode())
        assert buf == vec["signed_buffer"].encode()


def test_targets_match_bep44(vectors):
    k = bytes.fromhex(vectors["public_key"])
    for vec in vectors["vectors"]:
        if "seq" in vec:
            assert records.mutable_target(k, vec["salt"].encode()).hex() == vec["target"]
        else:
            assert records.immutable_target(vec["v"].encode()).hex() == vec["target"]


def test_bep44_signatures_verify_and_tampering_fails(vectors):
    k = bytes.fromhex(vectors["public_key"])
    for vec in mutable_vectors(vectors):
        rec = Record(
            v=vec["v"].encode(),
            k=k,
            salt=vec["salt"].encode(),
            seq=vec["seq"],
            sig=bytes.fromhex(vec["sig"]),
        )
        rec.verify()
        for forged in (
            Record(rec.v + b"!", rec.k, rec.salt, rec.seq, rec.sig),
            Record(rec.v, rec.k, rec.salt, rec.seq + 1, rec.sig),
            Record(rec.v, rec.k, rec.salt + b"x", rec.seq, rec.sig),
        ):
            with pytest.raises(RecordError) as err:
                forged.verify()
            assert err.value.code == records.INVALID_SIGNATURE


salts = st.binary(max_size=records.MAX_SALT)
values = st.binary(max_size=900)
seqs = st.integers(min_value=0, max_value=records.MAX_SEQ)


@given(values, seqs, salts)
def test_sign_verify_and_both_encodings_round_trip(v, seq, salt):
    rec = sign(KEY, v, seq, salt)
    rec.verify()
    assert Record.decode(rec.encode()) == rec
    if _utf8(v) and _utf8(salt):
        assert Record.from_json(rec.to_json()) == rec


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


KEY = SigningKey.generate()


def test_size_limits():
    with pytest.raises(RecordError) as err:
        sign(KEY, b"x" * 1000, 1)
    assert err.value.code == records.V_TOO_BIG
    sign(KEY, b"x" * 995, 1)  # "995:" + 995 bytes = 999 bencoded
    with pytest.raises(RecordError) as err:
        sign(KEY, b"x", 1, b"s" * 65)
    assert err.value.code == records.SALT_TOO_BIG


@given(st.binary(max_size=200))
def test_decode_garbage_raises_record_error_only(data):
    with contextlib.suppress(RecordError):
        Record.decode(data)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"v": 1},
        {"v": "x", "k": "zz", "sig": "00", "seq": 1},
        {"v": "x", "k": "00", "sig": "00", "seq": "1"},
        {"v": "x", "k": "00", "sig": "00", "seq": True},
        {"v": "x", "k": "00", "sig": "00", "seq": 1, "salt": 5},
    ],
)
def test_from_json_rejects_malformed(bad):
    with pytest.raises(RecordError) as err:
        Record.from_json(bad)
    assert err.value.code == records.MALFORMED


def test_check_update_rules():
    v1, v2 = sign(KEY, b"a", 1, b"s"), sign(KEY, b"b", 2, b"s")
    check_update(None, v1)
    check_update(v1, v2, cas=1)
    check_update(v1, v1)  # identical re-put refreshes a replica
    for stored, new, cas, code in [
        (v2, v1, None, records.SEQ_TOO_LOW),
        (v1, sign(KEY, b"c", 1, b"s"), None, records.SEQ_TOO_LOW),
        (v1, v2, 0, records.CAS_MISMATCH),
        (None, v1, 3, records.CAS_MISMATCH),
    ]:
        with pytest.raises(RecordError) as err:
            check_update(stored, new, cas)
        assert err.value.code == code


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=8))
def test_newest_picks_highest_seq_whatever_the_order(seq_list):
    recs = [sign(KEY, b"v%d" % s, s) for s in seq_list]
    assert newest(recs).seq == max(seq_list)
    assert newest(list(reversed(recs))) == newest(recs)


@pytest.mark.parametrize(
    "bad",
    [{"v": "\ud800"}, {"v": "x", "k": "00" * 32, "sig": "00" * 64, "seq": 1, "salt": "\udfff"}],
)
def test_from_json_rejects_lone_surrogates(bad):
    with pytest.raises(RecordError) as err:
        Record.from_json(bad)
    assert err.value.code == records.MALFORMED
