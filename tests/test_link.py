"""The Python Link client against real grapes, and against a lying one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from nacl.signing import SigningKey

from p2p_offers import records
from p2p_offers.cluster import Cluster, free_ports
from p2p_offers.link import GrapeError, Link
from p2p_offers.records import Record, RecordError


@pytest.fixture(scope="module")
def grape_urls(tmp_path_factory) -> Iterator[list[str]]:
    """Two grapes whose announcements live 800 ms, so re-announcing is observable."""
    dht, api = free_ports(2), free_ports(2)
    with Cluster(tmp_path_factory.mktemp("link")) as cluster:
        procs = [cluster.grape(dht[i], api[i], [dht[1 - i]], ("--dpa", "800")) for i in range(2)]
        cluster.wait_ready(procs)
        yield [p.url for p in procs]


@pytest.fixture
def links(grape_urls) -> Iterator[list[Link]]:
    pair = [Link(url) for url in grape_urls]
    yield pair
    for link in pair:
        link.close()


def test_grape_api_round_trip(links):
    a, b = links
    assert a.announce("link:svc", 7000) == 2
    assert b.lookup("link:svc") == ["127.0.0.1:7000"]
    hash_ = a.put({"v": "immutable"})
    assert b.get(hash_)["v"] == "immutable"
    record = Record(v=b"via put_record")
    assert a.put_record(record) == record.hash
    assert b.get_record(record.hash) == record


def test_put_mutable_with_cas_and_error_attributes(links):
    a, b = links
    key = SigningKey.generate()
    first = a.put_mutable(key, b"one", 1, b"salt")
    second = b.put_mutable(key, b"two", 2, b"salt", cas=1)
    assert a.get_record(first.hash) == second
    with pytest.raises(GrapeError) as err:
        a.put_mutable(key, b"three", 3, b"salt", cas=1)
    assert (err.value.name, err.value.code, err.value.status) == ("ERR_CAS_MISMATCH", 301, 409)
    with pytest.raises(GrapeError) as err:
        a.put_record(first)
    assert (err.value.name, err.value.code, err.value.status) == ("ERR_SEQ_TOO_LOW", 302, 409)
    with pytest.raises(GrapeError) as err:
        a.request("lookup", 5)
    assert (err.value.name, err.value.code, err.value.status) == ("ERR_GRAPE_LOOKUP", None, 400)


def test_start_and_stop_announcing(links):
    a, b = links
    a.start_announcing("link:periodic", 7001, interval=0.2)
    time.sleep(1.5)  # well past the grapes' 800 ms --dpa: alive only because re-announced
    assert b.lookup("link:periodic") == ["127.0.0.1:7001"]
    a.stop_announcing("link:periodic")
    time.sleep(1.2)
    assert b.lookup("link:periodic") == []


def test_unreachable_grape():
    link = Link(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=1)
    with pytest.raises(GrapeError) as err:
        link.lookup("anything")
    assert (err.value.name, err.value.status) == ("ERR_GRAPE_UNREACHABLE", None)


class LyingGrape(BaseHTTPRequestHandler):
    reply: object = None
    calls: int = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(self.reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def liar() -> Iterator[tuple[Link, type[LyingGrape]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), LyingGrape)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Link(f"http://127.0.0.1:{server.server_address[1]}"), LyingGrape
    server.shutdown()
    server.server_close()


def test_get_record_does_not_believe_a_lying_grape(liar):
    link, handler = liar
    key = SigningKey.generate()
    genuine = records.sign(key, b"real", 5, b"s")
    forged = {**genuine.to_json(), "v": "fake"}
    other = records.sign(key, b"real", 5, b"other salt")
    for reply, code in [(forged, records.INVALID_SIGNATURE), (other.to_json(), records.MALFORMED)]:
        handler.reply = reply
        with pytest.raises(RecordError) as err:
            link.get_record(genuine.hash)
        assert err.value.code == code
    handler.reply = genuine.to_json()
    assert link.get_record(genuine.hash) == genuine


def test_announcing_survives_a_grape_answering_nonsense(liar):
    link, handler = liar
    handler.reply, handler.calls = "junk", 0
    with pytest.raises(GrapeError) as err:
        link.announce("svc", 1000)
    assert err.value.name == "ERR_GRAPE_REPLY"
    link.start_announcing("svc", 1000, interval=0.05)
    deadline = time.monotonic() + 10
    while handler.calls < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    handler.reply = 1  # the grape recovers: announcing carries on
    seen = handler.calls
    while handler.calls < seen + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    link.close()
    assert handler.calls >= seen + 2


def test_a_link_fails_over_between_grapes_and_skips_a_dead_one(grape_urls):
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    link = Link(f"{dead}, {grape_urls[0]}", timeout=1)
    assert link.grapes == [dead, grape_urls[0]]
    assert link.lookup("link:failover") == [] and link.grape == grape_urls[0]
    link.grape = dead  # one grape, and it is gone: the error says so
    with pytest.raises(GrapeError) as err:
        link.lookup("x")
    assert err.value.name == "ERR_GRAPE_UNREACHABLE"
    link.close()


def test_announcing_backs_off_and_says_so(liar):
    link, handler = liar
    handler.reply, handler.calls = "junk", 0
    link.start_announcing("svc", 1000, interval=60)
    deadline = time.monotonic() + 10
    while handler.calls < 3 and time.monotonic() < deadline:  # at 0 s, 1 s and 3 s
        time.sleep(0.02)
    state = link.status()
    assert state["announced"] is False and "ERR_GRAPE_REPLY" in state["last_error"]
    time.sleep(1.5)  # the next attempt is 4 s after the third (main: one every second)
    assert handler.calls == 3
    handler.reply = 1
    link.close()
