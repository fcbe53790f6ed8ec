"""Our PeerRPC against the real ``grenache-nodejs-http@0.7.13`` and ``grenache-nodejs-link``,
both ways, through one of our grapes: Node's client (request, gzip, map, an error)
against our PeerRPCServer, and our PeerRPCClient against Node's PeerRPCServer.
Skipped, with the reason, when node/npm are absent or npm cannot install them.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from devtools import npm
from p2p_offers.cluster import Cluster, free_ports
from p2p_offers.grenache import PeerRPCClient, PeerRPCServer, RemoteError, ServiceError
from p2p_offers.link import Link

pytestmark = pytest.mark.node_js

NODE_CLIENT = r"""
const Link = require('grenache-nodejs-link')
const { PeerRPCClient } = require('grenache-nodejs-http')
const grape = process.argv[2]
const link = new Link({ grape })
link.start()
const peer = new PeerRPCClient(link, {})
peer.init()
const call = (fn) => new Promise((resolve) => fn((err, data) => resolve(
  err ? { err: err.message } : { data })))

async function main () {
  const out = {}
  out.request = await call(cb => peer.request('interop:py', { n: 1, s: 'ünï' },
    { timeout: 5000 }, cb))
  out.gzip = await call(cb => peer.request('interop:py', 'z'.repeat(20000),
    { timeout: 5000, compress: true }, cb))
  out.map = await call(cb => peer.map('interop:py', 'all', { timeout: 5000 }, cb))
  out.limited = await call(cb => peer.map('interop:py', 'one', { timeout: 5000, limit: 1 }, cb))
  out.error = await call(cb => peer.request('interop:py:fail', null, { timeout: 5000 }, cb))
  console.log(JSON.stringify(out))
  peer.stop()
  link.stop()
}
main().catch((err) => { console.error(err); process.exit(1) })
"""

NODE_SERVER = r"""
const Link = require('grenache-nodejs-link')
const { PeerRPCServer } = require('grenache-nodejs-http')
const [grape, port] = process.argv.slice(2)
const link = new Link({ grape })
link.start()
const peer = new PeerRPCServer(link, { timeout: 300000 })
peer.init()
const service = peer.transport('server')
service.listen(Number(port))
service.on('request', (rid, key, payload, handler) => {
  if (key === 'interop:node:fail') return handler.reply(new Error('ERR_NODE_FAIL: nope'))
  handler.reply(null, { from: 'node', key, payload })
})
let told = false
const announce = () => {
  let left = 2
  const done = (err) => {
    if (err) console.error(err)
    if (--left === 0 && !told) { told = true; console.log('ready') }
  }
  link.announce('interop:node', service.port, {}, done)
  link.announce('interop:node:fail', service.port, {}, done)
}
announce()
setInterval(announce, 1000)
"""


@pytest.fixture(scope="module")
def node_modules() -> None:
    if not npm.node_available():
        pytest.skip("node and npm are not installed: cannot run grenache-nodejs-http")
    for spec in (npm.LINK, npm.HTTP):
        try:
            npm.install(spec)
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"npm could not install {spec}: {exc}")


@pytest.fixture
def grape(tmp_path) -> Any:
    dht, api = free_ports(1), free_ports(1)
    with Cluster(tmp_path / "cluster") as cluster:
        proc = cluster.grape(dht[0], api[0])
        cluster.wait_ready([proc])
        yield proc.url


def test_node_client_against_our_server(node_modules, grape, tmp_path):
    link = Link(grape)
    servers = []
    for _ in range(2):
        server = PeerRPCServer(workers=2)
        server.handle(
            "interop:py", lambda p, s=server: {"from": "python", "port": s.port, "got": p}
        )
        server.handle("interop:py:fail", _refuse)
        server.listen(0, "127.0.0.1")
        server.announce(link)
        servers.append(server)
    try:
        script = tmp_path / "client.js"
        script.write_text(NODE_CLIENT)
        run = subprocess.run(
            ["node", str(script), grape],
            capture_output=True,
            text=True,
            timeout=60,
            env=npm.node_env(),
        )
    finally:
        for server in servers:
            server.stop()
        link.close()
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    ports = sorted(s.port for s in servers)
    assert out["request"]["data"]["got"] == {"n": 1, "s": "ünï"}
    assert out["request"]["data"]["port"] in ports
    assert out["gzip"]["data"]["got"] == "z" * 20000
    assert sorted(r["port"] for r in out["map"]["data"]) == ports
    assert [r["got"] for r in out["map"]["data"]] == ["all", "all"]
    assert len(out["limited"]["data"]) == 1
    assert out["error"] == {"err": "ERR_PY_FAIL: refused by python"}


def _refuse(payload: Any) -> Any:
    raise ServiceError("ERR_PY_FAIL: refused by python")


def test_our_client_against_node_server(node_modules, grape, tmp_path):
    script = tmp_path / "server.js"
    script.write_text(NODE_SERVER)
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        ["node", str(script), grape, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=npm.node_env(),
    )
    link = Link(grape)
    client = PeerRPCClient(link)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        address = f"127.0.0.1:{port}"
        assert client.lookup("interop:node") == [address]
        reply = client.request("interop:node", {"n": 2, "s": "ünï"}, timeout=5)
        assert reply == {"from": "node", "key": "interop:node", "payload": {"n": 2, "s": "ünï"}}
        big = client.request("interop:node", "y" * 20000, timeout=5, compress=True)
        assert big["payload"] == "y" * 20000
        assert client.map("interop:node", "m", timeout=5) == [
            {"from": "node", "key": "interop:node", "payload": "m"}
        ]
        with pytest.raises(RemoteError) as info:
            client.request("interop:node:fail", None, timeout=5)
        assert (info.value.code, info.value.detail) == ("ERR_NODE_FAIL", "nope")
    finally:
        client.close()
        link.close()
        proc.terminate()
        proc.wait(10)
