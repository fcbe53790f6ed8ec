"""A limit order on one's own node, as a value: what was asked, what became of it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum

from p2p_offers.bids import Bid, Receipt
from p2p_offers.book import Tif
from p2p_offers.node.offers.stp import Stp


class OrderStatus(StrEnum):
    PENDING = "pending"  # still queued or being worked
    FILLED = "filled"  # all of it traded
    PARTIAL = "partial"  # some traded; the rest rests if ``offer_id`` is set, else dropped
    RESTING = "resting"  # none traded, all rests
    CANCELLED = "cancelled"  # none traded, nothing rests


@dataclass
class Order:
    id: str
    side: str
    price: int  # cents per BTC: the limit
    amount: int  # satoshis
    tif: Tif
    created: int
    status: OrderStatus = OrderStatus.PENDING
    fills: list[Receipt] = field(default_factory=list)
    offer_id: str | None = None  # the resting offer a GTC rest was posted as
    in_doubt: list[Bid] = field(default_factory=list)  # sent, unanswered: they may have filled
    stp: Stp | None = None  # for the rest (kept while the order is worked, not stored)
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def filled(self) -> int:
        return sum(r.amount for r in self.fills)

    def close(self) -> None:
        """The order's final status from what it got; a rest counts once it was posted."""
        if self.filled == self.amount:
            self.status = OrderStatus.FILLED
        elif self.fills:
            self.status = OrderStatus.PARTIAL
        else:
            self.status = OrderStatus.RESTING if self.offer_id else OrderStatus.CANCELLED
