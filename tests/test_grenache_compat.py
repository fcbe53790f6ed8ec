"""Grenache's own Node.js client (grenache-nodejs-link@1.0.2) against our grapes.

The mutable record is signed by Node's built-in Ed25519 over the BEP44 buffer
built in JavaScript, so this also checks our BEP44 bytes against an independent
implementation. Skipped, with the reason, when node/npm are absent or npm cannot
install the package.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from devtools import npm as grenache
from p2p_offers import records
from p2p_offers.cluster import Cluster, free_ports
from p2p_offers.records import Record

pytestmark = pytest.mark.node_js

SCRIPT = r"""
const crypto = require('crypto')
const Link = require('grenache-nodejs-link')
const [grapeA, grapeB] = process.argv.slice(2)
const call = (fn) => new Promise((resolve, reject) => {
  fn((err, data) => err ? reject(err) : resolve(data))
})

async function main () {
  const a = new Link({ grape: grapeA }).start()
  const b = new Link({ grape: grapeB }).start()
  const announced = await call(cb => a.announce('compat:svc', 5555, {}, cb))
  const peers = await call(cb => b.lookup('compat:svc', cb))
  const hash = await call(cb => a.put({ v: 'hello from node' }, cb))
  const got = await call(cb => b.get(hash, cb))

  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519')
  const k = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url').toString('hex')
  const salt = 'compat-salt'
  const signed = (v, seq) => crypto.sign(null, Buffer.from(
    `4:salt${Buffer.byteLength(salt)}:${salt}3:seqi${seq}e1:v${Buffer.byteLength(v)}:${v}`
  ), privateKey).toString('hex')
  const v = '{"n":1,"note":"ünï"}'
  const mhash = await call(cb => a.put({ v, k, sig: signed(v, 1), seq: 1, salt }, cb))
  const mgot = await call(cb => b.get(mhash, cb))
  let forged = null
  try {
    await call(cb => a.put({ v: 'forged', k, sig: signed(v, 2), seq: 2, salt }, cb))
  } catch (err) {
    forged = { message: err.message, code: err.code }
  }
  console.log(JSON.stringify({ announced, peers, hash, got, k, mhash, mgot, forged }))
  a.stop()
  b.stop()
}
main().catch((err) => { console.error(err); process.exit(1) })
"""


@pytest.fixture(scope="module")
def link_package() -> str:
    if not grenache.node_available():
        pytest.skip("node and npm are not installed: cannot run Grenache's Node.js client")
    try:
        return str(grenache.install(grenache.LINK))
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"npm could not install {grenache.LINK}: {exc}")


def test_grenache_nodejs_link_against_our_grapes(link_package, tmp_path):
    dht, api = free_ports(3), free_ports(3)
    with Cluster(tmp_path / "cluster") as cluster:
        procs = [cluster.grape(dht[i], api[i], [p for p in dht if p != dht[i]]) for i in range(3)]
        cluster.wait_ready(procs)
        script = tmp_path / "compat.js"
        script.write_text(SCRIPT)
        env = dict(os.environ, NODE_PATH=str(grenache.CACHE / "node_modules"))
        run = subprocess.run(
            ["node", str(script), procs[0].url, procs[1].url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["announced"] == 3
    assert out["peers"] == ["127.0.0.1:5555"]
    assert out["hash"] == records.immutable_target(b"hello from node").hex()
    assert out["got"]["v"] == "hello from node"
    assert out["mhash"] == records.mutable_target(bytes.fromhex(out["k"]), b"compat-salt").hex()
    record = Record.from_json(out["mgot"])
    record.verify()  # Node's signature over Node's BEP44 buffer verifies in Python
    assert (record.seq, record.v.decode(), record.hash) == (1, '{"n":1,"note":"ünï"}', out["mhash"])
    assert out["forged"]["code"] == 400
    assert out["forged"]["message"].startswith("ERR_INVALID_SIGNATURE")
