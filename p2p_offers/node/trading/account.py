"""A trader's own account, from what this node knows for sure: its open offers and its receipts.

Integers only: satoshis, and USD in units of 1e-10 (satoshis times cents per BTC: the exact value
of an amount at a price, which is rarely a whole number of cents). The edge formats them.

Positions come from the receipts this node holds in both roles (the owner's signed word for
each fill: as the maker, on our offers; as the taker, our bids, direct ones and those of
orders and uncrossing), each with our side in the trade. A receipt stored before sides were
recorded gets it from our offer (as maker) or the offer we bid on (as taker) if still known;
one whose side cannot be told is counted in ``unknown_side`` and left out of the position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from p2p_offers.book import SIDES, opposite
from p2p_offers.node.storage.receipts import Role, StoredFill
from p2p_offers.offers import SignedOffer


def value(sats: int, cents_per_btc: int) -> int:
    """USD times 1e10 of ``sats`` at ``cents_per_btc``: exact."""
    return sats * cents_per_btc


@dataclass
class Exposure:
    count: int = 0
    sats: int = 0
    usd_e10: int = 0


@dataclass
class Account:
    open_offers: list[SignedOffer]
    exposure: dict[str, Exposure]
    maker: list[StoredFill]
    taker: list[StoredFill]
    btc_sats: int = 0  # net: bought minus sold
    usd_e10: int = 0  # net: received minus paid
    unknown_side: int = 0
    sides: dict[str, str] = field(default_factory=dict)  # fill_id -> our side, as used


def account(
    open_offers: Iterable[SignedOffer],
    fills: Iterable[StoredFill],
    side_of_offer: Callable[[str], str | None],
) -> Account:
    """Exposure per side of ``open_offers`` and the net position of ``fills``.

    ``side_of_offer(offer_id)``: the side of an offer record, if known (only for receipts
    that did not record our side).
    """
    offers = list(open_offers)
    exposure: dict[str, Exposure] = {str(side): Exposure() for side in SIDES}
    for signed in offers:
        o = signed.offer
        e = exposure[o.side]
        e.count += 1
        e.sats += o.amount
        e.usd_e10 += value(o.amount, o.price)
    acc = Account(offers, exposure, [], [])
    for fill in fills:
        (acc.maker if fill.role == Role.MAKER else acc.taker).append(fill)
        side = fill.side or _side(fill, side_of_offer)
        if side is None:
            acc.unknown_side += 1
            continue
        acc.sides[fill.receipt.fill_id] = side
        sign = 1 if side == "buy" else -1
        acc.btc_sats += sign * fill.receipt.amount
        acc.usd_e10 -= sign * value(fill.receipt.amount, fill.receipt.price)
    return acc


def _side(fill: StoredFill, side_of_offer: Callable[[str], str | None]) -> str | None:
    offer_side = side_of_offer(fill.receipt.offer_id)
    if offer_side is None:
        return None
    return offer_side if fill.role == Role.MAKER else opposite(offer_side)
