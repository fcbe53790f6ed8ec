"""The grape's write gate, announcement table and RPC handlers, without sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kademlia.node import Node
from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.cluster import free_port
from p2p_offers.codec import bencode
from p2p_offers.grape.config import GrapeConfig
from p2p_offers.grape.protocol import OK, GrapeProtocol
from p2p_offers.grape.routing import parse_nodes
from p2p_offers.grape.server import NoPeersError, _majority, start_dht
from p2p_offers.grape.storage import PeerTable, RecordStorage, is_peer_address, peer_address
from p2p_offers.records import Record, RecordError, sign

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> RecordStorage:
    return RecordStorage(ttl=100.0, clock=clock)


def put(store: RecordStorage, record: Record, cas: int | None = None, ttl: float | None = None):
    return store.accept(record.target, record.encode(), cas, ttl)


def code_of(call) -> int:
    with pytest.raises(RecordError) as err:
        call()
    return err.value.code


def unsized(salt: bytes, v: bytes, seq: int = 1) -> Record:
    """A correctly signed record that breaks a size limit (``sign`` refuses to make one)."""
    sig = KEY.sign(records.signed_buffer(salt, seq, v)).signature
    return Record(v=v, k=bytes(KEY.verify_key), salt=salt, seq=seq, sig=sig)


# -- the write gate -------------------------------------------------------------------------


def test_accepts_valid_records_and_serves_the_stored_bytes(store):
    immutable, mutable = Record(v=b"hello"), sign(KEY, b"doc", 1, b"salt")
    for record in (immutable, mutable):
        put(store, record)
        assert store.get(record.target) == record.encode()
        assert store.record(record.target) == record
    assert len(store) == 2


def test_bep44_refusals_carry_their_codes(store):
    first = sign(KEY, b"v1", 5, b"s")
    put(store, first)
    forged = Record(b"v2", first.k, b"s", 6, first.sig)
    assert code_of(lambda: put(store, forged)) == records.INVALID_SIGNATURE
    assert code_of(lambda: put(store, sign(KEY, b"v0", 4, b"s"))) == records.SEQ_TOO_LOW
    assert code_of(lambda: put(store, sign(KEY, b"other", 5, b"s"))) == records.SEQ_TOO_LOW
    assert code_of(lambda: put(store, sign(KEY, b"v6", 6, b"s"), cas=4)) == records.CAS_MISMATCH
    assert code_of(lambda: put(store, unsized(b"s", b"x" * 1000))) == records.V_TOO_BIG
    assert code_of(lambda: put(store, unsized(b"s" * 65, b"x"))) == records.SALT_TOO_BIG
    assert store.record(first.target) == first  # nothing above changed it


def test_identical_reput_is_allowed_and_newer_seq_with_cas_replaces(store):
    first = sign(KEY, b"v1", 1)
    put(store, first)
    put(store, first)
    put(store, sign(KEY, b"v2", 2), cas=1)
    assert store.record(first.target).v == b"v2"


def test_cas_on_an_empty_slot(store):
    assert code_of(lambda: put(store, sign(KEY, b"v", 1), cas=3)) == records.CAS_MISMATCH
    put(store, sign(KEY, b"v", 1), cas=0)


def test_a_record_must_live_at_its_own_target(store):
    record = sign(KEY, b"v", 1, b"a")
    wrong = records.mutable_target(record.k, b"b")
    assert code_of(lambda: store.accept(wrong, record.encode())) == records.MALFORMED


@pytest.mark.parametrize(
    "key, value",
    [
        (b"short", Record(v=b"x").encode()),
        (b"\x00" * 20, {"v": b"planted dict"}),  # the remote TypeError DoS of stock kademlia
        (b"\x00" * 20, b"not bencode"),
        (b"\x00" * 20, bencode({"v": b"x", "extra": 1})),
        (b"\x00" * 20, bencode([b"x"])),
        ("text key", b"x"),
    ],
)
def test_junk_is_refused_as_malformed(store, key, value):
    assert code_of(lambda: store.accept(key, value)) == records.MALFORMED
    store[key] = value  # kademlia's own write path: dropped silently
    assert len(store) == 0


def test_setitem_applies_the_same_rules(store):
    new, old = sign(KEY, b"new", 2), sign(KEY, b"old", 1)
    store[new.target] = new.encode()
    store[old.target] = old.encode()  # a stale republish must not roll back
    assert store[new.target] == new.encode()
    with pytest.raises(KeyError):
        store[b"\x09" * 20]


@settings(max_examples=200)
@given(st.binary(max_size=300), st.binary(min_size=20, max_size=20))
def test_arbitrary_bytes_only_ever_raise_record_error(value, key):
    store = RecordStorage()
    with pytest.raises(RecordError):
        store.accept(key, value)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=12))
def test_stored_seq_only_ever_rises(seqs):
    store = RecordStorage()
    for seq in seqs:
        try:
            put(store, sign(OTHER, b"v%d" % seq, seq))
        except RecordError as exc:
            assert exc.code == records.SEQ_TOO_LOW
    assert store.record(records.mutable_target(bytes(OTHER.verify_key))).seq == max(seqs)


# -- lifetimes ------------------------------------------------------------------------------


def test_records_expire_and_copies_do_not_extend_them(store, clock):
    record = sign(KEY, b"v", 1)
    put(store, record, ttl=100)
    clock.now += 60
    put(store, record)  # a republish or hand-off: ttl None keeps what is left
    put(store, record, ttl=10)  # a copy passing on its remaining 10 s
    assert store.items()[0][2] == pytest.approx(40)
    clock.now += 41
    assert store.get(record.target) is None and len(store) == 0


def test_the_writer_refreshes_and_ttl_is_capped(store, clock):
    record = Record(v=b"imm")
    put(store, record, ttl=100)
    clock.now += 90
    put(store, record, ttl=10_000)  # capped at our own 100 s
    assert store.items()[0][2] == pytest.approx(100)


def test_republish_selection_follows_the_last_store_not_the_first(store, clock):
    a, b = Record(v=b"a"), Record(v=b"b")
    put(store, a)
    put(store, b)
    clock.now += 50
    put(store, b)  # someone else republished b: we need not
    assert [key for key, _ in store.iter_older_than(30)] == [a.target]
    assert [key for key, _, _ in store.items(older_than=0)] == [a.target, b.target]


def test_storage_is_bounded(clock):
    store = RecordStorage(ttl=10, max_records=2, clock=clock)
    put(store, Record(v=b"1"))
    put(store, Record(v=b"2"))
    assert code_of(lambda: put(store, Record(v=b"3"))) == 202
    clock.now += 11  # expired items make room
    put(store, Record(v=b"3"))


# -- announcements --------------------------------------------------------------------------


def test_peer_table_has_per_entry_expiry(clock):
    table = PeerTable(ttl=10, clock=clock)
    key = b"k" * 20
    table.add(key, "1.2.3.4:1")
    clock.now += 6
    table.add(key, "1.2.3.4:2")
    assert sorted(table.get(key)) == ["1.2.3.4:1", "1.2.3.4:2"]
    clock.now += 5
    assert table.get(key) == ["1.2.3.4:2"]
    table.add(key, "1.2.3.4:2", ttl=1000)  # capped at the table's ttl
    clock.now += 9.5
    assert table.get(key) == ["1.2.3.4:2"]
    clock.now += 1
    assert table.get(key) == [] and len(table) == 0


def test_peer_table_is_bounded(clock):
    table = PeerTable(ttl=10, max_keys=2, max_peers=2, clock=clock)
    for port in (1, 2, 3):
        clock.now += 1
        table.add(b"a" * 20, f"h:{port}")
    assert sorted(table.get(b"a" * 20)) == ["h:2", "h:3"]
    table.add(b"b" * 20, "h:1")
    table.add(b"c" * 20, "h:1")
    assert len([k for k in (b"a", b"b", b"c") if table.get(k * 20)]) == 2


@pytest.mark.parametrize(
    "host, port, expected",
    [
        ("127.0.0.1", 80, "127.0.0.1:80"),
        ("::1", 65535, "[::1]:65535"),
        ("example.org", 1, "example.org:1"),
    ],
)
def test_peer_address(host, port, expected):
    assert peer_address(host, port) == expected
    assert is_peer_address(expected)


BAD_PEERS = [("1.2.3.4", 0), ("1.2.3.4", 65536), ("1.2.3.4", True), ("1.2.3.4", 1.0)]
BAD_PEERS += [("a b", 1), ("", 1), ("x" * 300, 1), (None, 1), ("ünï", 1), ("a:b", 1)]


@pytest.mark.parametrize("host, port", BAD_PEERS)
def test_peer_address_refuses(host, port):
    with pytest.raises(ValueError):
        peer_address(host, port)


@pytest.mark.parametrize(
    "text", ["1.2.3.4", "1.2.3.4:080", "1.2.3.4:0", ":1", 5, None, "h:1" * 200]
)
def test_is_peer_address_refuses(text):
    assert not is_peer_address(text)


# -- RPC handlers ---------------------------------------------------------------------------


@pytest.fixture
def protocol() -> GrapeProtocol:
    return GrapeProtocol(Node(b"\x00" * 20), RecordStorage(), 20, PeerTable(), 0.1)


SENDER = ("127.0.0.1", 9999)
PEER_ID = b"\x07" * 20


def test_rpc_put_answers_bep44_codes(protocol):
    record = sign(KEY, b"v1", 1)
    answer = protocol.rpc_put(SENDER, PEER_ID, record.target, record.encode(), None, 60)
    assert answer == {"code": OK, "nodes": []}  # our only contact is the sender itself
    older = sign(KEY, b"v0", 0)
    assert protocol.rpc_put(SENDER, PEER_ID, older.target, older.encode(), None, 60)["code"] == 302
    newer = sign(KEY, b"v2", 2)
    assert protocol.rpc_put(SENDER, PEER_ID, newer.target, newer.encode(), 0, 60)["code"] == 301
    assert protocol.rpc_store(SENDER, PEER_ID, newer.target, newer.encode()) is True
    answer = protocol.rpc_find_value(SENDER, PEER_ID, newer.target)
    assert answer["value"] == newer.encode()


def test_rpc_announce_and_find_peers(protocol):
    key = b"\x05" * 20
    other = ("127.0.0.2", 1)
    protocol.admit_answer(other, b"\x08" * 20)  # as if it had answered our ping
    answer = protocol.rpc_announce(SENDER, PEER_ID, key, "10.0.0.1:80", 60)
    assert answer == {"stored": True, "nodes": [(b"\x08" * 20, "127.0.0.2", 1)]}
    assert protocol.rpc_announce(SENDER, PEER_ID, key, "not a peer", 60)["stored"] is False
    assert protocol.rpc_find_peers(SENDER, PEER_ID, key)["peers"] == ["10.0.0.1:80"]


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300)
@given(
    st.sampled_from(["ping", "store", "put", "find_node", "find_value", "announce", "find_peers"]),
    st.lists(junk, max_size=7),
)
def test_rpc_handlers_never_raise(name, args):
    protocol = GrapeProtocol(Node(b"\x00" * 20), RecordStorage(), 20, PeerTable(), 0.1)
    getattr(protocol, f"rpc_{name}")(SENDER, *args)
    getattr(protocol, f"rpc_{name}")(SENDER, PEER_ID, *args)


def test_parse_nodes_keeps_only_well_formed_contacts():
    good = [b"\x03" * 20, "127.0.0.1", 5]
    nodes = parse_nodes(
        [good, [b"short", "h", 1], [b"\x04" * 20, "h", 0], [b"\x00" * 20, "h", 1], "x", None],
        exclude=b"\x00" * 20,
    )
    assert [(n.id, n.ip, n.port) for n in nodes] == [tuple(good)]
    assert parse_nodes({"not": "a list"}, b"") == []
    assert parse_nodes([[b"\x05" * 20, "evil.example", 1], [b"\x06" * 20, "::1", True]], b"") == []


@settings(max_examples=200)
@given(st.lists(st.one_of(junk, st.lists(junk, min_size=3, max_size=3)), max_size=5))
def test_parse_nodes_never_raises(reply):
    parse_nodes(reply, b"\x00" * 20)


# -- put decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codes, result",
    [
        ([OK], 1),
        ([OK, OK, 301], 2),
        ([OK, 301, 301], 301),
        ([OK, 302], 302),  # a tie is not a majority
        ([302, 302, 301], 302),
    ],
)
def test_majority(codes, result):
    if result in (301, 302):
        with pytest.raises(RecordError) as err:
            _majority(codes)
        assert err.value.code == result
    else:
        assert _majority(codes) == result


def test_majority_of_nobody_is_no_peers():
    with pytest.raises(NoPeersError):
        _majority([])


@pytest.mark.parametrize("ttl", [float("nan"), float("inf"), -1, True, "60"])
def test_rpc_put_and_announce_refuse_a_lifetime_that_is_not_finite_seconds(protocol, ttl):
    """#11.2: min(max(nan, 0), cap) is nan, and a record stored with it never expired."""
    record = sign(KEY, b"v1", 1)
    answer = protocol.rpc_put(SENDER, PEER_ID, record.target, record.encode(), None, ttl)
    assert answer["code"] == records.MALFORMED
    assert protocol.rpc_find_value(SENDER, PEER_ID, record.target) is not None
    assert "value" not in (protocol.rpc_find_value(SENDER, PEER_ID, record.target) or {})
    key = b"\x05" * 20
    assert protocol.rpc_announce(SENDER, PEER_ID, key, "10.0.0.1:80", ttl)["stored"] is False


