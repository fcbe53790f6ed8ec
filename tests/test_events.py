"""#9.2 GET /events: the hub (ids, ring, resume, bounded queues and clients), the SSE
parser, and the stream of real node processes read with requests (stream=True)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import pytest
import requests
from event_helpers import Listener
from nacl.signing import SigningKey
from node_helpers import Net, foreign_offer, wait_until

from p2p_offers.client.sse import parse
from p2p_offers.node import errors
from p2p_offers.node.http.event_stream import _frames
from p2p_offers.node.http.events import EventHub
from p2p_offers.node.network.index import CHANGED, DROPPED

# -- the hub, in process ------------------------------------------------------------------------


def _book(hub: EventHub, n: int) -> None:
    for i in range(n):
        hub.publish("book", lambda i=i: {"n": i})


def test_ids_increase_by_one_and_a_resume_replays_exactly_what_was_missed() -> None:
    hub = EventHub(max_clients=2, ring=8, first_id=100)
    _book(hub, 5)  # ids 100..104
    sub, backlog, reset, last = hub.subscribe(101, None)
    assert reset is None and last == 104
    assert [e.id for e in backlog] == [102, 103, 104]
    assert [json.loads(e.frame().split(b"data: ")[1]) for e in backlog] == [
        {"n": 2},
        {"n": 3},
        {"n": 4},
    ]
    hub.publish("trade", lambda: {"t": 1})
    live = sub.queue.get_nowait()
    assert live is not None and live.id == 105 and live.frame().startswith(b"id: 105\nevent: trade")


def test_a_resume_from_before_the_ring_or_from_elsewhere_is_told_to_reset() -> None:
    hub = EventHub(max_clients=5, ring=4, first_id=1)
    _book(hub, 10)  # ids 1..10, the ring holds 7..10
    assert hub.subscribe(6, None)[1:3] == ([e for e in hub._ring], None)
    assert hub.subscribe(5, None)[1:3] == ([], "gap")  # 6 is gone
    assert hub.subscribe(11, None)[1:3] == ([], "unknown_id")  # newer than anything here
    assert hub.subscribe(10, None)[1:3] == ([], None)  # up to date
    assert hub.stats()["reset"] == 2


def test_a_client_that_stops_reading_is_dropped_and_never_blocks_the_publisher() -> None:
    hub = EventHub(max_clients=2, queue_size=3, first_id=1)
    slow, _, _, _ = hub.subscribe(None, None)
    fast, _, _, _ = hub.subscribe(None, None)
    got = []
    for i in range(10):  # publish returns at once although ``slow`` never reads
        hub.publish("book", lambda i=i: {"n": i})
        got.append(fast.queue.get_nowait())
    assert slow.dropped == "slow" and slow.queue.qsize() == 3
    assert [e.id for e in got if e] == list(range(1, 11))
    stats = hub.stats()
    assert stats["dropped_slow"] == 1 and stats["clients"] == 2  # its thread still holds the slot
    hub.release(slow)
    assert hub.stats()["clients"] == 1


def test_at_most_max_clients_and_a_release_frees_a_slot_once() -> None:
    hub = EventHub(max_clients=2)
    a, _, _, _ = hub.subscribe(None, None)
    hub.subscribe(None, None)
    with pytest.raises(errors.TooManyClients) as refused:
        hub.subscribe(None, None)
    assert refused.value.details == {"max_clients": 2}
    hub.release(a)
    hub.release(a)  # idempotent: a second release does not free another's slot
    hub.subscribe(None, None)
    with pytest.raises(errors.TooManyClients):
        hub.subscribe(None, None)
    assert hub.stats()["refused"] == 2


def test_types_filter_live_events_and_the_replay() -> None:
    hub = EventHub(max_clients=1, first_id=1)
    hub.publish("book", lambda: {})
    hub.publish("trade", lambda: {})
    sub, backlog, _, _ = hub.subscribe(0, frozenset({"trade"}))
    assert [e.type for e in backlog] == ["trade"]
    hub.publish("book", lambda: {})
    hub.publish("fill", lambda: {})
    assert sub.queue.empty()


def test_book_changes_say_open_closed_or_expired() -> None:
    hub = EventHub(max_clients=1, first_id=1)
    key = SigningKey.generate()
    signed = foreign_offer(key, 1_700_000_000_000)
    cancelled = foreign_offer(key, 1_700_000_000_000, seq=2, status="cancelled")
    hub.on_book(signed, CHANGED)
    hub.on_book(cancelled, CHANGED)
    hub.on_book(signed, DROPPED)
    hub.on_book(cancelled, DROPPED)  # left the book when it was cancelled: not news
    frames = [json.loads(e.frame().split(b"data: ")[1]) for e in hub._ring]
    assert [f["change"] for f in frames] == ["open", "closed", "expired"]
    assert frames[0]["offer"]["price_usd"] == "30000.00"
    assert frames[0]["offer"]["amount_btc"] == "1.00000000"


def test_a_failing_render_does_not_fail_the_publisher_or_the_stream() -> None:
    hub = EventHub(max_clients=1, first_id=1)
    hub.publish("book", lambda: {"x": object()})  # not JSON: fails when rendered, not here
    hub.publish("book", lambda: {"x": 1})
    bad, good = hub._ring
    assert _frames([bad, good]) == good.frame()  # the bad one is logged and skipped


def test_sse_parser_follows_the_spec_across_arbitrary_chunk_boundaries() -> None:
    text = (
        b"retry: 2000\r\n\r\n: keepalive\n\nevent: hello\ndata: {}\n\n"
        b"id: 7\nevent: book\ndata: line one\ndata:line two\n\n"
        b"data: no type\r\r"
        b"id\nevent: x\n\n"  # an event with no data is not dispatched
    )
    for size in (1, 2, 3, 5, len(text)):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        events = list(parse(chunks, comments=True))
        assert [(e.type, e.data, e.id) for e in events] == [
            ("comment", "keepalive", None),
            ("hello", "{}", None),
            ("book", "line one\nline two", "7"),
            ("message", "no type", "7"),
        ], size


# -- real nodes -------------------------------------------------------------------------------

MAX_CLIENTS = 3
MAX_UNSENT = 8192


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(
        tmp_path_factory.mktemp("net"),
        grapes=1,
        nodes=2,
        node_extra=[
            "--events-clients",
            str(MAX_CLIENTS),
            "--events-keepalive",
            "0.5",
            "--events-max-unsent",
            str(MAX_UNSENT),
        ],
    )
    yield network
    network.close()


@pytest.fixture
def listeners(net: Net):
    opened: list[Listener] = []

    def open_(url: str, **kw) -> Listener:
        listener = Listener(url, **kw)
        opened.append(listener)
        return listener

    yield open_
    for listener in opened:
        listener.close()
    for proc in net.nodes:  # the next test starts with every slot free
        wait_until(lambda p=proc: net.get(p, "/health")["events"]["clients"] == 0, what="slots")


def _data(listener: Listener, type_: str) -> list[dict]:
    return [e.json() for e in listener.of_type(type_)]


def test_book_fills_and_trades_reach_both_nodes_streams(net: Net, listeners) -> None:
    a, b = net.nodes
    on_a, on_b = listeners(a.url), listeners(b.url)
    assert on_a.status == 200 and on_a.headers["Content-Type"].startswith("text/event-stream")
    hello = on_b.wait_for(lambda ev: ev and ev[0].type == "hello" and ev[0].json())
    assert hello["client_id"] == net.ids[b.url] and hello["resumed"] is False
    offer = net.create(a, "30000.5", "1")
    seen = on_b.wait_for(
        lambda ev: [d for d in _data(on_b, "book") if d["offer"]["id"] == offer["id"]],
        what="A's offer in B's stream",
    )
    assert seen[0]["change"] == "open" and seen[0]["offer"]["price_usd"] == "30000.50"
    assert net.bid(b, offer["id"], "0.25").status_code == 201

    def fill_and_trade(listener: Listener, role: str) -> bool:
        fills = [d for d in _data(listener, "fill") if d["fill"]["offer_id"] == offer["id"]]
        trades = [d for d in _data(listener, "trade") if d["trade"]["offer_id"] == offer["id"]]
        return bool(fills and trades) and fills[0]["role"] == role

    on_a.wait_for(lambda ev: fill_and_trade(on_a, "maker"), what="maker fill and trade on A")
    on_b.wait_for(lambda ev: fill_and_trade(on_b, "taker"), what="taker fill and trade on B")
    trade = next(d for d in _data(on_b, "trade") if d["trade"]["offer_id"] == offer["id"])
    assert trade["owner"] == net.ids[a.url] and trade["height"] >= 1
    assert trade["trade"]["amount_btc"] == "0.25000000"
    assert trade["trade"]["price_usd"] == "30000.50"
    # the book on B: the offer closed by the fill, its remainder open
    changes = on_b.wait_for(
        lambda ev: [
            (d["change"], d["offer"]["amount_btc"])
            for d in _data(on_b, "book")
            if offer["id"] in (d["offer"]["id"], d["offer"]["parent"])
        ][1:],
        what="the split on B",
    )
    assert ("closed", "1.00000000") in changes and ("open", "0.75000000") in changes
    for listener in (on_a, on_b):
        ids = [int(e.id) for e in listener.events if e.type in ("book", "fill", "trade")]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_last_event_id_resumes_with_the_same_events(net: Net, listeners) -> None:
    a, _ = net.nodes
    first = listeners(a.url)
    ids = {net.create(a, f"{31000 + i}", "0.1")["id"] for i in range(3)}

    def mine(listener: Listener) -> list:
        return [e for e in listener.of_type("book") if e.json()["offer"]["id"] in ids]

    made = first.wait_for(lambda ev: len(mine(first)) == 3 and mine(first), what="3 offers")
    low, high = int(made[0].id), int(made[-1].id)
    between = [(e.id, e.data) for e in first.events if e.id and low < int(e.id) <= high]
    first.close()
    again = listeners(a.url, last_event_id=made[0].id)
    assert again.status == 200
    again.wait_for(lambda ev: any(e.id == made[-1].id for e in ev), what="the replay")
    assert again.events[0].type == "hello" and again.events[0].json()["resumed"] is True
    replayed = [(e.id, e.data) for e in again.events if e.id and low < int(e.id) <= high]
    assert replayed == between and len(replayed) >= 2
    # the query parameter does the same as the header
    again.close()
    wait_until(lambda: net.get(a, "/health")["events"]["clients"] == 0, what="slots free")
    url = f"{a.url}/events?last_event_id={made[1].id}"
    with requests.get(url, stream=True, timeout=10) as resp:
        assert resp.status_code == 200
        replay = []
        for event in parse(resp.iter_content(chunk_size=None)):
            replay.append(event)
            if event.id == made[2].id:
                break
    assert not [e for e in replay if e.id and int(e.id) <= int(made[1].id)]


def test_an_id_from_before_the_ring_or_a_restart_gets_a_reset(net: Net, listeners) -> None:
    a, _ = net.nodes
    old = listeners(a.url, last_event_id="1")  # far older than this process's first id
    reset = old.wait_for(lambda ev: [e.json() for e in ev if e.type == "reset"], what="reset")
    assert reset[0]["reason"] == "gap" and reset[0]["after"] == 1


def test_the_openapi_document_describes_the_stream(net: Net) -> None:
    op = net.get(net.nodes[0], "/openapi.json")["paths"]["/events"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    assert {"400", "503"} <= op["responses"].keys()
    assert {p["name"] for p in op["parameters"]} == {"last_event_id", "types"}


def test_bad_resume_ids_and_types_are_json_400s(net: Net) -> None:
    url = net.nodes[0].url + "/events"
    for kwargs in (
        {"headers": {"Last-Event-ID": "abc"}},
        {"params": {"last_event_id": "-1"}},
        {"params": {"types": "book,nonsense"}},
        {"params": {"whatever": "1"}},
    ):
        resp = requests.get(url, timeout=10, **kwargs)
        assert resp.status_code == 400, kwargs
        assert resp.json()["error"]["code"] == "invalid_input", kwargs


def test_types_narrow_a_real_stream(net: Net, listeners) -> None:
    a, _ = net.nodes
    trades_only = listeners(a.url, types=["trade"], comments=True)
    net.create(a, "32000", "0.1")
    trades_only.wait_for(lambda ev: any(e.type == "comment" for e in ev), what="a keepalive")
    assert not [e for e in trades_only.events if e.type == "book"]


def test_extra_clients_get_a_json_503_and_a_closed_stream_frees_its_slot(
    net: Net, listeners
) -> None:
    a, _ = net.nodes
    held = [listeners(a.url) for _ in range(MAX_CLIENTS)]
    assert all(h.status == 200 for h in held)
    refused = requests.get(a.url + "/events", timeout=10)
    assert refused.status_code == 503
    assert refused.json()["error"] == {
        "code": "too_many_clients",
        "message": refused.json()["error"]["message"],
        "details": {"max_clients": MAX_CLIENTS},
    }
    assert net.get(a, "/health")["status"] == "ok"  # the API is still served
    held[0].close()
    wait_until(lambda: net.get(a, "/health")["events"]["clients"] == MAX_CLIENTS - 1)
    assert listeners(a.url).status == 200


def test_a_client_that_stops_reading_is_dropped_and_others_keep_their_events(
    net: Net, listeners
) -> None:
    a, _ = net.nodes
    reader = listeners(a.url)
    url = urlparse(a.url)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    stuck.connect((url.hostname, url.port))
    stuck.sendall(f"GET /events HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
    try:
        wait_until(lambda: net.get(a, "/health")["events"]["clients"] == 2, what="both streams")
        created = []
        for i in range(1000):  # a bound: the stuck client is dropped long before
            created.append(net.create(a, f"{40000 + i}", "0.01")["id"])
            if i % 20 == 0 and net.get(a, "/health")["events"]["dropped_slow"]:
                break
        events = wait_until(
            lambda: (
                net.get(a, "/health")["events"]["dropped_slow"] >= 1
                and net.get(a, "/health")["events"]
            ),
            what="the stuck client dropped",
        )
        assert events["clients"] == 1  # its thread let go; the reader's stream is still open
        reader.wait_for(
            lambda ev: {d["offer"]["id"] for d in _data(reader, "book")} >= set(created),
            what="every offer on the reading client",
        )
    finally:
        stuck.close()


def test_a_stream_ends_cleanly_when_its_node_stops(net: Net) -> None:
    proc = net.add_node()
    listener = Listener(proc.url)
    try:
        listener.wait_for(lambda ev: ev, what="hello")
        assert net.cluster.stop(proc) == 0
        assert listener.ended.wait(10)
        assert "Traceback" not in proc.log_tail(1000)
    finally:
        listener.close()
