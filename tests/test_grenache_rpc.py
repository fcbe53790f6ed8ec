"""Python PeerRPC: the wire codec, the client's lookup cache and failover, the server's
answers to bad frames, all on MockTransport; then the same over real sockets."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import pytest
import requests
from fakes import MemoryDht

from p2p_offers.grenache import (
    Dispatcher,
    LookupEmpty,
    MaybeDelivered,
    MockTransport,
    NotDelivered,
    PeerRPCClient,
    PeerRPCServer,
    RemoteError,
    ServiceError,
    wire,
)
from p2p_offers.grenache.client import LookupCache
from p2p_offers.grenache.transport import BaseTransport, Reply


def echo(payload: Any) -> Any:
    return {"echo": payload}


def refuse(payload: Any) -> Any:
    raise ServiceError("ERR_NOPE: refused", {"why": "test"})


def crash(payload: Any) -> Any:
    raise KeyError("bug")


def dispatcher() -> Dispatcher:
    d = Dispatcher(max_request=4096)
    d.handle("svc", echo)
    d.handle("refuse", refuse)
    d.handle("crash", crash)
    return d


def frame(status_body: tuple[int, bytes, dict[str, str]]) -> tuple[int, list[Any]]:
    status, body, headers = status_body
    if headers.get("grc-compress") == "gzip":
        body = wire.gunzip(body, 1 << 20)
    return status, json.loads(body)


# -- the wire ----------------------------------------------------------------------------


def test_request_roundtrip_plain_and_gzip():
    for compress in (False, True):
        body, headers = wire.encode_request("r1", "svc", {"a": [1, "ü"]}, compress)
        assert headers["grc-compress"] == ("gzip" if compress else "none")
        req = wire.decode_request(body, headers)
        assert (req.rid, req.key, req.payload, req.compress) == (
            "r1",
            "svc",
            {"a": [1, "ü"]},
            compress,
        )


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"not json", "ERR_INVALID_JSON", 400),
        (b"\xff\xfe", "ERR_INVALID_JSON", 400),
        (b'{"rid": 1}', "ERR_INVALID_INPUT", 400),
        (b'["r", "svc"]', "ERR_INVALID_INPUT", 400),
        (b'["r", "svc", 1, 2]', "ERR_INVALID_INPUT", 400),
        (b'[{}, "svc", 1]', "ERR_INVALID_INPUT", 400),
        (b'["r", 5, 1]', "ERR_INVALID_INPUT", 400),
        (b'["r", "svc", NaN]', "ERR_INVALID_JSON", 400),
        (b"[" * 4000, "ERR_INVALID_JSON", 400),
        (b'["r", "svc", "' + b"x" * 5000 + b'"]', "ERR_BODY_TOO_LARGE", 413),
    ],
)
def test_bad_frames_get_an_error_reply(body, code, status):
    d = Dispatcher(max_request=4096)
    got_status, reply = frame(d.respond(body, {"grc-compress": "none"}))
    assert got_status == status
    assert reply[1].startswith(code + ":")
    assert reply[2] is None
    assert d.counts["bad_frames"] == 1


def test_bad_frame_with_a_readable_rid_echoes_it():
    _, reply = frame(dispatcher().respond(b'["r9", 7, null]', {}))
    assert reply[0] == "r9" and reply[1].startswith("ERR_INVALID_INPUT")


def test_gzip_bomb_is_refused_not_inflated():
    bomb = wire.gzip(b'["r","svc","' + b"0" * 3_000_000 + b'"]')
    assert len(bomb) < 4096
    status, reply = frame(dispatcher().respond(bomb, {"grc-compress": "gzip"}))
    assert status == 413 and reply[1].startswith("ERR_BODY_TOO_LARGE")


def test_header_says_gzip_but_body_is_not():
    status, reply = frame(dispatcher().respond(b'["r","svc",1]', {"grc-compress": "gzip"}))
    assert status == 400 and reply[1].startswith("ERR_INVALID_JSON")


def test_handlers_errors_and_unknown_services():
    d = dispatcher()
    assert frame(d.respond(b'["a","svc",[1]]', {})) == (200, ["a", None, {"echo": [1]}])
    assert frame(d.respond(b'["b","refuse",null]', {})) == (
        200,
        ["b", "ERR_NOPE: refused", {"why": "test"}],
    )
    status, reply = frame(d.respond(b'["c","crash",null]', {}))
    assert (status, reply[0], reply[1]) == (
        200,
        "c",
        "ERR_INTERNAL: internal error; see the server's log",
    )
    status, reply = frame(d.respond(b'["d","other",null]', {}))
    assert reply[0] == "d" and reply[1].startswith("ERR_NOT_FOUND")


def test_reply_is_gzipped_when_the_request_was():
    body, headers = wire.encode_request("z", "svc", "hi", True)
    _, reply, out_headers = dispatcher().respond(body, headers)
    assert out_headers["grc-compress"] == "gzip"
    assert wire.decode_reply(reply, True) == ("z", None, {"echo": "hi"})


def test_raw_json_data_is_spliced_into_the_reply():
    for compress in (False, True):
        body = wire.encode_reply("r", None, wire.RawJson(b'{"records":[1,2]}'), compress)
        assert wire.decode_reply(body, compress) == ("r", None, {"records": [1, 2]})
    body, _ = wire.encode_request("q", "svc", b'{"action":"x"}', False)
    assert json.loads(body) == ["q", "svc", {"action": "x"}]


def test_decode_reply_rejects_non_frames():
    for bad in (b"nope", b'{"a":1}', b'["r", 5, null]', b"[1,2]"):
        with pytest.raises(wire.ReplyError):
            wire.decode_reply(bad, False)
    with pytest.raises(wire.ReplyError):
        wire.decode_reply(b'["r", null, "' + b"x" * 100 + b'"]', False, limit=50)


# -- the client over MockTransport -------------------------------------------------------


class CountingLink:
    def __init__(self, services: dict[str, list[str]]) -> None:
        self.services = services
        self.calls = 0
        self.fail = 0
        self.gate: threading.Event | None = None

    def lookup(self, name: str) -> list[str]:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            self.fail -= 1
            raise OSError("grape down")
        return list(self.services.get(name, []))


def mock_network(addresses: list[str]) -> tuple[MockTransport, list[Dispatcher]]:
    transport = MockTransport()
    servers = []
    for address in addresses:
        d = Dispatcher()
        d.handle("svc", lambda p, a=address: {"at": a, "got": p})
        d.handle("refuse", refuse)
        transport.attach(address, d.respond)
        servers.append(d)
    return transport, servers


def test_request_round_robins_over_looked_up_addresses():
    addrs = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
    transport, _ = mock_network(addrs)
    client = PeerRPCClient(CountingLink({"svc": addrs}), transport)
    seen = [client.request("svc", i)["at"] for i in range(6)]
    assert seen == addrs + addrs
    assert client.cache.grape_lookups == 1  # the cache answered the other five


def test_request_fails_over_past_refused_addresses_and_looks_up_again():
    addrs = ["10.0.0.1:1", "10.0.0.2:1"]
    transport, _ = mock_network(addrs[1:])  # the first address is dead
    link = CountingLink({"svc": addrs})
    client = PeerRPCClient(link, transport)
    assert client.request("svc", "x")["at"] == "10.0.0.2:1"
    assert client.request("svc", "y")["at"] == "10.0.0.2:1"
    transport.detach("10.0.0.2:1")
    with pytest.raises(NotDelivered):
        client.request("svc", "z")
    calls = link.calls
    with pytest.raises(NotDelivered):
        client.request("svc", "z")
    assert link.calls == calls + 1  # everything failed: the entry was dropped


class LosingTransport(BaseTransport):
    def __init__(self) -> None:
        self.posts = 0

    def post(self, address: str, body: bytes, headers: Any, timeout: float) -> Reply:
        self.posts += 1
        raise MaybeDelivered("ERR_TIMEOUT")


def test_maybe_delivered_is_never_repeated_elsewhere():
    transport = LosingTransport()
    client = PeerRPCClient(CountingLink({"svc": ["a:1", "b:1", "c:1"]}), transport)
    with pytest.raises(MaybeDelivered):
        client.request("svc", "bid")
    assert transport.posts == 1


def test_remote_errors_are_raised_with_their_code():
    transport, _ = mock_network(["a:1"])
    client = PeerRPCClient(CountingLink({"refuse": ["a:1"]}), transport)
    with pytest.raises(RemoteError) as info:
        client.request("refuse", None)
    assert (info.value.code, info.value.detail, info.value.address) == (
        "ERR_NOPE",
        "refused",
        "a:1",
    )
    assert info.value.data == {"why": "test"}


def test_a_reply_for_another_rid_is_a_bad_reply():
    class Liar(BaseTransport):
        def post(self, address: str, body: bytes, headers: Any, timeout: float) -> Reply:
            return 200, b'["someone-else", null, 1]'

    from p2p_offers.grenache import BadReply

    with pytest.raises(BadReply):
        PeerRPCClient(CountingLink({"svc": ["a:1"]}), Liar()).request("svc", 1)


def test_lookup_empty_is_not_cached():
    link = CountingLink({})
    client = PeerRPCClient(link, MockTransport())
    with pytest.raises(LookupEmpty):
        client.request("svc", 1)
    link.services["svc"] = ["a:1"]
    assert client.lookup("svc") == ["a:1"]


def test_lookup_cache_expires_retries_and_evicts():
    now = [0.0]
    link = CountingLink({"a": ["x:1"], "b": ["y:1"], "c": ["z:1"]})
    cache = LookupCache(link, size=2, max_age_s=10, clock=lambda: now[0])
    link.fail = 2  # the grape fails twice, the third try answers
    assert cache.get("a") == ["x:1"] and link.calls == 3
    cache.get("a")
    assert link.calls == 3
    now[0] = 10.5
    cache.get("a")
    assert link.calls == 4
    cache.get("b"), cache.get("c")  # "a" is the least recently used of three: evicted
    cache.get("c"), cache.get("b")
    assert link.calls == 6
    cache.get("a")
    assert link.calls == 7


def test_concurrent_lookups_share_one_grape_request():
    link = CountingLink({"svc": ["a:1"]})
    link.gate = threading.Event()
    cache = LookupCache(link)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("svc"))) for _ in range(8)]
    for t in threads:
        t.start()
    while not cache._inflight:  # the first one is at the grape
        threading.Event().wait(0.001)
    link.gate.set()
    for t in threads:
        t.join()
    assert results == [["a:1"]] * 8 and link.calls == 1


def test_map_reaches_every_address_or_a_limited_sample():
    addrs = [f"10.0.0.{i}:1" for i in range(5)]
    transport, _ = mock_network(addrs)
    client = PeerRPCClient(CountingLink({"svc": addrs, "refuse": addrs}), transport)
    assert sorted(r["at"] for r in client.map("svc", "hi")) == addrs
    limited = client.map("svc", "hi", limit=2)
    assert len(limited) == 2 and len({r["at"] for r in limited}) == 2
    with pytest.raises(RemoteError):
        client.map("refuse", None)
    settled = client.map("refuse", None, settle=True)
    assert len(settled) == 5 and all(isinstance(r, RemoteError) for r in settled)


# -- real sockets ------------------------------------------------------------------------


@pytest.fixture
def served():
    server = PeerRPCServer(workers=4, max_request=64 * 1024)
    server.handle("svc", echo)
    server.handle("refuse", refuse)
    port = server.listen(0, "127.0.0.1")
    dht = MemoryDht()
    server.announce(dht, ["svc", "refuse"])
    client = PeerRPCClient(dht)
    yield server, client, f"127.0.0.1:{port}"
    client.close()
    server.stop()


def test_real_sockets_request_map_and_gzip(served):
    _, client, address = served
    assert client.lookup("svc") == [address]
    assert client.request("svc", {"n": 1}) == {"echo": {"n": 1}}
    assert client.request("svc", "big" * 5000, compress=True) == {"echo": "big" * 5000}
    assert client.map("svc", 2) == [{"echo": 2}]
    with pytest.raises(RemoteError, match="ERR_NOPE"):
        client.request("refuse", None)


def test_real_sockets_bad_frames_and_methods(served):
    _, _, address = served
    url = f"http://{address}/"
    resp = requests.post(url, data=b"garbage")
    assert resp.status_code == 400 and resp.json()[1].startswith("ERR_INVALID_JSON")
    resp = requests.post(url, data=b"[" + b"1," * 40_000 + b"1]")
    assert resp.status_code == 413 and resp.json()[1].startswith("ERR_BODY_TOO_LARGE")
    resp = requests.get(url)
    assert resp.status_code == 405 and resp.json()[1].startswith("ERR_METHOD_NOT_ALLOWED")
    # a body larger than the bound that does not say so up front (chunked) is cut, not read
    resp = requests.post(url, data=iter([b"[" + b"1," * 1000] * 100 + [b"1]"]))
    assert resp.status_code == 413
    resp = requests.post(url, data=b'["r","svc",1]')
    assert resp.status_code == 200 and resp.json() == ["r", None, {"echo": 1}]


def test_real_sockets_a_dead_address_fails_over(served):
    _, _, address = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # bound, never listening: refused
        client = PeerRPCClient(CountingLink({"svc": [dead, address]}))
        try:
            assert [client.request("svc", i) for i in range(3)] == [{"echo": i} for i in range(3)]
        finally:
            client.close()


def test_real_sockets_listen_on_a_busy_port_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        server = PeerRPCServer()
        with pytest.raises(OSError):
            server.listen(s.getsockname()[1], "127.0.0.1")
        server.stop()


def test_a_key_with_its_own_pool_is_answered_while_the_shared_pool_is_blocked():
    gate = threading.Event()
    server = PeerRPCServer(workers=2)
    server.handle("slow", lambda p: gate.wait(30))
    server.handle("fast", echo, workers=1)
    port = server.listen(0, "127.0.0.1")
    links = CountingLink({"slow": [f"127.0.0.1:{port}"], "fast": [f"127.0.0.1:{port}"]})
    client = PeerRPCClient(links)
    try:
        blocked = [client._map_pool.submit(client.request, "slow", i) for i in range(2)]
        while server.dispatcher.counts["requests"] < 2:  # both shared workers are taken
            threading.Event().wait(0.001)
        assert client.request("fast", "through", timeout=10) == {"echo": "through"}
        gate.set()
        assert [f.result() for f in blocked] == [True, True]
    finally:
        gate.set()
        client.close()
        server.stop()


def test_a_keep_alive_connection_the_server_closed_is_not_reused():
    """A server that closes an idle connection (Node's does after 5 s) must not turn the
    next request into MaybeDelivered: the closed connection is noticed and replaced."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    accepted = []

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                accepted.append(conn)
                data = b""
                while b"]" not in data:
                    data += conn.recv(65536)
                rid = json.loads(data.split(b"\r\n\r\n", 1)[1])[0]
                body = json.dumps([rid, None, len(accepted)]).encode()
                conn.sendall(reply % (len(body), body))
                conn.close()  # keep-alive promised, then closed while idle

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        from p2p_offers.grenache.client import call
        from p2p_offers.grenache.transport import HttpTransport

        transport = HttpTransport()
        assert call(transport, address, "svc", 1, 5) == 1
        while accepted[0].fileno() != -1:  # the server has closed the first connection
            threading.Event().wait(0.001)
        assert call(transport, address, "svc", 2, 5) == 2
        thread.join(5)
        transport.close()
