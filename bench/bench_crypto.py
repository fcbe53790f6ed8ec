"""Signatures per bid: what the protocol's cryptography alone costs one accepted bid.

Why: issue 7 asks for <= 3 ms of CPU per accepted bid summed over every process. A
bid that fills is signed and checked by design (SPEC §5, §6): the taker signs the
bid and verifies the receipt; the owner verifies the bid, signs the receipt, the
offer's closed version and its remainder, and the ledger entry. Those seven
operations are the floor no batching can remove, so this measures them, with the
project's own functions, on this machine, and prints the floor next to the
target. Each further record version a peer takes in costs one more verification
(``verify_record``), which is why publication coalesces hot chains.

Baseline, measured in the same run: a keyed blake2b MAC of a gossip envelope
(``signing.mac_doc``), which is what a point-to-point message needs instead of a
signature (``docs/gossip.md``); every figure is also given as a ratio to it.

Reported: per operation the median CPU time (``time.process_time`` over a block of
``--ops`` calls, ``--rounds`` blocks) in µs, the ratio to the MAC, and
``floor_ms_per_bid``: the seven operations summed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from _common import base_parser, emit
from nacl.signing import SigningKey

from p2p_offers import ledger, offers
from p2p_offers.bids import make_bid, make_receipt
from p2p_offers.signing import mac_doc, pair_key, public_hex

TARGET_MS = 3.0
NOW = 1_700_000_000_000


def cpu_us(fn: Callable[[], Any], ops: int, rounds: int) -> float:
    """Median over ``rounds`` blocks of the CPU time of one call, in µs."""
    samples = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(ops):
            fn()
        samples.append((time.process_time() - start) / ops * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300, help="calls per timed block")
    args = parser.parse_args()
    maker, taker = SigningKey.generate(), SigningKey.generate()
    offer = offers.create("sell", 6_500_000, 100_000_000, NOW, 3_600_000)
    head = offers.sign(maker, offer, offers.FIRST_SEQ)
    bid = make_bid(
        taker,
        offer_id=offer.id,
        offer_seq=head.seq,
        maker=public_hex(maker),
        amount=100_000,
        price=offer.price,
        now_ms=NOW,
    )
    filled, rest = offer.fill_with(bid.bid_id, bid.amount, bid.taker, NOW, "0" * 36)
    assert rest is not None
    receipt = make_receipt(maker, bid, offer_id=offer.id, remainder=rest.id, now_ms=NOW)
    entry = ledger.append(maker, None, receipt.to_wire(), NOW)
    secret = pair_key(maker, public_hex(taker))
    envelope = {"from": public_hex(maker), "to": public_hex(taker), "at": NOW, "body": "0" * 64}

    floor_ops: dict[str, Callable[[], Any]] = {  # the seven of one accepted bid
        "taker_sign_bid": lambda: make_bid(
            taker,
            offer_id=offer.id,
            offer_seq=1,
            maker=bid.maker,
            amount=bid.amount,
            price=bid.price,
            now_ms=NOW,
        ),
        "maker_verify_bid": bid.verify,
        "maker_sign_receipt": lambda: make_receipt(
            maker, bid, offer_id=offer.id, remainder=rest.id, now_ms=NOW
        ),
        "maker_sign_closed_version": lambda: offers.sign(maker, filled, 2),
        "maker_sign_remainder": lambda: offers.sign(maker, rest, offers.FIRST_SEQ),
        "maker_sign_ledger_entry": lambda: ledger.append(maker, None, receipt.to_wire(), NOW),
        "taker_verify_receipt": receipt.verify,
    }
    other_ops: dict[str, Callable[[], Any]] = {
        "verify_record": head.record.verify,  # each version a peer takes in
        "verify_ledger_entry": lambda: ledger.verify_entry(entry, None),
        "mac_envelope": lambda: mac_doc(secret, "gossip", envelope),  # the baseline
    }
    rounds = max(3, args.rounds)
    us = {name: cpu_us(fn, args.ops, rounds) for name, fn in {**floor_ops, **other_ops}.items()}
    mac = us["mac_envelope"]
    floor_ms = sum(us[name] for name in floor_ops) / 1000
    emit(
        {
            "bench": "crypto",
            "ops_per_block": args.ops,
            "blocks": rounds,
            "us": {name: round(v, 1) for name, v in us.items()},
            "ratio_to_mac": {name: round(v / mac, 1) for name, v in us.items()},
            "floor_ms_per_bid": round(floor_ms, 3),
            "target_ms_per_bid": TARGET_MS,
            "floor_share_of_target": round(floor_ms / TARGET_MS, 2),
        }
    )


if __name__ == "__main__":
    main()
