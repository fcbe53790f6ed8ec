"""#7.4 the trading CLI (p2p_offers/client) against real node processes.

Most commands run in process through ``p2p_offers.cli.main`` (stdout and
stderr captured); the exit codes are also checked on the installed
``p2p-offers`` script in a subprocess, as a shell sees them.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from node_helpers import Net, wait_until

from p2p_offers.cli import build_parser, main
from p2p_offers.client import cli as client_cli
from p2p_offers.client.render import table
from p2p_offers.cluster import free_ports


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    network = Net(tmp_path_factory.mktemp("net"), grapes=1, nodes=2)
    yield network
    network.close()


def p2p(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _columns(text: str, word: str) -> set[int]:
    """Where ``word``'s column ends on each line that has it: one place if aligned."""
    return {line.index(word) + len(word) for line in text.splitlines() if word in line}


def test_table_aligns_numbers_right_and_text_left() -> None:
    text = table([["ask", "30100.00", "x"], ["bid", "9.50", "longer"]], ["side", "price", "n"])
    assert text.splitlines() == [
        "SIDE     PRICE  N",
        "ask   30100.00  x",
        "bid       9.50  longer",
    ]


def test_place_list_bid_and_trades_from_the_command_line(net: Net, capsys) -> None:
    a, b = net.nodes
    code, out, err = p2p(capsys, "offer", "sell", "30100", "0.5", "--node", a.url)
    assert code == 0 and err == ""
    assert "price_usd:  30100.00" in out and "amount_btc: 0.50000000" in out
    code, out, _ = p2p(capsys, "offer", "sell", "30000.5", "1.25", "--node", a.url, "--json")
    cheap = json.loads(out)
    assert code == 0 and cheap["price_usd"] == "30000.50"
    code, out, _ = p2p(capsys, "offer", "buy", "29000", "0.2", "--node", a.url)
    assert code == 0
    wait_until(lambda: len(net.get(b, "/offers?status=open")["offers"]) >= 3, what="B sees 3")

    code, out, _ = p2p(capsys, "book", "--node", b.url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SIDE", "PRICE_USD", "AMOUNT_BTC", "OFFERS"]
    assert lines[1].split() == ["ask", "30100.00", "0.50000000", "1"]  # highest ask on top
    assert lines[2].split() == ["ask", "30000.50", "1.25000000", "1"]
    assert "spread 1000.50 USD" in lines[3]
    assert lines[4].split() == ["bid", "29000.00", "0.20000000", "1"]
    assert len({line.rindex("0") for line in (lines[1], lines[2], lines[4])}) == 1  # aligned
    code, out, _ = p2p(capsys, "book", "--node", b.url, "--json")
    assert json.loads(out) == net.get(b, "/book")

    code, out, _ = p2p(capsys, "offers", "--node", b.url, "--side", "sell")
    assert code == 0 and cheap["id"] in out and "30000.50" in out
    assert len(_columns(out, "sell")) == 1

    code, out, err = p2p(capsys, "bid", cheap["id"], "0.25", "--node", b.url)
    assert code == 0, err
    assert "filled:    0.25000000 BTC at 30000.50 USD" in out
    wait_until(lambda: net.get(b, "/trades")["trades"], what="the maker's ledger on B")
    code, out, _ = p2p(capsys, "trades", "--mine", "--node", b.url, "--json")
    trades = json.loads(out)["trades"]
    assert [(t["offer_id"], t["amount_btc"]) for t in trades] == [(cheap["id"], "0.25000000")]
    code, out, _ = p2p(capsys, "trades", "--mine", "--node", b.url)
    assert code == 0 and "me" in out.splitlines()[1].split()  # B was the taker

    code, out, _ = p2p(capsys, "order", "buy", "30100", "0.1", "--tif", "ioc", "--node", b.url)
    assert code == 0 and "status:     filled" in out and "30000.50" in out
    order_id = out.split()[1]
    code, out, _ = p2p(capsys, "order", "show", order_id, "--node", b.url, "--json")
    assert json.loads(out)["status"] == "filled"
    code, out, _ = p2p(capsys, "order", "list", "--node", b.url)
    assert order_id in out


def test_api_errors_go_to_stderr_with_code_message_and_fields(net: Net, capsys) -> None:
    a, b = net.nodes
    code, out, err = p2p(capsys, "offer", "sell", "1.001", "-1", "--node", a.url)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: invalid_input: invalid input: price_usd, amount_btc",
        "  price_usd: at most 2 decimal places",
        "  amount_btc: must be greater than 0",
    ]
    offer = net.create(a, "35000", "0.1")
    wait_until(lambda: net.offer(b, offer["id"]), what="B sees it")
    code, _, err = p2p(capsys, "bid", offer["id"], "5", "--node", b.url)
    assert code == 1 and err.startswith("error: insufficient_amount: ")
    assert "  available_btc: 0.10000000" in err.splitlines()
    code, _, err = p2p(capsys, "offer", "cancel", offer["id"], "--node", b.url)
    assert code == 1 and err.startswith("error: not_owner: ")
    code, _, err = p2p(capsys, "offer", "show", "no-such-offer", "--node", b.url)
    assert code == 1 and err.startswith("error: not_found: ")


