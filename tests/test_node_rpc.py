"""Nodes as Grenache RPC servers (SPEC §8) on a real network: our PeerRPCClient, raw frames,
and Node's own grenache-nodejs-http client running the issue's walk-through."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import requests
from node_helpers import Net, wait_until

from devtools import npm
from p2p_offers.grenache import PeerRPCClient, RemoteError
from p2p_offers.link import Link

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    net = Net(tmp_path_factory.mktemp("rpc"), grapes=1, nodes=3)
    net.guarded = net.add_node(extra=["--api-token", TOKEN])
    link = Link(net.grapes[0].url)
    net.rpc = PeerRPCClient(link)
    yield net
    net.rpc.close()
    link.close()
    net.close()


def owner(net: Net, proc: Any) -> str:
    return f"p2p_offers:owner:{net.ids[proc.url]}"


def call(net: Net, proc: Any, action: str, **args: Any) -> Any:
    return net.rpc.request(owner(net, proc), {"action": action, "args": [args]}, timeout=30)


def error_of(net: Net, proc: Any, payload: Any) -> RemoteError:
    with pytest.raises(RemoteError) as info:
        net.rpc.request(owner(net, proc), payload, timeout=30)
    return info.value


def test_every_node_answers_under_both_names_on_its_rpc_port(net):
    every = net.rpc.map("p2p_offers:node", {"action": "health", "args": [{}]}, timeout=30)
    assert sorted(h["client_id"] for h in every) == sorted(net.ids.values())
    for proc in net.nodes:
        assert net.rpc.lookup(owner(net, proc)) == [proc.rpc]
        health = call(net, proc, "health")
        rest = net.get(proc, "/health")
        assert health["client_id"] == rest["client_id"] and health.keys() == rest.keys()
        assert f"127.0.0.1:{rest['rpc_port']}" == proc.rpc


def test_actions_answer_exactly_what_rest_does(net):
    a, b = net.nodes[0], net.nodes[1]
    created = call(net, a, "createOffer", side="sell", price_usd="31000.00", amount_btc="0.5")
    assert created["status"] == "open" and created["owner"] == net.ids[a.url]
    assert call(net, a, "getOffer", id=created["id"]) == net.get(a, f"/offers/{created['id']}")
    assert call(net, a, "listOffers", owner=net.ids[a.url]) == net.get(
        a, f"/offers?owner={net.ids[a.url]}"
    )
    assert call(net, a, "getBook") == net.get(a, "/book")
    updated = call(net, a, "updateOffer", id=created["id"], price_usd="31500.00")
    assert updated["price_usd"] == "31500.00"
    wait_until(  # the updated version (b may list the first one already)
        lambda: any(
            o["id"] == updated["id"] and o["seq"] == updated["seq"]
            for o in call(net, b, "listOffers")["offers"]
        ),
        what="the update to reach b",
    )
    receipt = call(net, b, "placeBid", offer_id=updated["id"], amount_btc="0.2")
    assert (receipt["amount_btc"], receipt["price_usd"]) == ("0.20000000", "31500.00")
    assert (receipt["maker"], receipt["taker"]) == (net.ids[a.url], net.ids[b.url])
    rest = call(net, a, "getOffer", id=receipt["remainder"])
    cancelled = call(net, a, "cancelOffer", id=rest["id"])
    assert cancelled["status"] == "cancelled"
    order = call(net, b, "placeOrder", side="buy", price_usd="100.00", amount_btc="0.1")
    assert order["status"] == "resting"
    assert call(net, b, "getOrder", id=order["id"]) == net.get(b, f"/orders/{order['id']}")
    assert call(net, b, "listTrades") == net.get(b, "/trades")
    assert call(net, b, "verifyLedger") == net.get(b, "/ledger/verify")
    assert call(net, b, "getAccount") == net.get(b, "/account")
    # manual offers: a's bid list, accepted from b's bid, over RPC as over REST (#9.1)
    manual = call(
        net, a, "createOffer", side="sell", price_usd="32000.00", amount_btc="1", accept="manual"
    )
    wait_until(lambda: net.offer(b, manual["id"]), what="the manual offer on b")
    pending = call(net, b, "placeBid", offer_id=manual["id"], amount_btc="0.1")
    assert pending["status"] == "pending"
    bids = call(net, a, "listBids", offer_id=manual["id"])
    assert bids == net.get(a, f"/offers/{manual['id']}/bids")
    filled = call(net, a, "acceptBid", offer_id=manual["id"], bid_id=pending["bid_id"])
    assert (filled["bid_id"], filled["amount_btc"]) == (pending["bid_id"], "0.10000000")
    # b's own fill is in a's feed: compare once b has replicated it (both reads see it then)
    wait_until(lambda: net.get(b, "/trades?taker=me")["trades"], what="a's feed on b")
    assert call(net, b, "listTrades", taker="me") == net.get(b, "/trades?taker=me")


def test_errors_are_the_rest_codes(net):
    a = net.nodes[0]
    err = error_of(net, a, {"action": "getOffer", "args": [{"id": "nope"}]})
    assert err.code == "ERR_NOT_FOUND" and err.data["error"]["code"] == "not_found"
    err = error_of(net, a, {"action": "createOffer", "args": [{"side": "sell"}]})
    assert err.code == "ERR_INVALID_INPUT"
    fields = {f["field"] for f in err.data["error"]["details"]["fields"]}
    assert fields == {"price_usd", "amount_btc"}
    err = error_of(
        net,
        a,
        {"action": "placeBid", "args": [{"offer_id": "x", "amount_btc": "1", "extra": 1}]},
    )
    assert err.code == "ERR_INVALID_INPUT"
    assert error_of(net, a, {"action": "dance"}).code == "ERR_NOT_FOUND"
    assert error_of(net, a, {"action": "peerBid", "args": [{}]}).code == "ERR_NOT_FOUND"
    assert error_of(net, a, ["not", "an", "object"]).code == "ERR_INVALID_INPUT"
    assert error_of(net, a, {"action": "health", "args": {"x": 1}}).code == "ERR_INVALID_INPUT"
    assert error_of(net, a, {"action": "health", "args": [{"x": 1}]}).code == "ERR_INVALID_INPUT"
    assert error_of(net, a, {"action": "getOffer", "args": [{"id": 5}]}).code == "ERR_INVALID_INPUT"


def test_control_actions_need_the_token_when_the_node_has_one(net):
    g = net.guarded
    create = {"side": "buy", "price_usd": "10.00", "amount_btc": "0.01"}
    assert error_of(net, g, {"action": "createOffer", "args": [create]}).code == "ERR_UNAUTHORIZED"
    wrong = {**create, "token": "guess"}
    assert error_of(net, g, {"action": "createOffer", "args": [wrong]}).code == "ERR_UNAUTHORIZED"
    assert call(net, g, "createOffer", token=TOKEN, **create)["side"] == "buy"
    assert call(net, g, "getBook")["bids"]  # reading needs no token


def test_bad_frames_to_a_node_get_error_frames(net):
    url = f"http://{net.nodes[0].rpc}/"
    resp = requests.post(url, data=b"{not json", timeout=10)
    assert resp.status_code == 400 and resp.json()[1].startswith("ERR_INVALID_JSON")
    resp = requests.post(url, data=b'["r1", "p2p_offers:elsewhere", {}]', timeout=10)
    assert resp.json()[:2] == ["r1", "ERR_NOT_FOUND: no service 'p2p_offers:elsewhere' here"]
    resp = requests.post(url, data=b"[" + b" " * 70_000 + b"]", timeout=10)
    assert resp.status_code == 413


NODE_WALKTHROUGH = r"""
// The issue's "Done when", with grenache-nodejs-link and grenache-nodejs-http only.
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')
const [grape, maker, taker, nodes] = process.argv.slice(2)
const link = new Link({ grape })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()
const rpc = (fn, ...a) => new Promise((resolve, reject) => peer[fn](...a, { timeout: 20000 },
  (err, data) => err ? reject(err) : resolve(data)))
