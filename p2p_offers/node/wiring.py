"""Builds a node's parts and connects them: every hook of the node is in ``connect``, here.

``build`` creates the parts in dependency order (storage, network, offers,
ledger, trading) and gives each the others it calls; nothing patches another
part in a constructor. ``connect`` is the one block where a part's signal is
wired to another's reaction, so what reacts to what is read in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2p_offers.gossip.mesh import MeshParams
from p2p_offers.link import Link
from p2p_offers.node.http.events import EventHub
from p2p_offers.node.ledger.head import LEDGER_SALT
from p2p_offers.node.ledger.replicator import FeedReplicator
from p2p_offers.node.ledger.store import LedgerStore
from p2p_offers.node.metrics import NodeMetrics, TimedTransport
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.dht import Dht
from p2p_offers.node.network.gossip import GossipNet
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.intake import Intake
from p2p_offers.node.network.limits import PushLimiter
from p2p_offers.node.network.peers import Peers
from p2p_offers.node.network.publisher import Publisher
from p2p_offers.node.network.sync import Syncer
from p2p_offers.node.network.transport import (
    REST_SERVICES,
    GrenacheTransport,
    HttpTransport,
    PeerTransport,
)
from p2p_offers.node.offers.maker import OfferService
from p2p_offers.node.offers.taker import Taker
from p2p_offers.node.storage.database import Database
from p2p_offers.node.storage.envelope_marks import EnvelopeMarks
from p2p_offers.node.storage.in_doubt import BidsInDoubt
from p2p_offers.node.storage.ledger import LedgerRows
from p2p_offers.node.storage.orders import Orders
from p2p_offers.node.storage.own_offers import OwnOffers
from p2p_offers.node.storage.pending import ManualBids
from p2p_offers.node.storage.receipts import Receipts
from p2p_offers.node.storage.refusals import Refusals
from p2p_offers.node.storage.seen import Seen
from p2p_offers.node.trading.desk import OrderDesk
from p2p_offers.node.trading.sweeper import Sweeper
from p2p_offers.node.trading.uncross import Uncrosser
from p2p_offers.signing import load_or_create_key, public_hex

if TYPE_CHECKING:
    from p2p_offers.node.runtime import Node


def build(node: Node, dht: Dht | None, transport: PeerTransport | None) -> None:
    """Give ``node`` its parts (``node.config`` and ``node.clock`` are set)."""
    config, clock = node.config, node.clock
    node.key = key = load_or_create_key(config.data_dir / "key")
    node.client_id = me = public_hex(key)
    # storage: one database, a repository per aggregate
    node.db = db = Database(config.data_dir / "node.sqlite3")
    node.own_offers = OwnOffers(db)
    node.receipts = Receipts(db)
    node.refusals = Refusals(db)
    node.seen = Seen(db)
    node.in_doubt = BidsInDoubt(db)
    node.manual_bids = ManualBids(db)
    node.orders = Orders(db)
    node.ledger_rows = LedgerRows(db)
    # the network: the DHT, other nodes, what they tell us and what we tell them
    node.metrics = metrics = NodeMetrics()  # GET /metrics; DHT and peer calls timed
    node.dht = dht if dht is not None else Link(config.grape, observe=metrics.dht)
    if transport is None:  # a peer is reached on its Grenache RPC port, or (rest) on REST
        transport = HttpTransport() if config.peer_transport == "rest" else GrenacheTransport()
    services = getattr(transport, "services", REST_SERVICES)  # test fakes speak REST
    node.peer_client = PeerClient(TimedTransport(transport, metrics))
    node.index = OfferIndex(clock, config.closed_keep_s)
    node.intake = Intake(
        node.index,
        node.dht,
        me,
        clock,
        max_open_per_owner=config.max_offers_per_owner,
        pushes=PushLimiter(config.push_rate, config.push_burst),
    )
    node.peers = Peers(node.dht, node.peer_client, me, services=services)
    node.gossip = GossipNet(
        key,
        node.peers,
        node.peer_client,
        node.intake,
        node.index,
        round_s=config.sync_interval_s,
        params=MeshParams(*config.gossip_mesh),
        marks=EnvelopeMarks(db),
    )
    node.publisher = Publisher(
        node.dht,
        node.peers,
        node.peer_client,
        node.own_offers.mark_published,
        gossip=node.gossip if config.propagation == "gossip" else None,
    )
    node.syncer = Syncer(node.peers, node.peer_client, node.intake, node.index)
    # offers: ours (maker) and others' (taker)
    node.maker = OfferService(
        key,
        db,
        node.own_offers,
        node.receipts,
        node.refusals,
        node.index,
        node.publisher,
        clock,
        config.offer_ttl_s * 1000,
        node.manual_bids,
    )
    node.taker = Taker(
        key,
        node.index,
        node.peers,
        node.peer_client,
        node.receipts,
        node.in_doubt,
        clock,
        node.manual_bids,
    )
    # the ledger
    node.ledger = LedgerStore(node.ledger_rows, key)
    node.replicator = FeedReplicator(
        node.ledger_rows, key, node.peers, node.peer_client, node.publisher
    )
    # trading: the one taker worker, orders and uncrossing on it
    node.sweeper = Sweeper(me, node.index, node.taker)
    # Half the server threads may wait for the worker; the rest stay free for peers.
    node.desk = OrderDesk(node.orders, node.maker, node.sweeper, clock, max(1, config.threads // 2))
    node.uncrosser = Uncrosser(me, node.index, node.maker, node.sweeper, node.desk)
    # what GET /events tells: each stream holds a server thread, so at most half of them
    node.events = EventHub(max(0, min(config.events_clients, config.threads // 2)))
    metrics.watch(node)  # the rest of /metrics is read from the parts' counts when scraped
    connect(node)


def connect(node: Node) -> None:
    """Every hook of the node, in one block."""
    # a fill's ledger entry is written inside the fill's transaction ...
    node.maker.recording_fills.connect(node.ledger.append_own)
    # ... and once it commits, the new head is published
    node.ledger.appended.connect(node.replicator.publish_head)
    # a trade stored in the ledger keeps its offer's side, as far as the book knows it
    node.ledger_rows.side_of = node.index.side_of
    # records under salt "ledger" are ledger heads, judged by the replicator
    node.intake.handle_salt(LEDGER_SALT, node.replicator.receive_head)
    # a foreign open offer, or a rest we posted, may cross one of ours
    node.intake.applied.connect(node.uncrosser.on_applied)
    node.desk.rested.connect(node.uncrosser.poke)
    # a node syncing from us from the start may be new: look up the others again
    node.syncer.starting.connect(node.peers.invalidate)
    # a bid in doubt settled: its order learns the outcome; a new one wakes the resolver
    node.taker.resolved.connect(node.desk.doubt_resolved)
    node.taker.doubted.connect(node.wake_resolver)
    # the event stream: book changes (under the index lock, in order), our fills, trades
    node.index.changed.connect(node.events.on_book)
    node.maker.recording_fills.connect(node.events.on_maker_fills)
    node.taker.filled.connect(node.events.on_taker_fill)
    node.manual_bids.changed.connect(node.events.on_bid)
    node.ledger.recorded.connect(node.events.on_entries)
    node.replicator.pulled.connect(node.events.on_entries)
