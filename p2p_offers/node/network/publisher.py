"""Getting our new record versions out: into the DHT, and pushed to every peer.

State changes are durable before they reach this module, so publication can
run behind them: the owner answers a bid as soon as the fill is committed and
the world catches up here. Two queues, each coalescing per offer id (only the
newest version of a record is worth sending; versions superseded while
waiting are skipped):

* the DHT queue puts each record with ``cas`` = the last seq we know the DHT
  holds, from a pool of workers (puts of different records are independent);
* the push queue sends batches of records to every peer in parallel
  (``POST /peer/announce``, the record attached so receivers need no DHT
  round trip). Pushing does not wait for the DHT put: receivers verify the
  attached record themselves, so waiting would only add the put's latency to
  every propagation. The DHT is for readers that were not told.

Anything a peer misses (it was down, the push failed) is repaired by the
peer's anti-entropy sync; anything the DHT misses is retried until it lands,
after a pause that doubles with every round that failed (0.5 s up to 30 s) and
goes back to 0.5 s after a round that did not. Failing puts are logged when
they start failing and when they land again, not once per attempt.

A record born and closed while still queued is never published at all (both
queues, independently): on a hot offer every bid splits off a remainder, and a
remainder filled before its first version left the queue is a record nobody
else ever saw, so its parent's closed version (naming it in ``fill.remainder``)
and the chain's newest open record are all the world needs. Publication of a
hot chain is thereby coalesced to its newest state per publication round, while
the owner's durable store keeps (and serves) every record. Records that may
already be out (seeded by ``published`` after a restart) are always sent.

With ``--propagation gossip`` (``gossip`` given) the push queue goes to
``GossipNet.publish`` instead: each version to the mesh (at most 8 neighbours),
which forwards it on (``network/gossip.py``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Protocol

from p2p_offers.link import GrapeError
from p2p_offers.node import errors
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.dht import Dht
from p2p_offers.node.network.peers import Peer, Peers
from p2p_offers.node.network.transport import TransportError
from p2p_offers.offers import FIRST_SEQ, OPEN, SignedOffer
from p2p_offers.records import CAS_MISMATCH, SEQ_TOO_LOW, Record, RecordError

if TYPE_CHECKING:
    from p2p_offers.node.network.gossip import GossipNet

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 60 * 1024  # under the receivers' 64 KiB body limit
RETRY_DELAY_S = 0.5  # the pause after a round of puts that failed, doubling ...
RETRY_DELAY_MAX_S = 30.0  # ... up to this
PUSH_FIRST_S = 0.02
# Put rounds start at most this often: a hot chain's versions that arrive meanwhile
# coalesce to its newest, so its puts stay a few per round, not one per bid. The DHT
# is for readers that were not told; a first put after a quiet spell still goes at once.
PUT_ROUND_S = 0.1
# Likewise for spreading to peers, where every version sent is verified by every node:
# versions that arrive within this of the last round go together, newest only.
PUSH_ROUND_S = 0.02


class Publishable(Protocol):
    """A signed record this node writes: an offer version, or the head of our ledger."""

    @property
    def id(self) -> str: ...  # the queue key: one entry per record, newest seq wins

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...

    @property
    def record(self) -> Record: ...


class Publisher:
    def __init__(
        self,
        dht: Dht,
        peers: Peers,
        client: PeerClient,
        mark_published: Callable[[list[tuple[str, int]]], None],
        put_workers: int = 8,
        push_workers: int = 32,  # one per peer, so no peer waits for another's reply
        gossip: GossipNet | None = None,  # propagate by gossip, not by pushing to every peer
    ) -> None:
        self.gossip = gossip
        self.dht = dht
        self.peers = peers
        self.client = client
        self.mark_published = mark_published
        self._cond = threading.Condition()
        self._to_put: dict[str, Publishable] = {}
        self._to_push: dict[str, Publishable] = {}
        self._in_dht: dict[str, int] = {}  # id -> seq known to be stored in the DHT
        self._maybe_out: set[str] = set()  # seeded after a restart: never coalesced away
        self._unsent: list[tuple[str, int]] = []  # coalesced away: to mark as published
        self._putting = 0
        self._pushing = 0
        self._stopping = False
        self._put_pool = ThreadPoolExecutor(put_workers, thread_name_prefix="dht-put")
        self._push_pool = ThreadPoolExecutor(push_workers, thread_name_prefix="peer-push")
        self._threads: list[threading.Thread] = []
        self._failing: str | None = None  # why puts fail, while they do
        self._last_error: str | None = None  # the last put error of this round
        self.stats = {
            "put": 0,
            "put_failed": 0,
            "put_cas_dropped": 0,
            "pushed": 0,
            "push_failed": 0,
        }

    # -- queueing ------------------------------------------------------------------------

    def publish(self, versions: Iterable[Publishable], *, push: bool = True) -> None:
        with self._cond:
            for signed in versions:
                if self._never_out(signed):
                    self._unsent.append((signed.id, signed.seq))
                    continue
                _keep_newest(self._to_put, signed)
                if push:
                    _keep_newest(self._to_push, signed)
            self._cond.notify_all()

    def _never_out(self, signed: Publishable) -> bool:
        """Is ``signed`` the end of a record none of whose versions left the queues?

        If so, the queued first version is withdrawn from both (caller holds the lock).
        """
        if _may_change(signed) or signed.id in self._maybe_out:
            return False
        queued = (self._to_put.get(signed.id), self._to_push.get(signed.id))
        if any(q is None or q.seq != FIRST_SEQ for q in queued):
            return False
        del self._to_put[signed.id], self._to_push[signed.id]
        return True

    def published(self, offer_id: str, seq: int) -> None:
        """Seed what the DHT is known to hold (after a restart, from the store)."""
        with self._cond:
            self._maybe_out.add(offer_id)
            if seq > self._in_dht.get(offer_id, 0):
                self._in_dht[offer_id] = seq

    def pending(self) -> int:
        with self._cond:
            return len(self._to_put) + self._putting + len(self._to_push) + self._pushing

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        for name, loop in (("dht-publisher", self._put_loop), ("peer-pusher", self._push_loop)):
            thread = threading.Thread(target=loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Let queued publications finish (bounded), then stop the workers."""
        deadline = time.monotonic() + flush_timeout_s
        with self._cond:
            while self._to_put or self._putting or self._to_push or self._pushing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=2)
        self._put_pool.shutdown(wait=False, cancel_futures=True)
        self._push_pool.shutdown(wait=False, cancel_futures=True)

    def _take(self, queue: dict[str, Publishable]) -> dict[str, Publishable]:
        """Wait for work and take all of it; empty means stop."""
        with self._cond:
            while not queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return {}
            batch = dict(queue)
            queue.clear()
            return batch

    # -- the DHT -------------------------------------------------------------------------

    def _pause_until(self, when: float) -> None:
        """Wait until ``when`` (monotonic); stop() ends the pause, new publications do not."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, timeout=when - time.monotonic())

    def _put_loop(self) -> None:
        delay = RETRY_DELAY_S
        round_start = -PUT_ROUND_S
        while True:
            self._pause_until(round_start + PUT_ROUND_S)
            batch = self._take(self._to_put)
            if not batch:
                return
            round_start = time.monotonic()
            with self._cond:
                self._putting = len(batch)
                # Peers are waiting for the push; the DHT is not. Let the push go first
                # (briefly) rather than compete with it for the interpreter.
                deadline = time.monotonic() + PUSH_FIRST_S
                while (self._to_push or self._pushing) and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            futures = {self._put_pool.submit(self._put, s): s for s in batch.values()}
            wait(futures)
            done: list[Publishable] = []
            retry: list[Publishable] = []
            for future, signed in futures.items():
                ok = not future.cancelled() and future.exception() is None and future.result()
                (done if ok else retry).append(signed)
            with self._cond:
                unsent, self._unsent = self._unsent, []
            try:
                self.mark_published([(s.id, s.seq) for s in done] + unsent)
            except Exception:
                log.exception("recording publications failed")
            with self._cond:
                self._putting = 0
                for signed in retry:
                    self._maybe_out.add(signed.id)  # a failed put may have reached a replica
                    if signed.id not in self._to_put:
                        self._to_put[signed.id] = signed
                self._cond.notify_all()
            self._note_round(failed=bool(retry))
            if not retry:
                delay = RETRY_DELAY_S
                continue
            self._pause_until(time.monotonic() + delay)
            delay = min(delay * 2, RETRY_DELAY_MAX_S)

    def _note_round(self, failed: bool) -> None:
        """Log when puts start failing and when they work again: once per change."""
        with self._cond:
            changed = failed != (self._failing is not None)
            reason = self._last_error or "refused"
            self._failing = reason if failed else None
            self._last_error = None
        if changed and failed:
            log.warning("DHT puts failing, retrying with back-off: %s", reason)
        elif changed:
            log.info("DHT puts work again")

    def put_state(self) -> str | None:
        """Why DHT puts fail, while they do (None when the last round worked)."""
        with self._cond:
            return self._failing

    def _put(self, signed: Publishable) -> bool:
        """Put one record; True once the DHT holds this version (or a newer one).

        ``cas`` guards against a put of ours we did not record. On a mismatch
        the DHT is asked what it holds: we are the only writer of our keys, so
        anything older than this version is ours and superseded, and the next
        put goes without ``cas``. That is what converges when most replicas lost
        the record (grapes restarted empty): they refuse every ``cas`` with 301
        while a survivor still serves the old version to a get.
        """
        cas = self._in_dht.get(signed.id)
        for _ in range(3):
            try:
                self.dht.put_record(signed.record, cas=cas)
            except GrapeError as exc:
                if exc.code == CAS_MISMATCH and self._learn_stored_seq(signed):
                    stored = self._in_dht.get(signed.id)
                    if stored is not None and stored >= signed.seq:
                        return self._put_done(signed)  # this version or a newer one is out
                    if cas is not None:
                        self._count("put_cas_dropped")
                    cas = None
                    continue
                if exc.code != SEQ_TOO_LOW:  # too low: the DHT has this version or newer
                    log.debug("put %s seq %d failed: %s", signed.id, signed.seq, exc)
                    with self._cond:
                        self._last_error = str(exc)
                    self._count("put_failed")
                    return False
            return self._put_done(signed)
        return False

    def _put_done(self, signed: Publishable) -> bool:
        with self._cond:
            if _may_change(signed):
                self._in_dht[signed.id] = max(self._in_dht.get(signed.id, 0), signed.seq)
            else:  # a closed record never changes again: nothing left to guard with cas
                self._in_dht.pop(signed.id, None)
                self._maybe_out.discard(signed.id)
        self._count("put")
        return True

    def _count(self, name: str) -> None:
        with self._cond:
            self.stats[name] += 1

    def _learn_stored_seq(self, signed: Publishable) -> bool:
        """After a CAS mismatch (a put we did not record, e.g. before a crash), ask the DHT."""
        try:
            stored = self.dht.get_record(signed.hash)
        except (GrapeError, RecordError):
            return False
        with self._cond:
            if stored is None:
                self._in_dht.pop(signed.id, None)
            else:
                self._in_dht[signed.id] = stored.seq
        return True

    # -- peers ---------------------------------------------------------------------------

    def _push_loop(self) -> None:
        round_start = -PUSH_ROUND_S
        while True:
            self._pause_until(round_start + PUSH_ROUND_S)
            batch = self._take(self._to_push)
            if not batch:
                return
            round_start = time.monotonic()
            with self._cond:
                self._pushing = len(batch)
            try:
                if self.gossip is not None:
                    self.gossip.publish(batch.values())
                    self.gossip.flush(self.client.timeouts.push_s)
                    continue
                bodies = list(_announcement_bodies(batch.values()))
                peers = self.peers.nodes()
                for future in [self._push_pool.submit(self._push, p, bodies) for p in peers]:
                    future.result()
            except Exception:
                log.exception("pushing announcements failed")
            finally:
                with self._cond:
                    self._pushing = 0
                    self._cond.notify_all()

    def _push(self, peer: Peer, bodies: list[bytes]) -> None:
        for body in bodies:
            try:
                self.client.announce(peer.address, body)
            except TransportError as exc:
                log.info("push to %s failed: %s", peer.address, exc)
                self._count("push_failed")
                self.peers.unreachable(peer.address)
                return
            except errors.DomainError as exc:  # it answered, and refused the batch
                log.info("push to %s refused: %s", peer.address, exc)
                self._count("push_failed")
                continue
            self._count("pushed")


def _may_change(signed: Publishable) -> bool:
    """Open offers and non-offer records (the ledger head) change again."""
    return not isinstance(signed, SignedOffer) or signed.offer.status == OPEN


def _keep_newest(queue: dict[str, Publishable], signed: Publishable) -> None:
    held = queue.get(signed.id)
    if held is None or held.seq < signed.seq:
        queue[signed.id] = signed


def _announcement_bodies(versions: Iterable[Publishable]) -> Iterable[bytes]:
    """JSON bodies of at most MAX_BATCH_BYTES: the spec's single form for one record."""
    items = [json.dumps({"hash": s.hash, "record": s.record.to_json()}) for s in versions]
    if len(items) == 1:
        yield items[0].encode()
        return
    chunk: list[str] = []
    size = 0
    for item in items:
        if chunk and size + len(item) + 1 > MAX_BATCH_BYTES - 32:
            yield _batch(chunk)
            chunk, size = [], 0
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield _batch(chunk)


def _batch(items: list[str]) -> bytes:
    return ('{"announcements":[' + ",".join(items) + "]}").encode()
