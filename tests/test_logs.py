"""``--log-format json`` (issue 9.4): JSON lines with request ids, on real grapes and nodes."""

from __future__ import annotations

import io
import json
import logging
import re

import requests
from node_helpers import Net

from p2p_offers import logs
from p2p_offers.node.network.transport import PEER_SERVICE


def json_lines(text: str) -> list[dict]:
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # each one parses
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line), line
    return lines


def test_a_node_and_a_grape_log_json_lines_with_request_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("P2P_OFFERS_LOG", "DEBUG")  # the node logs a line per request at DEBUG
    monkeypatch.setenv("P2P_OFFERS_LOG_FORMAT", "json")  # the grape's format, from the env
    net = Net(tmp_path, grapes=1, nodes=1, node_extra=["--log-format", "json"])
    try:
        (node,) = net.nodes
        given = requests.get(f"{node.url}/health", headers={"X-Request-Id": "ops-test.1"})
        assert given.headers["X-Request-Id"] == "ops-test.1"
        made = requests.get(f"{node.url}/no-such-page")
        assert made.status_code == 404 and re.fullmatch(
            r"[0-9a-f]{32}", made.headers["X-Request-Id"]
        )
        forged = requests.get(f"{node.url}/health", headers={"X-Request-Id": 'x" "level":"ERROR'})
        assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-Id"])  # replaced
        # a Grenache RPC request's rid is its request id
        frame = ["rpc-rid-1", PEER_SERVICE, {"action": "health"}]
        reply = requests.post(f"http://{node.rpc}/", json=frame, timeout=5).json()
        assert reply[0] == "rpc-rid-1" and reply[1] is None
        grape = net.grapes[0]
        put = requests.post(f"{grape.url}/put", json={"data": 5}, headers={"X-Request-Id": "g-1"})
        assert put.headers["X-Request-Id"] == "g-1"
        node_lines = json_lines(node.log_tail(100_000))
        by_id = {line.get("request_id"): line for line in node_lines}
        assert "GET /health 200" in by_id["ops-test.1"]["msg"]
        assert "GET /no-such-page 404" in by_id[made.headers["X-Request-Id"]]["msg"]
        assert by_id[forged.headers["X-Request-Id"]]["logger"] == "p2p_offers.node.http.app"
        assert by_id["rpc-rid-1"]["msg"] == f"{PEER_SERVICE} ok"
        for line in node_lines:  # every line logged for a request carries its id
            if re.match(r"(GET|POST|PATCH|DELETE) /", line["msg"]):
                assert "request_id" in line, line
        assert any(line["msg"].startswith("node ") for line in node_lines)  # start-up lines too
        json_lines(grape.log_tail(100_000))
    finally:
        net.close()


def test_an_exception_and_a_request_id_in_one_json_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("p2p_offers.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    token = logs.REQUEST_ID.set(logs.request_id("abc-1"))
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed: %s", "x\ny")
    finally:
        logs.REQUEST_ID.reset(token)
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()  # newlines in msg and traceback stay escaped
    parsed = json.loads(line)
    assert parsed["request_id"] == "abc-1" and parsed["msg"] == "failed: x\ny"
    assert parsed["level"] == "ERROR" and "ValueError: boom" in parsed["exc"]
    assert logs.request_id("a" * 65) != "a" * 65 and logs.request_id(7) != 7