def test_account_says_what_the_node_answers(net: Net, capsys) -> None:
    a, _ = net.nodes
    direct = requests.get(a.url + "/account", timeout=10)
    code, out, err = p2p(capsys, "account", "--node", a.url)
    if direct.status_code == 404:  # a node without the account view (another helper adds it)
        assert code == 1 and out == ""
        assert err.startswith("error: not_found: this node has no GET /account")
    else:
        assert code == 0 and err == "", err
        code, out, _ = p2p(capsys, "account", "--node", a.url, "--json")
        assert json.loads(out) == direct.json()


def test_usage_errors_exit_2_and_an_unreachable_node_exits_3(capsys) -> None:
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    code, out, err = p2p(capsys, "book", "--node", closed)
    assert (code, out) == (3, "") and err.startswith(f"error: cannot reach the node at {closed}")
    assert p2p(capsys, "book", "--node", "host:notaport")[0] == 2
    assert p2p(capsys, "offer", "show", "../health", "--node", closed)[0] == 2  # not an id
    assert p2p(capsys, "offer", "update", "x", "--node", closed)[0] == 2
    with pytest.raises(SystemExit) as exited:  # argparse: a missing argument
        main(["offer", "sell", "30000"])
    assert exited.value.code == 2


def test_the_installed_script_exits_with_the_documented_codes(net: Net) -> None:
    script = shutil.which("p2p-offers", path=str(Path(sys.executable).parent))
    assert script is not None, "the package's console script is installed with it"
    a, _ = net.nodes
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"

    def rc(*argv: str) -> int:
        return subprocess.run([script, *argv], capture_output=True, timeout=60).returncode

    assert rc("book", "--node", a.url) == 0
    assert rc("bid", "nope", "1", "--node", a.url) == 1
    assert rc("book", "--levels") == 2
    assert rc("book", "--node", closed) == 3


def test_watch_follows_the_book_live(net: Net) -> None:
    a, b = net.nodes
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["watch", "--node", b.url, "--count", "1"])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(client_cli.run(args, out, err)))
    thread.start()
    wait_until(lambda: "SIDE" in out.getvalue() or "empty" in out.getvalue(), what="first draw")
    net.create(a, "41234.56", "0.3")
    thread.join(30)
    assert result == [0], err.getvalue()
    assert any(
        line.split() == ["ask", "41234.56", "0.30000000", "1"]
        for line in out.getvalue().splitlines()
    ), out.getvalue()


def test_watch_json_prints_one_event_per_line(net: Net) -> None:
    a, b = net.nodes
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(["watch", "--node", b.url, "--count", "1", "--json"])
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(client_cli.run(args, out, err)))
    thread.start()
    wait_until(lambda: '"hello"' in out.getvalue(), what="hello")
    offer = net.create(a, "42000", "0.1")
    thread.join(30)
    assert result == [0], err.getvalue()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert events[0]["event"] == "hello"
    assert events[-1]["event"] == "book" and events[-1]["data"]["offer"]["id"] == offer["id"]
