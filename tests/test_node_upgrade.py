"""A data dir written by the node before the schema had a version opens with nothing lost.

``tests/data/node-v0`` was written by a real network on main before issue #12
(see its README); ``manifest.json`` is what that node's REST API said before it
stopped. The copy is opened by today's node (on an in-memory DHT, its clock at
the moment the old node stopped), which migrates it in place.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from fakes import MemoryDht
from node_helpers import Clock

from p2p_offers.cluster import free_ports
from p2p_offers.node.config import NodeConfig
from p2p_offers.node.http.app import create_app
from p2p_offers.node.runtime import Node
from p2p_offers.node.storage import schema
from p2p_offers.node.storage.receipts import Role

FIXTURE = Path(__file__).parent / "data" / "node-v0"
MANIFEST = json.loads((FIXTURE / "manifest.json").read_text())


@pytest.fixture
def upgraded(tmp_path):
    data = tmp_path / "node"
    shutil.copytree(FIXTURE, data)
    config = NodeConfig(port=free_ports(1)[0], grape="http://127.0.0.1:1", data_dir=data)
    node = Node(config, clock=Clock(MANIFEST["stopped_ms"]), dht=MemoryDht())
    yield node, create_app(config, node).test_client(), data
    node.stop()


def v0_rows(sql: str) -> list[tuple]:
    db = sqlite3.connect(f"file:{FIXTURE / 'node.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_the_schema_is_migrated_to_the_current_version(upgraded) -> None:
    node, _, data = upgraded
    assert node.db.version() == schema.VERSION
    db = sqlite3.connect(data / "node.sqlite3")
    columns = {r[1] for r in db.execute("PRAGMA table_info(orders)")}
    assert "doc" not in columns and {"state", "side", "price", "amount", "tif"} <= columns
    assert v0_rows("PRAGMA user_version") == [(0,)]  # the fixture itself is untouched
    # v5: each own offer's expiry, from its newest version
    expiry = dict(db.execute("SELECT id, expires FROM own_offers"))
    db.close()
    assert expiry and all(expiry[i] == node.maker.own(i).offer.expires for i in expiry)


def test_the_key_and_every_own_offer_version_survive(upgraded) -> None:
    node, client, _ = upgraded
    assert node.client_id == MANIFEST["a"]
    for offer_id, before in MANIFEST["a_own_offers"].items():
        after = client.get(f"/offers/{offer_id}").json
        fills = after.pop("fills")  # new since v0 (#10.3): the fills the record made
        # new since v0 (#9.1): records signed without them are auto, with no minimum
        assert (after.pop("accept"), after.pop("min_amount_btc")) == ("auto", None)
        assert after == before, offer_id  # every field, and every version in the history
        if before["fill"] is not None:
            assert before["fill"]["bid_id"] in {f["bid_id"] for f in fills}
    versions = v0_rows("SELECT id, seq, record FROM own_versions")
    for offer_id, seq, record in versions:
        assert [s.record.to_json() for s in node.maker.history(offer_id) if s.seq == seq] == [
            json.loads(record)
        ]
    # a seq is never signed twice: the next version of an open record follows the newest
    open_id = next(i for i, o in MANIFEST["a_own_offers"].items() if o["status"] == "open")
    node.maker.load()
    changed = node.maker.update(open_id, None, 1_000)
    assert changed.seq == MANIFEST["a_own_offers"][open_id]["seq"] + 1


def test_receipts_in_both_roles_survive(upgraded) -> None:
    node, _, _ = upgraded
    made = {f.receipt.fill_id for f in node.receipts.all(Role.MAKER)}
    took = {f.receipt.fill_id for f in node.receipts.all(Role.TAKER)}
    assert made == set(MANIFEST["receipts"]["a_maker"])
    assert took == set(MANIFEST["receipts"]["a_taker"])
    for fill in node.receipts.all():
        fill.receipt.verify()
        fill.bid.verify()


def test_orders_with_their_fills_rests_and_bids_in_doubt_survive(upgraded) -> None:
    node, client, _ = upgraded
    listed = client.get("/orders").json["orders"]
    assert [o["id"] for o in listed] == [o["id"] for o in MANIFEST["a_orders"]]
    for before, after in zip(MANIFEST["a_orders"], listed, strict=True):
        assert {k: v for k, v in after.items() if k != "offer"} == {
            k: v for k, v in before.items() if k != "offer"
        }
        assert (after["offer"] or {}).get("id") == (before["offer"] or {}).get("id")
    doubted = MANIFEST["in_doubt_bid"]["bid_id"]
    assert [o.id for o in node.orders.holding(doubted)] == [MANIFEST["orders"]["in_doubt"]]
    assert node.orders.pending() == []


def test_the_ledger_and_the_bid_in_doubt_and_seen_floors_survive(upgraded) -> None:
    node, client, _ = upgraded
    feeds = client.get("/peer/ledger").json["feeds"]
    assert sorted(feeds, key=lambda f: f["owner"]) == sorted(
        MANIFEST["a_ledger"], key=lambda f: f["owner"]
    )
    assert client.get("/trades").json["trades"] == MANIFEST["a_trades"]
    assert client.get("/ledger/verify").json["ok"] is True
    assert [b.bid_id for b in node.taker.in_doubt()] == [MANIFEST["in_doubt_bid"]["bid_id"]]
    floors = node.seen.load(0)
    assert sorted(floors) == sorted(v0_rows("SELECT id, owner, seq, expires FROM seen"))
    assert {f[1] for f in floors} == {MANIFEST["b"]}


def test_a_migrated_file_opens_again_unchanged(upgraded, tmp_path) -> None:
    node, client, data = upgraded
    before = client.get("/orders").json
    node.stop()
    config = NodeConfig(port=free_ports(1)[0], grape="http://127.0.0.1:1", data_dir=data)
    again = Node(config, clock=Clock(MANIFEST["stopped_ms"]), dht=MemoryDht())
    try:
        assert again.db.version() == schema.VERSION
        assert create_app(config, again).test_client().get("/orders").json == before
    finally:
        again.stop()