def test_storage_refuses_a_nan_lifetime_from_any_path():
    storage, peers = RecordStorage(), PeerTable()
    record = sign(KEY, b"v1", 1)
    with pytest.raises(RecordError):
        storage.accept(record.target, record.encode(), None, float("nan"))
    with pytest.raises(RecordError):
        peers.add(b"\x05" * 20, "10.0.0.1:80", float("nan"))


# -- who enters the routing table (#11.3) -----------------------------------------------------


def held(protocol: GrapeProtocol) -> list[tuple[bytes, str, int]]:
    return sorted((n.id, n.ip, n.port) for n in protocol.router.contacts())


def test_a_claim_alone_never_enters_the_routing_table(protocol):
    for i in range(50):
        protocol.rpc_ping(("10.0.0.1", 1000 + i), bytes([i]) * 20)
        protocol.rpc_find_node(("10.0.0.2", 2000), bytes([i + 1]) * 20, b"\x01" * 20)
    assert held(protocol) == []


def test_one_id_per_address_and_a_few_per_ip(protocol):
    protocol.admit_answer(("10.0.0.1", 1), b"\x01" * 20)
    protocol.admit_answer(("10.0.0.1", 1), b"\x02" * 20)  # the address now answers as another
    assert held(protocol) == [(b"\x02" * 20, "10.0.0.1", 1)]
    for port in range(2, 10):
        protocol.admit_answer(("10.0.0.1", port), bytes([port + 10]) * 20)
    assert len([c for c in held(protocol) if c[1] == "10.0.0.1"]) == 4
    for port in range(2, 10):  # loopback is this machine's own grapes: no per-IP bound
        protocol.admit_answer(("127.0.0.1", port), bytes([port + 30]) * 20)
    assert len([c for c in held(protocol) if c[1] == "127.0.0.1"]) == 8


