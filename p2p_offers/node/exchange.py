"""The exchange layer of a node: orders, uncrossing and the replicated trade ledger, wired once.

``Node`` builds one ``Exchange`` next to its offer service and starts and stops
it with itself. Building it creates tables and registers hooks (the ledger
append inside the fill transaction, the intake's handler for ledger heads and
its listener for foreign offers) and starts no thread, like the rest of the
node, so in-process tests can drive it synchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
from nacl.signing import SigningKey

from p2p_offers.node.config import NodeConfig
from p2p_offers.node.feeds import LEDGER_SALT, FeedReplicator, LedgerStore
from p2p_offers.node.index import OfferIndex
from p2p_offers.node.intake import Intake
from p2p_offers.node.orders import OrderDesk, Sweeper
from p2p_offers.node.peers import Peers
from p2p_offers.node.publisher import Publisher
from p2p_offers.node.service import OfferService
from p2p_offers.node.store import Store
from p2p_offers.node.taker import Taker
from p2p_offers.node.uncross import Uncrosser
from p2p_offers.signing import public_hex


class Exchange:
    def __init__(
        self,
        *,
        config: NodeConfig,
        key: SigningKey,
        store: Store,
        index: OfferIndex,
        intake: Intake,
        peers: Peers,
        publisher: Publisher,
        service: OfferService,
        taker: Taker,
        session: requests.Session,
        clock: Callable[[], int],
    ) -> None:
        me = public_hex(key)
        self.config = config
        self.ledger = LedgerStore(store, key)
        self.feeds = FeedReplicator(self.ledger, key, peers, session, publisher)
        self.sweeper = Sweeper(me, index, taker)
        # Half the server threads may wait for the worker; the rest stay free for peers.
        self.orders = OrderDesk(store, service, self.sweeper, clock, max(1, config.threads // 2))
        self.uncrosser = Uncrosser(me, index, service, self.sweeper, self.orders)
        self.orders.rested.append(self.uncrosser.poke)
        intake.salt_handlers[LEDGER_SALT] = self.feeds.receive_head
        intake.on_applied.append(self.uncrosser.on_applied)

    def start(self) -> None:
        self.orders.start()
        self.feeds.start(self.config.sync_interval_s)
        self.uncrosser.start()

    def stop(self) -> None:
        self.uncrosser.stop()
        self.orders.stop()
        self.feeds.stop()

    def health(self) -> dict[str, Any]:
        feeds = self.ledger.states()
        return {
            "orders": self.orders.stats(),
            "taking": self.sweeper.stats(),
            "uncross": self.uncrosser.stats(),
            "ledger": {
                "feeds": len(feeds),
                "entries": sum(f.height for f in feeds),
                **self.feeds.stats(),
            },
        }
