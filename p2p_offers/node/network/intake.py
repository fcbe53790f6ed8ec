"""Records from other nodes: verified, applied if newer, and counted whatever happens.

An announcement is a hint, never an instruction. A record is believed only if
its signature verifies, its address is ``sha1(k ‖ salt)``, the salt is the
offer's id, the document is a valid offer and its seq is above what we hold.
Everything else changes nothing, and is counted per outcome so an operator
(and the tests) can see forgeries and replays arriving.

The cheap checks run first: most records reaching a node are duplicates (the
same record via announcement and via sync), and comparing seqs is far cheaper
than verifying a signature.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from p2p_offers.fields import DocError
from p2p_offers.link import GrapeError
from p2p_offers.node.config import MAX_OFFER_TTL_S
from p2p_offers.node.network.dht import Dht
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.limits import PushLimiter
from p2p_offers.node.network.outcomes import Outcome
from p2p_offers.node.signals import Signal
from p2p_offers.offers import Offer, SignedOffer
from p2p_offers.records import INVALID_SIGNATURE, Record, RecordError

APPLIED, CONFLICT, STALE = Outcome.APPLIED, Outcome.CONFLICT, Outcome.STALE
FORGED, MISMATCH, MALFORMED = Outcome.FORGED, Outcome.MISMATCH, Outcome.MALFORMED
UNKNOWN, UNAVAILABLE, OWN = Outcome.UNKNOWN, Outcome.UNAVAILABLE, Outcome.OWN
IMPLAUSIBLE, DUPLICATE, OVER_LIMIT = Outcome.IMPLAUSIBLE, Outcome.DUPLICATE, Outcome.OVER_LIMIT
RATE_LIMITED = Outcome.RATE_LIMITED
MAX_HASH_ONLY = 16  # DHT gets one batch may cost (each runs on the request thread)
_HASH = re.compile(r"[0-9a-f]{40}")
VERIFY_CHUNK = 64
# Signed times are the owner's word; these bound what a foreign offer may claim.
MAX_TTL_MS = MAX_OFFER_TTL_S * 1000  # expires at most this far ahead: no eternal offers
CLOCK_SKEW_MS = 60_000  # created/priority at most this far in our future
MAX_PRIORITY_AGE_MS = 30 * 86_400_000  # a queue place at most this old (no priority 0)


def plausible(offer: Offer, now: int) -> bool:
    """Times a live owner could have signed: see the bounds above.

    A first placement (no parent) queues no earlier than it was created; a
    remainder inherits its parent's older place, which cannot be checked
    here, hence the age bound.
    """
    if offer.expires - now > MAX_TTL_MS + CLOCK_SKEW_MS:
        return False
    if max(offer.created, offer.priority) > now + CLOCK_SKEW_MS:
        return False
    if offer.priority < now - MAX_PRIORITY_AGE_MS:
        return False
    return offer.parent is not None or offer.priority >= offer.created


def _verdict(record: Record) -> RecordError | None:
    try:
        record.verify()
    except RecordError as exc:
        return exc
    return None


def _verdicts(records: list[Record]) -> list[RecordError | None]:
    return [_verdict(r) for r in records]


class Intake:
    def __init__(
        self,
        index: OfferIndex,
        dht: Dht,
        my_id: str,
        clock: Callable[[], int] | None = None,
        *,
        max_open_per_owner: int | None = None,
        pushes: PushLimiter | None = None,
    ) -> None:
        self.index = index
        self.max_open_per_owner = max_open_per_owner  # docs/limits.md: beyond it, owner_full
        self.pushes = pushes
        self.clock = clock or (lambda: time.time_ns() // 1_000_000)
        self.dht = dht
        self.my_id = my_id
        self._lock = threading.Lock()
        self._counts: dict[str, Counter[str]] = {}
        self._salt_handlers: dict[bytes, Callable[[Record], Outcome]] = {}
        self.applied: Signal[[SignedOffer]] = Signal("foreign offer applied")
        self._verifier = ThreadPoolExecutor(1, thread_name_prefix="verify")

    def handle_salt(self, salt: bytes, handler: Callable[[Record], Outcome]) -> None:
        """Records under ``salt`` are not offers (the ledger head, salt "ledger"): they are
        verified and judged by ``handler``, which returns the outcome to count."""
        self._salt_handlers[salt] = handler

    def receive(self, hash_: object, record: object | None, source: str) -> Outcome:
        """Consider one record (attached, or fetched from the DHT by hash); return the outcome.

        ``hash_`` None means the record comes with no claimed address (a sync page).
        """
        outcome = self._receive(hash_, record)
        with self._lock:
            self._counts.setdefault(source, Counter())[outcome] += 1
        return outcome

    def receive_record(self, record: Record, source: str) -> Outcome:
        """``receive`` for a record already parsed (gossip: the wire parsed it and checked
        its claimed address): the same triage, signature check and apply."""
        prepared = self._triage(record) if record.mutable else MALFORMED
        outcome = (
            prepared
            if isinstance(prepared, Outcome)
            else self._believe(prepared, _verdict(prepared))
        )
        with self._lock:
            self._counts.setdefault(source, Counter())[outcome] += 1
        return outcome

    def count(self, source: str, outcome: Outcome, n: int = 1) -> None:
        with self._lock:
            self._counts.setdefault(source, Counter())[outcome] += n

    def admit_push(self, address: str, items: int) -> bool:
        """May a push of ``items`` records from ``address`` be read? If its sender's bucket
        is empty, no: its records are counted ``rate_limited`` (docs/limits.md)."""
        if self.pushes is None or self.pushes.allow(address, items):
            return True
        self.count("announce", RATE_LIMITED, items)
        return False

    def receive_many(self, items: Iterable[tuple[object, object]], source: str) -> Counter[Outcome]:
        """Consider many attached records (a sync page, a batch of announcements).

        The same checks as ``receive``, but the signatures are verified on a
        worker thread, a chunk ahead of this thread, which decodes and applies
        the records already verified. Signature checking runs in C without the
        GIL, so on a multi-core machine the two halves of the work overlap:
        this is most of what lets a new node load 10,000 offers in a second.
        Items without a record cost a DHT get each: a batch gets at most
        ``MAX_HASH_ONLY`` of them, each hash once (sync repairs anything dropped).
        """
        outcomes: Counter[Outcome] = Counter()
        pending: list[Record] = []
        fetched: set[str] = set()
        for hash_, data in items:
            if data is None and isinstance(hash_, str):  # a DHT get: bounded per batch
                if hash_ in fetched:
                    outcomes[DUPLICATE] += 1
                    continue
                if len(fetched) >= MAX_HASH_ONLY:
                    outcomes[OVER_LIMIT] += 1
                    continue
                fetched.add(hash_)
            prepared = self._prepare(hash_, data)
            if isinstance(prepared, Record):
                pending.append(prepared)
            else:
                outcomes[prepared] += 1
        chunks = [pending[i : i + VERIFY_CHUNK] for i in range(0, len(pending), VERIFY_CHUNK)]
        futures = [self._verifier.submit(_verdicts, chunk) for chunk in chunks]
        for chunk, future in zip(chunks, futures, strict=True):
            for record, error in zip(chunk, future.result(), strict=True):
                outcomes[self._believe(record, error)] += 1
        with self._lock:
            self._counts.setdefault(source, Counter()).update(outcomes)
        return outcomes

    def _receive(self, hash_: object, data: object | None) -> Outcome:
        prepared = self._prepare(hash_, data)
        if isinstance(prepared, Outcome):
            return prepared
        return self._believe(prepared, _verdict(prepared))

    def _prepare(self, hash_: object, data: object | None) -> Outcome | Record:
        """Every check short of the signature: an outcome, or the record still to verify."""
        if hash_ is not None and (not isinstance(hash_, str) or not _HASH.fullmatch(hash_)):
            return MALFORMED
        if data is None:
            return self._fetch(hash_) if hash_ is not None else MALFORMED
        if hash_ is None and self._not_news(data):
            return STALE
        try:
            record = Record.from_json(data)
        except RecordError:
            return MALFORMED
        if not record.mutable:
            return MALFORMED
        if hash_ is not None and record.hash != hash_:
            return MISMATCH
        return self._triage(record)

    def _not_news(self, data: object) -> bool:
        """Cheap pre-check on the raw JSON: a version we already hold needs no decoding.

        Sync pages repeat what every peer holds, so most records a syncing node
        sees are duplicates; this answers them without hex-decoding, hashing or
        verifying anything. Anything unusual falls through to the full checks.
        """
        if not isinstance(data, dict):
            return False
        salt, k, seq = data.get("salt"), data.get("k"), data.get("seq")
        if not (isinstance(salt, str) and isinstance(k, str) and type(seq) is int):
            return False
        held = self.index.holder(salt)
        return held is not None and held[0] == k and seq <= held[1]

    def _fetch(self, hash_: str) -> Outcome | Record:
        try:
            record = self.dht.get_record(hash_)
        except GrapeError:
            return UNAVAILABLE
        except RecordError as exc:  # the grape handed us something that does not verify
            return FORGED if exc.code == INVALID_SIGNATURE else MALFORMED
        if record is None:
            return UNKNOWN
        return self._triage(record)

    def _triage(self, record: Record) -> Outcome | Record:
        """Whose record, and is it news? Cheap, so it runs before any signature check."""
        owner = record.k.hex() if record.k else ""
        if owner == self.my_id:
            return OWN  # we are the only writer of our records; nobody can tell us news
        handler = self._salt_handlers.get(record.salt)
        if handler is not None:
            return handler(record)
        try:
            offer_id = record.salt.decode()
        except UnicodeDecodeError:
            return MALFORMED
        held = self.index.holder(offer_id)
        if held is not None and held[0] != owner:
            return CONFLICT
        if held is not None and record.seq <= held[1]:
            return STALE
        return record

    def _believe(self, record: Record, error: RecordError | None) -> Outcome:
        """Apply a record whose signature check gave ``error`` (None: it verified)."""
        if error is not None:
            return FORGED if error.code == INVALID_SIGNATURE else MALFORMED
        try:
            signed = SignedOffer.from_record(record, verify=False)
        except DocError:
            return MALFORMED
        if not plausible(signed.offer, self.clock()):
            return IMPLAUSIBLE
        outcome = self.index.apply(signed, self.max_open_per_owner)
        if outcome == APPLIED:
            self.applied.emit(signed)
        return outcome

    def close(self) -> None:
        self._verifier.shutdown(wait=False, cancel_futures=True)

    def counters(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                source: {"received": sum(c.values()), **dict(sorted(c.items()))}
                for source, c in sorted(self._counts.items())
            }
