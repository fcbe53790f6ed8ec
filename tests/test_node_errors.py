"""#10.6 one error model, and #11.8 quiet logs: on a real node process where the issue asks.

Every failure is ``{"error": {"code", "message", "details"?}}`` with ``details`` an
object, in API units; no Werkzeug page or text; a body the parser cannot take is
a 400 on every POST endpoint; expected client failures are one log line, counted.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
from fakes import MemoryDht
from nacl.signing import SigningKey
from node_helpers import Clock, Net

from p2p_offers.bids import make_bid
from p2p_offers.cluster import free_ports
from p2p_offers.node import errors
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import APIS, create_app
from p2p_offers.node.http.status import STATUS, status_of
from p2p_offers.node.http.waitress_logs import ClientFailureFilter
from p2p_offers.node.runtime import Node
from p2p_offers.signing import public_hex

POSTS = [op.path for api in APIS for op in api.operations if op.method == "POST"]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("errors"), grapes=1, nodes=1)
    yield network
    network.close()


def is_project_error(resp: requests.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json"), resp.text
    body = resp.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert "details" not in body["error"] or isinstance(body["error"]["details"], dict)
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def _path(path: str) -> str:
    return path.replace("<offer_id>", "3f0c2a4e-7c1d-4b3a-9f5e-1a2b3c4d5e6f")


@pytest.mark.parametrize("path", POSTS)
def test_json_nested_20000_deep_is_400_on_every_post(net: Net, path: str) -> None:
    node = net.nodes[0]
    for body in ("[" * 20_000 + "]" * 20_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
        resp = net.http.post(
            node.url + _path(path), data=body, headers={"Content-Type": "application/json"}
        )
        assert is_project_error(resp, 400)["code"] in {"invalid_json", "invalid_input"}


@pytest.mark.parametrize("path", POSTS)
def test_any_body_the_parser_cannot_take_is_400_never_werkzeug(net: Net, path: str) -> None:
    node = net.nodes[0]
    for body in (b"not json", b"\xff\xfe", b'{"a": NaN}', b"1" * 5000, b""):
        resp = net.http.post(node.url + _path(path), data=body)
        error = is_project_error(resp, 400, "invalid_json")
        assert "Failed to decode" not in error["message"] and "<" not in error["message"]


def test_unknown_route_and_wrong_method_get_the_projects_errors(net: Net) -> None:
    node = net.nodes[0]
    missing = is_project_error(net.http.get(node.url + "/no/such/thing"), 404, "not_found")
    assert missing["message"] == "no such endpoint: GET /no/such/thing"
    resp = net.http.put(node.url + "/health")
    wrong = is_project_error(resp, 405, "method_not_allowed")
    assert "GET" in resp.headers["Allow"] and "GET" in wrong["details"]["allowed"]
    resp = net.http.delete(node.url + "/offers")
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    too_big = net.http.post(node.url + "/offers", data=b"[" + b" " * 70_000 + b"]")
    is_project_error(too_big, 413, "body_too_large")


def test_details_is_an_object_and_messages_speak_api_units(net: Net) -> None:
    node = net.nodes[0]
    bad = net.call(node, "POST", "/offers", {"side": "hold", "price_usd": "1", "amount_btc": "1"})
    error = is_project_error(bad, 400, "invalid_input")
    assert [f["field"] for f in error["details"]["fields"]] == ["side"]
    offer = net.create(node, amount="0.3")
    resp = net.call(node, "PATCH", f"/offers/{offer['id']}", {"amount_btc": "0"})
    is_project_error(resp, 400, "invalid_input")
    assert net.call(node, "DELETE", f"/offers/{offer['id']}").status_code == 200
    closed = is_project_error(net.call(node, "DELETE", f"/offers/{offer['id']}"), 409)
    assert closed["code"] == "offer_not_open"


def test_insufficient_amount_is_said_in_btc() -> None:
    exc = errors.InsufficientAmount.left("x", 500_000_000, 30_000_000)
    assert exc.message == "bid for 5.00000000 BTC, 0.30000000 left"
    assert exc.details == {"offer_id": "x", "available_btc": "0.30000000"}
    again = errors.from_wire(exc.code, exc.message, exc.details)
    assert isinstance(again, errors.InsufficientAmount) and again.available == 30_000_000
    assert (
        errors.rpc_error(exc) == "ERR_INSUFFICIENT_AMOUNT: bid for 5.00000000 BTC, 0.30000000 left"
    )


def test_every_error_class_has_one_status() -> None:
    """Each code maps to exactly one status through the one table, whatever raises it."""
    classes = {c for c in _subclasses(errors.DomainError) if "code" in c.__dict__}
    for cls in classes:
        assert status_of(cls) in set(STATUS.values()) | {500}, cls
    assert status_of(errors.BidInDoubt) == 502 and status_of(errors.OfferTaken) == 409
    assert status_of(errors.InvalidJson) == 400 and status_of(errors.NotOwner) == 403


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_openapi_summaries_say_what_patch_and_delete_do(tmp_path: Path) -> None:
    config = NodeConfig(port=free_ports(1)[0], grape="http://127.0.0.1:1", data_dir=tmp_path)
    node = Node(config, clock=Clock(), dht=MemoryDht())
    doc = create_app(config, node).test_client().get("/openapi.json").json
    item = doc["paths"]["/offers/{offer_id}"]
    for method in ("patch", "delete"):
        summary = item[method]["summary"]
        assert "offer_not_open" in summary and "chain's open record" not in summary
        assert {"403", "404", "409"} <= set(item[method]["responses"])
    error = doc["components"]["schemas"]["ErrorBody"]["properties"]["details"]
    assert {"type": "object", "additionalProperties": True} in error["anyOf"]
    node.stop()


# -- #11.8 quiet logs ----------------------------------------------------------------------------


def test_expected_client_failures_log_one_line_and_are_counted(caplog) -> None:
    from collections import Counter

    counts: Counter[str] = Counter()
    logger = logging.getLogger("waitress.test-quiet")
    logger.addFilter(ClientFailureFilter(counts))
    with caplog.at_level(logging.INFO, logger="waitress.test-quiet"):
        for exc in (ConnectionResetError(104, "Connection reset by peer"), BrokenPipeError()):
            try:
                raise exc
            except OSError:
                logger.exception("Socket error")  # what waitress does on an aborted upload
        try:
            raise ValueError("a real bug")
        except ValueError:
            logger.exception("Exception while serving /x")
    quiet, loud = caplog.records[:2], caplog.records[2]
    for record in quiet:
        assert record.exc_info is None and record.levelno == logging.INFO
        assert "\n" not in record.getMessage() and "reset" in caplog.text
    assert loud.exc_info is not None  # a bug keeps its traceback
    assert counts == {"ConnectionResetError": 1, "BrokenPipeError": 1}


def test_uploads_aborted_mid_body_never_log_a_traceback(net: Net) -> None:
    node = net.nodes[0]
    host, port = node.url.removeprefix("http://").split(":")
    for sent in (10, 30_000):
        for _ in range(10):
            sock = socket.create_connection((host, int(port)))
            head = "POST /peer/announce HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n"
            sock.sendall(head.encode() + b"[" * sent)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" + bytes(4))
            sock.close()  # a reset, mid-body
    health = net.get(node, "/health")
    assert health["status"] == "ok" and "client_failures" in health["http"]
    assert "Traceback" not in node.log_tail(10_000)


@pytest.mark.parametrize(
    "query",
    [
        "/peer/ledger/{owner}?from=9223372036854775808",  # one past SQLite's integer range
        "/peer/ledger/{owner}?from=-1",
        "/peer/ledger/{owner}?limit=99999999999999999999",
        "/trades?since=9223372036854775808",
        "/events?last_event_id=9223372036854775808",
    ],
)
def test_integers_out_of_range_in_a_query_are_400_not_500(net: Net, query: str) -> None:
    node = net.nodes[0]
    owner = net.http.get(node.url + "/health", timeout=5).json()["client_id"]
    resp = net.http.get(node.url + query.format(owner=owner), timeout=5)
    assert is_project_error(resp, 400, "invalid_input")


def test_bid_batches_answer_every_bid_and_refuse_bad_batches(net: Net) -> None:
    """``POST /peer/bid-batches`` (left out of schemathesis: see test_openapi_conformance):
    one result per bid, in order, each what ``POST /peer/bids`` would answer; a batch that is
    not a list of 1 to 64 bids is 400 as a whole."""
    node = net.nodes[0]
    owner = net.http.get(node.url + "/health", timeout=5).json()["client_id"]
    taker = SigningKey.generate()

    def bid(maker: str) -> dict:
        return make_bid(
            taker,
            offer_id=str(uuid.uuid4()),
            offer_seq=1,
            maker=maker,
            amount=1000,
            price=5_000_000,
            now_ms=int(time.time() * 1000),
        ).to_wire()

    forged = {**bid(owner), "amount": 2000}  # the signature no longer covers it
    batch = [bid(owner), forged, bid(public_hex(SigningKey.generate()))]
    resp = net.http.post(node.url + "/peer/bid-batches", json={"bids": batch}, timeout=10)
    assert resp.status_code == 200, resp.text
    codes = [r["error"]["code"] for r in resp.json()["results"]]
    assert codes == ["not_found", "invalid_signature", "not_owner"]  # an offer we never had
    for body in (
        {"bids": []},
        {"bids": [bid(owner)] * 65},
        {"bids": "all of them"},
        {"bids": [{**bid(owner), "amount": 1.5}]},
        {"bids": [bid(owner)], "more": 1},
    ):
        resp = net.http.post(node.url + "/peer/bid-batches", json=body, timeout=10)
        is_project_error(resp, 400, "invalid_input")