def test_an_id_moves_only_once_its_old_address_stops_answering():
    async def scenario() -> None:
        servers = [await start_dht(GrapeConfig(free_port(socket.SOCK_DGRAM), 0)) for _ in "ab"]
        a, b = servers
        try:
            b_address = ("127.0.0.1", b.config.dht_port)
            a.protocol.admit_answer(b_address, b.node.id)
            impostor = ("127.0.0.1", free_port(socket.SOCK_DGRAM))
            a.protocol.admit_answer(impostor, b.node.id)  # b's id, claimed from elsewhere
            await asyncio.gather(*a.protocol.tasks)
            assert [(n.ip, n.port) for n in a.contacts()] == [b_address]
            b.stop()
            a.protocol.admit_answer(impostor, b.node.id)  # now the old address is silent
            await asyncio.gather(*a.protocol.tasks)
            assert [(n.ip, n.port) for n in a.contacts()] == [impostor]
        finally:
            for server in servers:
                server.stop()

    asyncio.run(scenario())


# -- announcement floods (#11.4) --------------------------------------------------------------


def test_one_announcer_has_a_bounded_share_of_a_name(clock):
    table = PeerTable(ttl=100, clock=clock, own_per_announcer=3, third_party_per_announcer=2)
    key = b"n" * 20
    for port in range(1, 50):
        clock.now += 0.01
        table.add(key, f"10.9.9.{port}:80", origin="10.0.0.1")  # made-up third parties
        table.add(key, f"10.0.0.1:{port}", origin="10.0.0.1")  # its own ports
    # its newest entries replace its oldest: 3 own, 2 third-party, own ones first
    assert table.get(key) == [
        *(f"10.0.0.1:{p}" for p in (47, 48, 49)),
        "10.9.9.48:80",
        "10.9.9.49:80",
    ]
    assert table.add(key, "10.0.0.2:1", origin="10.0.0.2")  # others are not affected
    assert len(table.get(key)) == 6


