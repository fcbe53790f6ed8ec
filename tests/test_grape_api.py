"""Three real grape processes on loopback, driven over HTTP like any Grenache client would."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import msgpack
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.cluster import Cluster, Proc, free_ports
from p2p_offers.link import GrapeError, Link
from p2p_offers.records import Record


def start_grapes(cluster: Cluster, count: int = 3, extra: tuple[str, ...] = ()) -> list[Proc]:
    dht, api = free_ports(count), free_ports(count)
    procs = [
        cluster.grape(dht[i], api[i], [p for p in dht if p != dht[i]], extra) for i in range(count)
    ]
    cluster.wait_ready(procs)
    return procs


@pytest.fixture(scope="module")
def grapes(tmp_path_factory) -> list[Proc]:
    with Cluster(tmp_path_factory.mktemp("grapes")) as cluster:
        yield start_grapes(cluster)


@pytest.fixture(scope="module")
def links(grapes) -> list[Link]:
    return [Link(g.url, timeout=5) for g in grapes]


def post(url: str, kind: str, body: bytes | str, **headers: str) -> requests.Response:
    return requests.post(f"{url}/{kind}", data=body, headers=headers, timeout=5)


def grape_error(call) -> GrapeError:
    with pytest.raises(GrapeError) as err:
        call()
    return err.value


# -- records --------------------------------------------------------------------------------


def test_immutable_put_on_one_grape_get_on_the_others(links):
    value = f"hello {time.time()} ünïcode"
    hash_ = links[0].put({"v": value})
    assert hash_ == records.immutable_target(value.encode()).hex()
    for link in links:
        reply = link.get(hash_)
        assert reply["v"] == value and len(reply["id"]) == 40
    assert links[1].request("get", {"hash": hash_})["v"] == value
    assert links[2].get("0" * 40) is None


def test_mutable_update_chain_across_grapes(links):
    key, salt = SigningKey.generate(), b"offer-1"
    record = links[0].put_mutable(key, b'{"n":1}', 1, salt)
    for seq, link in zip((2, 3, 4), (links[1], links[2], links[0]), strict=True):
        link.put_mutable(key, b'{"n":%d}' % seq, seq, salt, cas=seq - 1)
    for link in links:
        got = link.get_record(record.hash)
        assert (got.seq, got.v, got.salt) == (4, b'{"n":4}', salt)
    reply = links[1].get(record.hash)
    assert set(reply) == {"id", "v", "k", "sig", "seq", "salt"}


def race(writers: list[Link], key: SigningKey, seq: int) -> list[object]:
    """Each writer puts its own version ``seq`` with cas ``seq - 1`` at the same instant."""
    outcomes: list[object] = [None] * len(writers)
    barrier = threading.Barrier(len(writers))

    def write(i: int) -> None:
        barrier.wait()
        try:
            writers[i].put_mutable(key, b"writer %d" % i, seq, cas=seq - 1)
            outcomes[i] = "won"
        except GrapeError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


@pytest.mark.parametrize("via", [(0, 1), (1, 1)], ids=["two grapes", "one grape"])
def test_cas_race_has_exactly_one_winner(links, via):
    key = SigningKey.generate()
    links[0].put_mutable(key, b"base", 1)
    target = records.mutable_target(bytes(key.verify_key)).hex()
    for seq in range(2, 10):
        outcomes = race([links[i] for i in via], key, seq)
        winners = [i for i, o in enumerate(outcomes) if o == "won"]
        assert len(winners) == 1, outcomes
        loser = outcomes[1 - winners[0]]
        assert (loser.code, loser.status, loser.name) == (301, 409, "ERR_CAS_MISMATCH")
        for link in links:
            assert link.get_record(target).v == b"writer %d" % winners[0]


def test_forged_replayed_and_oversized_records_are_refused(links):
    key = SigningKey.generate()
    v1 = links[0].put_mutable(key, b"v1", 1, b"s")
    links[1].put_mutable(key, b"v2", 2, b"s", cas=1)
    forged = Record(b"v3", v1.k, b"s", 3, v1.sig)
    cases = [
        (lambda: links[2].put_record(forged), 206, 400),
        (lambda: links[2].put_record(v1), 302, 409),  # replay of an older, validly signed seq
        (lambda: links[0].put_mutable(key, b"v2b", 2, b"s"), 302, 409),  # same seq, new content
        (lambda: links[0].put_mutable(key, b"v3", 3, b"s", cas=1), 301, 409),
    ]
    for call, code, status in cases:
        err = grape_error(call)
        assert (err.code, err.status) == (code, status)
    big_v = key.sign(records.signed_buffer(b"s", 9, b"x" * 1000)).signature
    err = grape_error(lambda: links[0].put_record(Record(b"x" * 1000, v1.k, b"s", 9, big_v)))
    assert (err.code, err.status) == (205, 413)
    err = grape_error(lambda: links[0].put({"v": "x" * 1000}))
    assert (err.code, err.status) == (205, 413)
    salt = b"s" * 65
    big_salt = key.sign(records.signed_buffer(salt, 9, b"x")).signature
    err = grape_error(lambda: links[0].put_record(Record(b"x", v1.k, salt, 9, big_salt)))
    assert (err.code, err.status) == (207, 413)
    assert links[2].get_record(v1.hash).v == b"v2"


# -- announcements --------------------------------------------------------------------------


def test_announce_on_one_grape_lookup_on_the_others(links):
    name = f"svc-{time.time()}"
    assert links[0].announce(name, 4321) == 3  # every grape of three is among the k closest
    links[1].announce(name, 4322, "10.1.2.3")
    links[2].announce(name, 4323, "example.org")
    for link in links:
        assert sorted(link.lookup(name)) == [
            "10.1.2.3:4322",
            "127.0.0.1:4321",  # the client's address as the grape saw it
            "example.org:4323",
        ]
    assert links[0].lookup(f"unknown-{time.time()}") == []


def test_announcements_expire_after_dpa(cluster):
    procs = start_grapes(cluster, extra=("--dpa", "1500"))
    a, b = Link(procs[0].url), Link(procs[1].url)
    a.announce("short-lived", 1000)
    assert b.lookup("short-lived") == ["127.0.0.1:1000"]
    time.sleep(1.6)
    assert b.lookup("short-lived") == []
    a.announce("short-lived", 1000)  # a re-announce brings it back
    assert b.lookup("short-lived") == ["127.0.0.1:1000"]


# -- malformed input ------------------------------------------------------------------------

BAD = [
    # (type, raw body, status, error name)
    ("put", b"not json", 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b"\xff\xfe\x00", 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b"[" * 5000 + b"]" * 5000, 413, "ERR_GRAPE_PAYLOAD_SIZE"),
    ("put", b"[" * 4000, 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b"", 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b'"just a string"', 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b'{"data": null}', 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b'{"data": {"v": 5}}', 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b'{"data": {"v": "\\ud800"}}', 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("put", b'{"data": {"v": "x", "k": "zz", "sig": "00", "seq": 1}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": 1, "sig": "00", "seq": 1}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": true}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": 1e400}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": 1, "salt": []}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": 1, "cas": "1"}}', 400, None),
    (
        "put",
        b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": 99999999999999999999}}',
        400,
        None,
    ),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": -1}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "' + b"ab" * 32 + b'", "sig": "00", "seq": 1}}', 400, None),
    ("put", b'{"data": {"v": "x", "k": "00", "sig": "00", "seq": NaN}}', 400, None),
    ("get", b'{"data": "xyz"}', 400, "ERR_GRAPE_HASH_FORMAT"),
    ("get", b'{"data": {"hash": 5}}', 400, "ERR_GRAPE_HASH_FORMAT"),
    ("get", b'{"data": ["' + b"a" * 40 + b'"]}', 400, "ERR_GRAPE_HASH_FORMAT"),
    ("get", b'{"data": "' + b"g" * 40 + b'"}', 400, "ERR_GRAPE_HASH_FORMAT"),
    ("get", b'{"data": "' + b"a" * 41 + b'"}', 400, "ERR_GRAPE_HASH_FORMAT"),
    ("lookup", b'{"data": 5}', 400, "ERR_GRAPE_LOOKUP"),
    ("lookup", b'{"data": ""}', 400, "ERR_GRAPE_LOOKUP"),
    ("lookup", b'{"data": null}', 400, "ERR_GRAPE_LOOKUP"),
    ("lookup", b'{"data": "\\udfff"}', 400, "ERR_GRAPE_LOOKUP"),
    ("lookup", b'{"data": "' + b"n" * 1025 + b'"}', 400, "ERR_GRAPE_LOOKUP"),
    ("announce", b'{"data": "svc"}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": ["svc"]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": ["svc", 1, "h", 4]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": [5, 1000]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": ["svc", 0]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", 65536]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", -1]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", true]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", 80.5]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", "80"]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", 1e400]}', 400, "ERR_GRAPE_SERVICE_PORT"),
    ("announce", b'{"data": ["svc", ' + b"9" * 5000 + b"]}", 400, "ERR_GRAPE_PAYLOAD_INVALID"),
    ("announce", b'{"data": ["svc", 80, "bad host!"]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": ["svc", 80, 12]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("announce", b'{"data": ["svc", 80, "h:1"]}', 400, "ERR_GRAPE_ANNOUNCE"),
    ("nope", b'{"data": 1}', 404, "ERR_REQ_NOTFOUND"),
    ("a/b/c", b'{"data": 1}', 404, "ERR_REQ_NOTFOUND"),
]


@pytest.mark.parametrize(
    "kind, body, status, name", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_malformed_input_gets_a_named_error(grapes, kind, body, status, name):
    resp = post(grapes[0].url, kind, body, **{"content-type": "application/json"})
    assert resp.status_code == status
    error = resp.json()
    assert isinstance(error, str) and error.startswith("ERR_")
    if name:
        assert error.split(":")[0] == name


def test_body_size_limit(grapes):
    limit = 8192
    padding = "x" * (limit - len(json.dumps({"rid": "", "data": "svc"})))
    exact = json.dumps({"rid": padding, "data": "svc"})
    assert len(exact) == limit
    assert post(grapes[0].url, "lookup", exact).status_code == 200
    resp = post(grapes[0].url, "lookup", exact + " ")
    assert (resp.status_code, resp.json()) == (413, "ERR_GRAPE_PAYLOAD_SIZE: body over 8192 bytes")
    chunked = requests.post(f"{grapes[0].url}/lookup", data=iter([exact.encode(), b" "]), timeout=5)
    assert chunked.status_code == 413


def test_wrong_method_and_keep_alive(grapes):
    assert requests.get(f"{grapes[0].url}/lookup", timeout=5).status_code == 404
    with requests.Session() as session:
        for _ in range(3):
            resp = session.post(f"{grapes[0].url}/lookup", json={"data": "x"}, timeout=5)
            assert resp.headers.get("Connection", "").lower() != "close"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(["put", "get", "lookup", "announce"]), data=json_values)
def test_fuzzed_payloads_never_get_a_500(grapes, kind, data):
    body = json.dumps({"rid": "f", "data": data})  # NaN and Infinity included, as JS would not
    resp = post(grapes[1].url, kind, body)
    assert resp.status_code in (200, 400, 404, 409, 413)
    resp.json()


# -- failures -------------------------------------------------------------------------------


def test_get_and_lookup_still_answer_with_a_grape_killed_then_sigterm_exits_cleanly(cluster):
    # How fast they answer is measured by bench_dht/bench_grape, not asserted here.
    procs = start_grapes(cluster)
    links = [Link(p.url) for p in procs]
    key = SigningKey.generate()
    record = links[0].put_mutable(key, b"v1", 1)
    links[1].put_mutable(key, b"v2", 2, cas=1)
    immutable = links[0].put({"v": "still here"})
    links[0].announce("survivor", 1234)
    cluster.kill(procs[0])
    checks = [
        (lambda link: link.get_record(record.hash).v, b"v2"),
        (lambda link: link.get(immutable)["v"], "still here"),
        (lambda link: link.lookup("survivor"), ["127.0.0.1:1234"]),
    ]
    for link in links[1:]:
        for _ in range(3):
            for check, expected in checks:
                assert check(link) == expected
    links[1].put_mutable(key, b"v3", 3, cas=2)  # two of three grapes still make a majority
    assert links[2].get_record(record.hash).v == b"v3"
    # stop() falls back to SIGKILL (exit -9) if a process ignores the signal: 0 means clean.
    assert cluster.stop(procs[1], signal.SIGTERM) == 0
    assert cluster.stop(procs[2], signal.SIGINT) == 0


def first_answer(url: str, timeout: float = 30.0) -> requests.Response:
    """The first HTTP answer of a process that is still starting (a slow machine is no error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.post(url, json={"data": "x"}, timeout=5)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_grape_alone_answers_503_until_its_peers_come_up(cluster):
    dht, api = free_ports(2), free_ports(2)
    first = cluster.grape(dht[0], api[0], [dht[1]])
    resp = first_answer(f"{first.url}/lookup")
    assert (resp.status_code, resp.json().split(":")[0]) == (503, "ERR_GRAPE_NO_PEERS")
    second = cluster.grape(dht[1], api[1], [dht[0]])
    cluster.wait_ready([first, second], timeout=10)
    hash_ = Link(first.url).put({"v": "late joiner"})
    assert Link(second.url).get(hash_)["v"] == "late joiner"


def held_by(dht_port: int, target_hex: str) -> bytes | None:
    """The value a grape itself holds for ``target`` (a raw find_value RPC, no crawl)."""
    msg_id = os.urandom(20)
    request = msgpack.packb(["find_value", [os.urandom(20), bytes.fromhex(target_hex)]])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\x00" + msg_id + request, ("127.0.0.1", dht_port))
        reply = sock.recv(65536)
    assert reply[:21] == b"\x01" + msg_id
    answer = msgpack.unpackb(reply[21:])
    return answer["value"] if isinstance(answer, dict) else None


def test_a_joining_grape_is_handed_the_records_it_must_hold(cluster):
    dht, api = free_ports(3), free_ports(3)
    first = [cluster.grape(dht[i], api[i], [dht[1 - i]]) for i in range(2)]
    cluster.wait_ready(first)
    key = SigningKey.generate()
    hashes = [Link(first[0].url).put_mutable(key, b"m", 1, b"%d" % i).hash for i in range(6)]
    hashes += [Link(first[1].url).put({"v": f"i{i}"}) for i in range(6)]
    joiner = cluster.grape(dht[2], api[2], dht[:2])
    cluster.wait_ready([joiner])
    deadline = time.monotonic() + 5  # the hand-off runs in the background of the old grapes
    while not all(held_by(dht[2], h) for h in hashes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(Record.decode(held_by(dht[2], h)).hash == h for h in hashes)


def test_standalone_grape_works_alone(cluster):
    dht, api = free_ports(1)[0], free_ports(1)[0]
    proc = cluster.grape(dht, api)
    cluster.wait_ready([proc])
    link = Link(proc.url)
    assert link.announce("solo", 1) == 1
    assert link.get(link.put({"v": "solo"}))["v"] == "solo"


def test_junk_datagrams_do_not_hurt_a_grape(grapes, links):
    """Raw UDP at the DHT port: garbage, wrong arity, planted dicts, unknown RPCs."""
    port = int(grapes[2].argv[grapes[2].argv.index("--dp") + 1])
    msg_id = os.urandom(20)
    requests_ = [
        ["store", [b"\x01" * 20, b"\x02" * 20, {"v": b"planted"}]],
        ["put", [b"\x01" * 20, b"\x02" * 20, b"x", 1, None]],
        ["find_value", [1, 2, 3]],
        ["find_node", []],
        ["announce", [b"\x01" * 20, b"\x02" * 20, "1.2.3.4:5", "forever"]],
        ["no_such_rpc", [1]],
        "not a list",
    ]
    datagrams = [b"\x00" + msg_id + msgpack.packb(r) for r in requests_]
    datagrams += [b"", b"\x00", os.urandom(100), b"\x01" + msg_id + b"\xc1", b"\x07" * 30]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram in datagrams:
            sock.sendto(datagram, ("127.0.0.1", port))
    time.sleep(0.2)
    hash_ = links[2].put({"v": f"after junk {time.time()}"})
    assert links[0].get(hash_) is not None and links[2].lookup("nothing") == []


def _log(proc: Proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


def test_no_tracebacks_in_grape_logs(grapes):
    for proc in grapes:
        assert "Traceback" not in _log(proc), proc.log_tail()


def dht_port(proc: Proc) -> int:
    return int(proc.argv[proc.argv.index("--dp") + 1])


def contacts_of(port: int) -> list[tuple[bytes, str, int]]:
    """The contacts a grape hands out (a raw find_node for a random target: its 20 closest)."""
    msg_id = os.urandom(20)
    request = msgpack.packb(["find_node", [os.urandom(20), os.urandom(20)]])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(b"\x00" + msg_id + request, ("127.0.0.1", port))
        reply = sock.recv(65536)
    assert reply[:21] == b"\x01" + msg_id
    return [tuple(c) for c in msgpack.unpackb(reply[21:])]


class Impostor:
    """One UDP socket that claims a new random node id in every datagram, and answers every
    ping it gets with yet another: the most an attacker with one address can do."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.pings = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def flood(self, port: int, count: int) -> None:
        for i in range(count):
            rpc = ["ping", [os.urandom(20)]] if i % 2 else ["find_node", [os.urandom(20)] * 2]
            self.sock.sendto(b"\x00" + os.urandom(20) + msgpack.packb(rpc), ("127.0.0.1", port))

    def _answer(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            if data[:1] == b"\x00" and msgpack.unpackb(data[21:])[0] == "ping":
                self.pings += 1
                self.sock.sendto(b"\x01" + data[1:21] + msgpack.packb(os.urandom(20)), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_one_socket_claiming_1000_ids_gets_one_place_in_the_routing_table(cluster):
    """#11.3: on main 17 of the next 20 puts failed (503 ERR_GRAPE_NO_PEERS) after this."""
    procs = start_grapes(cluster)
    target = dht_port(procs[0])
    impostor = Impostor()
    try:
        impostor.flood(target, 1000)
        link = Link(procs[0].url)
        for i in range(20):
            assert link.put({"v": f"after the flood {i} {time.time()}"})
        key = SigningKey.generate()
        for seq in range(1, 6):
            link.put_mutable(key, b"v%d" % seq, seq, cas=seq - 1 if seq > 1 else None)
        assert Link(procs[1].url).get_record(records.mutable_target(bytes(key.verify_key)).hex())
        held = contacts_of(target)
        assert len([c for c in held if c[2] == impostor.port]) <= 1, held
        assert {c[2] for c in held} >= {dht_port(p) for p in procs[1:]}
        assert impostor.pings < 20  # each claim is not a ping: checks per address are spaced
    finally:
        impostor.close()


def peers_held_by(port: int, name: str) -> dict:
    """A grape's own entries for a service name (a raw find_peers RPC, no crawl)."""
    msg_id = os.urandom(20)
    key = hashlib.sha1(name.encode()).digest()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(
            b"\x00" + msg_id + msgpack.packb(["find_peers", [os.urandom(20), key]]),
            ("127.0.0.1", port),
        )
        reply = sock.recv(65536)
    assert reply[:21] == b"\x01" + msg_id
    return msgpack.unpackb(reply[21:])


def test_an_announcement_flood_keeps_the_genuine_entry_first(cluster):
    """#11.4: on main 1,100 third-party announces pushed the genuine entry out of the name."""
    procs = start_grapes(cluster)
    links = [Link(p.url) for p in procs]
    name = "flooded"
    links[1].announce(name, 4000)  # the host itself (the grape sees 127.0.0.1)

    def junk(part: int) -> None:
        for i in range(part, 1100, 8):
            links[0].announce(name, 1 + i, f"10.{i // 250}.{i % 250}.1")

    flooders = [threading.Thread(target=junk, args=(part,)) for part in range(8)]
    for thread in flooders:
        thread.start()
    for thread in flooders:
        thread.join()
    for link, proc in zip(links, procs, strict=True):
        found = link.lookup(name)
        assert found[0] == "127.0.0.1:4000", found[:5]
        assert all(p.startswith("10.") for p in found[1:]) and len(found) <= 1 + 3 * 16
        held = peers_held_by(dht_port(proc), name)  # what this grape itself stores
        assert held["peers"][0] == "127.0.0.1:4000" and held["own"] == 1
        assert len(held["peers"]) == 1 + 16
    for port in range(5000, 5100):  # one machine announcing itself at many ports is bounded too
        links[2].announce("crowded", port)
    assert [len(link.lookup("crowded")) for link in links] == [64, 64, 64]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    resp = requests.get(f"{url}/metrics", timeout=5)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.text)
        for sample in family.samples
    }


def test_metrics_count_rpcs_records_peers_and_requests(cluster):
    procs = start_grapes(cluster)
    link = Link(procs[0].url)
    before = scrape(procs[0].url)
    hash_ = link.put({"v": f"counted {time.time()}"})
    assert link.get(hash_) is not None
    link.announce("metered", 1000)
    assert link.lookup("metered") == ["127.0.0.1:1000"]
    assert post(procs[0].url, "get", b'{"data": 5}').status_code == 400
    after = scrape(procs[0].url)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    for kind in ("put", "get", "announce", "lookup"):
        assert delta("grape_http_requests_total", type=kind, outcome="ok") == 1
    assert delta("grape_http_requests_total", type="get", outcome="ERR_GRAPE_HASH_FORMAT") == 1
    assert delta("grape_http_request_seconds_count", type="put") == 1
    assert delta("grape_dht_rpc_sent_total", rpc="put", outcome="answered") == 2  # two others
    assert delta("grape_dht_rpc_sent_total", rpc="announce", outcome="answered") == 2
    assert delta("grape_dht_rpc_seconds_count", rpc="put") == 2
    assert after[("grape_contacts", ())] == 2 and after[("grape_records", ())] >= 1
    assert after[("grape_announcements", ())] >= 1
    assert after[("grape_dht_contacts_checked_total", (("outcome", "admitted"),))] >= 2
    received = scrape(procs[1].url)
    assert received[("grape_dht_rpc_received_total", (("rpc", "put"),))] >= 1
    assert requests.post(f"{procs[0].url}/metrics", json={}, timeout=5).status_code == 404