const sleep = (ms) => new Promise(resolve => setTimeout(resolve, ms))

async function main () {
  const offer = await rpc('request', `p2p_offers:owner:${maker}`,
    { action: 'createOffer', args: [{ side: 'sell', price_usd: '29000.00', amount_btc: '0.25' }] })
  let books = []
  for (let i = 0; i < 200; i++) {
    books = await rpc('map', 'p2p_offers:node', { action: 'getBook', args: [{}] })
    const seen = books.filter(b => b.asks.some(l => l.price_usd === '29000.00'))
    if (books.length === Number(nodes) && seen.length === books.length) break
    await sleep(50)
  }
  const receipt = await rpc('request', `p2p_offers:owner:${taker}`,
    { action: 'placeBid', args: [{ offer_id: offer.id, amount_btc: '0.1' }] })
  let missing = null
  try {
    await rpc('request', 'p2p_offers:node', { action: 'getOffer', args: [{ id: 'none' }] })
  } catch (err) { missing = err.message }
  console.log(JSON.stringify({ offer, books, receipt, missing }))
  peer.stop()
  link.stop()
}
main().catch((err) => { console.error(err); process.exit(1) })
"""


@pytest.mark.node_js
def test_node_grenache_client_walkthrough(net, tmp_path):
    if not npm.node_available():
        pytest.skip("node and npm are not installed: cannot run grenache-nodejs-http")
    for spec in (npm.LINK, npm.HTTP):
        try:
            npm.install(spec)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"npm could not install {spec}: {exc}")
    script = tmp_path / "walkthrough.js"
    script.write_text(NODE_WALKTHROUGH)
    maker, taker = net.nodes[1], net.nodes[2]
    everyone = len(net.ids)
    argv = [net.grapes[0].url, net.ids[maker.url], net.ids[taker.url], str(everyone)]
    run = subprocess.run(
        ["node", str(script), *argv],
        capture_output=True,
        text=True,
        timeout=90,
        env=npm.node_env(),
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["offer"]["owner"] == net.ids[maker.url]
    assert len(out["books"]) == everyone
    assert all(any(lv["price_usd"] == "29000.00" for lv in b["asks"]) for b in out["books"])
    receipt = out["receipt"]
    assert (receipt["offer_id"], receipt["amount_btc"]) == (out["offer"]["id"], "0.10000000")
    assert (receipt["maker"], receipt["taker"]) == (net.ids[maker.url], net.ids[taker.url])
    assert out["missing"].startswith("ERR_NOT_FOUND: unknown offer none")


def test_a_rest_port_with_no_room_for_the_default_rpc_port_is_refused(capsys):
    from p2p_offers.cli import main

    with pytest.raises(SystemExit) as info:
        main(["node", "--port", "65000", "--grape", "http://127.0.0.1:1", "--data-dir", "x"])
    assert info.value.code == 2
    assert "give --rpc-port" in capsys.readouterr().err