def test_third_party_entries_never_evict_a_hosts_own(clock):
    table = PeerTable(ttl=100, max_peers=3, clock=clock, third_party_per_announcer=1000)
    key = b"n" * 20
    table.add(key, "10.0.0.1:1", origin="10.0.0.1")
    table.add(key, "[::1]:2", origin="::1")  # IPv6 in brackets is still the host itself
    for i in range(100):
        clock.now += 0.01
        table.add(key, f"10.8.{i}.1:1", origin="10.7.7.7")
    assert table.get(key) == ["10.0.0.1:1", "[::1]:2", "10.8.99.1:1"]
    assert table.add(key, "10.0.0.3:3", origin="10.0.0.3")  # own evicts a third party
    assert table.get(key) == ["10.0.0.1:1", "[::1]:2", "10.0.0.3:3"]
    assert not table.add(key, "10.8.0.9:1", origin="10.7.7.7")  # only own ones left: refused
    assert table.add(key, "10.0.0.4:4", origin="10.0.0.4")  # own ones make room among themselves
    assert len(table.get(key)) == 3


def test_only_a_grape_in_the_routing_table_may_name_an_announcements_origin(protocol):
    key = b"\x05" * 20
    stranger = ("10.0.0.9", 7)
    for i in range(40):  # a raw sender naming 40 origins is still one announcer: itself
        answer = protocol.rpc_announce(stranger, PEER_ID, key, f"10.1.0.{i}:1", 60, f"10.2.0.{i}")
        assert answer["stored"] is True
    assert len(protocol.peers.get(key)) == 16
    protocol.admit_answer(SENDER, PEER_ID)
    protocol.rpc_announce(SENDER, PEER_ID, key, "10.3.0.1:1", 60, "10.3.0.1")  # relayed: own
    reply = protocol.rpc_find_peers(SENDER, PEER_ID, key)
    assert (reply["peers"][0], reply["own"]) == ("10.3.0.1:1", 1)
