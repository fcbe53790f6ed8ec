import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p_offers.codec import DecodeError, bdecode, bencode, canonical_json, parse_canonical_json

bvalues = st.recursive(
    st.integers(min_value=-(10**20) + 1, max_value=10**20 - 1) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


@given(bvalues)
def test_bencode_round_trip(value):
    assert bdecode(bencode(value)) == value


@given(st.binary(max_size=64))
def test_bdecode_never_crashes_on_garbage(data):
    with contextlib.suppress(DecodeError):
        bdecode(data)


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"i0e"),
        (-3, b"i-3e"),
        (b"spam", b"4:spam"),
        ("", b"0:"),
        ([1, b"a"], b"li1e1:ae"),
        ({"b": 1, "a": b"x"}, b"d1:a1:x1:bi1ee"),
    ],
)
def test_bencode_known_values(value, encoded):
    assert bencode(value) == encoded


@pytest.mark.parametrize(
    "bad",
    [
        b"i03e",
        b"i-0e",
        b"ie",
        b"03:abc",
        b"5:abc",
        b"d1:bi1e1:ai2ee",
        b"d1:ai1e1:ai2ee",
        b"i1ei2e",
        b"l",
        b"x",
        b"d i1e1:ae",
    ],
)
def test_bdecode_rejects_non_canonical(bad):
    with pytest.raises(DecodeError):
        bdecode(bad)


def test_bencode_refuses_floats_and_bools():
    for value in (1.5, True):
        with pytest.raises(TypeError):
            bencode(value)


json_docs = st.recursive(
    st.none() | st.integers() | st.text(max_size=10) | st.booleans(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=15,
)


@given(json_docs)
def test_canonical_json_round_trip(doc):
    data = canonical_json(doc)
    assert parse_canonical_json(data) == doc


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


@pytest.mark.parametrize(
    "bad", [b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.5}', b'{"a":NaN}', b"\xff"]
)
def test_parse_canonical_json_rejects(bad):
    with pytest.raises(DecodeError):
        parse_canonical_json(bad)


def test_canonical_json_refuses_floats():
    with pytest.raises(TypeError):
        canonical_json({"price": 1.5})


@pytest.mark.parametrize(
    "bad", [b"i" + b"9" * 5000 + b"e", b"9" * 5000 + b":x", b"i" + b"1" * 21 + b"e"]
)
def test_bdecode_refuses_huge_numbers_before_converting_them(bad):
    # int() of thousands of digits raises ValueError (or burns CPU): it must be a DecodeError.
    with pytest.raises(DecodeError):
        bdecode(bad)


def test_bdecode_takes_int64():
    assert bdecode(b"i9223372036854775807e") == 2**63 - 1
