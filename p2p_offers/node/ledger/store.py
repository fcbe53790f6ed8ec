"""The trade ledger on this node: our own feed, written with each fill, and the checks behind it.

Every fill receipt we sign as a maker is appended to our feed
(``ledger.append``) inside the very transaction that records the fill
(``append_own``, connected to the maker's ``recording_fills``), so a receipt a
taker holds can never be missing from our feed, not even after SIGKILL. Once
that transaction commits, ``appended`` tells the replicator, which publishes
the new head.

``trades`` merges every stored feed (newest first) and ``verify`` recomputes
every chain from the stored entries and checks the receipts this node holds as
a taker against their makers' feeds. Every stored entry was verified before it
was stored, so the database is the source of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from nacl.signing import SigningKey

from p2p_offers import ledger
from p2p_offers.bids import Receipt
from p2p_offers.ledger import Feed, LedgerEntry, LedgerError
from p2p_offers.node.signals import Signal
from p2p_offers.node.storage.database import Tx
from p2p_offers.node.storage.ledger import FeedState, LedgerRows
from p2p_offers.node.storage.receipts import Role, StoredFill
from p2p_offers.signing import public_hex

log = logging.getLogger(__name__)


class LedgerStore:
    def __init__(self, rows: LedgerRows, key: SigningKey) -> None:
        self.rows = rows
        self.key = key
        self.me = public_hex(key)
        self.appended: Signal[[FeedState]] = Signal("own feed appended")
        # the entries themselves, after the same commit (what the event stream tells)
        self.recorded: Signal[[list[LedgerEntry]]] = Signal("own entries recorded")

    def append_own(self, tx: Tx, fills: list[StoredFill]) -> None:
        """Inside the fill's transaction: one entry per receipt we made, in commit order.

        The head is read inside the same (exclusive) transaction, so concurrent
        commits on different offer chains still form one unbroken chain, and a
        rolled-back commit leaves no trace.
        """
        made = [f.receipt for f in fills if f.role == Role.MAKER and f.receipt.maker == self.me]
        if not made:
            return
        head: LedgerEntry | None = self.rows.head(tx, self.me)
        head_hash = ""
        entries: list[LedgerEntry] = []
        for receipt in made:
            head = ledger.append(self.key, head, receipt.to_wire(), receipt.ts)
            head_hash = self.rows.insert(tx, head)
            entries.append(head)
        assert head is not None
        state = FeedState(self.me, head["height"], head_hash)
        tx.after_commit(lambda: self.appended.emit(state))
        tx.after_commit(lambda: self.recorded.emit(entries))

    # -- reads ---------------------------------------------------------------------------

    def state(self, owner: str) -> FeedState:
        return self.rows.state(owner)

    def states(self) -> list[FeedState]:
        return self.rows.states()

    def raw_entries(self, owner: str, start: int, limit: int) -> list[str]:
        return self.rows.raw_entries(owner, start, limit)

    def trades(
        self, owner: str | None = None, limit: int | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Trades of every feed, newest first; ``filters``: see ``LedgerRows.receipts``."""
        return self.rows.receipts(owner, limit, **filters)

    def verify(self, fills: Iterable[StoredFill]) -> dict[str, Any]:
        """Recompute every feed from the stored entries; check our receipts against them.

        A feed is ok if its entries form one chain that ``ledger.Feed`` accepts
        and its owner was never caught forking. Every receipt we hold as a
        taker must be in its maker's feed exactly as we were given it, and
        every receipt we gave as a maker in ours: ``missing`` ones may still be
        on their way (or were withheld), ``mismatched`` ones are lies.
        """
        forked = self.rows.forked()
        feeds = []
        for state in self.states():
            feed = Feed(state.owner, receipt_check)
            try:
                feed.extend(self.rows.entries(state.owner))
                ok = feed.height == state.height and feed.head_hash == state.head
            except LedgerError as exc:
                log.warning("stored feed %s does not verify: %s", state.owner, exc)
                ok = False
            ok = ok and state.owner not in forked
            feeds.append(
                {"owner": state.owner, "height": state.height, "head": state.head, "ok": ok}
            )
        missing, mismatched, checked = [], [], 0
        for fill in fills:
            checked += 1
            receipt = fill.receipt.to_wire()
            maker = receipt["maker"]
            found = [r for owner, r in self.rows.by_fill(receipt["fill_id"]) if owner == maker]
            if not found:
                missing.append(receipt["fill_id"])
            elif found[0] != receipt:
                mismatched.append(receipt["fill_id"])
        ok = all(f["ok"] for f in feeds) and not missing and not mismatched
        return {
            "ok": ok,
            "feeds": feeds,
            "receipts": {"checked": checked, "missing": missing, "mismatched": mismatched},
        }


def receipt_check(receipt: dict[str, Any]) -> None:
    """What ``Feed`` checks a receipt with: a well-formed ``Receipt`` signed by its maker.

    Stricter than the ledger's default (signature only): a node renders these
    as trades, so every field must be one a real receipt can have.
    """
    try:
        Receipt.from_wire(receipt).verify()
    except ValueError as exc:  # DocError or SignatureError
        raise LedgerError(f"receipt: {exc}") from None


def receipt_shape(receipt: dict[str, Any]) -> None:
    """``receipt_check`` without the signature: what replication checks a receipt with.

    The entry holding the receipt is authenticated by its owner's signature, and
    the receipt's ``maker`` must be that owner (``ledger``), so a second
    verification by the same key would add cost, not trust.
    """
    try:
        Receipt.from_wire(receipt)
    except ValueError as exc:
        raise LedgerError(f"receipt: {exc}") from None
