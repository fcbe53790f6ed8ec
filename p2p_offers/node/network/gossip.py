"""Propagation by gossip: the pure core (``p2p_offers.gossip``) run over the peer transport.

With ``--propagation gossip`` an owner no longer pushes each new version to
every node. The publisher hands it to ``GossipNet.publish``, which sends it to
the mesh (at most ``d_high`` = 8 neighbours, whatever N is); each node that
finds it new (the ``Intake`` applied it: verified, newer) forwards it once to
its neighbours except the sender and the owner; repeats stop at the seen-cache
by (hash, seq). Every ``sync_interval`` one neighbour gets a page of per-owner
digests (anti-entropy); the paged ``peerOffers`` sync only runs as a node
starts. See docs/gossip.md.

**Who sent it.** The router trusts the sender for GRAFT/PRUNE, "not back to the
sender" and its per-peer answer budget, so the sender is never taken from the
request. Every gossip request is an envelope authenticated for its one receiver:
a MAC (``signing.mac_doc``, kind ``gossip``) over ``{from, to, at, body}`` under
the secret only sender and receiver can compute from their node keys
(``signing.pair_key``: X25519), where ``body`` is the blake2b of the exact bytes
of the messages:

* ``from`` is the sender's client id, which *is* its public key, so a MAC that
  verifies under our pair secret with it proves who sent it; nobody can prune B
  out of our mesh without B's key. A signature would prove the same to everyone;
  a receiver alone needs no more, and a MAC costs ~10 µs each way where Ed25519
  costs ~120 µs of CPU a request (sign + verify, ``bench/bench_crypto.py``). Pair
  secrets are cached;
* ``to`` is our client id: an envelope made for another node is refused;
* ``at`` (the sender's clock, ms) must be within ``CLOCK_WINDOW_MS`` of ours and
  above the last one accepted from that sender, so an envelope cannot be
  replayed (sends to one peer are serial, so honest ``at`` only grow). Those
  marks are saved to the database every heartbeat and at stop
  (``storage/envelope_marks.py``) and loaded at start, so a restart does not
  reopen the window; after a crash, only envelopes accepted in the last beat
  before it could be replayed once.

Mesh state is keyed by that verified client id; we dial a neighbour at the
address ``Peers`` identified for it (the ``p2p_offers:node`` lookup, then
``identify``). A client id we cannot map to an address counts as a failed send,
so a key that never announced itself leaves the mesh after three.

Threads: the router is one state machine behind one lock; request threads
(``receive``), the publisher (``publish``) and the heartbeat loop call in, and
what it returns goes to per-peer outboxes drained by a pool, one request in
flight per peer (messages queued meanwhile go in the next envelope together).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nacl.signing import SigningKey

from p2p_offers.gossip import wire
from p2p_offers.gossip.digest import Holdings
from p2p_offers.gossip.mesh import Mesh, MeshParams
from p2p_offers.gossip.router import Router, Send, Verdict
from p2p_offers.gossip.seen import SeenCache
from p2p_offers.node import errors
from p2p_offers.node.network.client import PeerClient
from p2p_offers.node.network.index import OfferIndex
from p2p_offers.node.network.intake import Intake
from p2p_offers.node.network.outcomes import Outcome
from p2p_offers.node.network.peers import Peers
from p2p_offers.node.network.transport import TransportError
from p2p_offers.node.storage.envelope_marks import EnvelopeMarks
from p2p_offers.signing import SignatureError, mac_doc, pair_key, public_hex, verify_mac

log = logging.getLogger(__name__)

KIND = "gossip"  # the MAC's domain of envelopes
SOURCE = "gossip"  # the intake's counter for records that came this way
CLOCK_WINDOW_MS = 60_000
ENVELOPE_BUDGET = 60 * 1024  # bytes of messages in one request (the body limit is 64 KiB)
MAX_OUTBOX = 1024  # messages queued per peer; beyond, the oldest go (anti-entropy repairs)
MAX_SENDERS = 10_000  # last-``at`` marks kept before the stale ones are swept
HEARTBEAT_S = 1.0
SEEN_TTL_S = 120.0
SEEN_CAPACITY = 200_000
SEND_WORKERS = 16
Queued = tuple[str, tuple[str, int] | None, bytes]  # (message type, version id, encoded)

NEW = (Outcome.APPLIED,)
KNOWN = (Outcome.STALE, Outcome.DUPLICATE, Outcome.OWN)


def verdict(outcome: Outcome) -> Verdict:
    """The intake's outcome as the router's verdict (docs/gossip.md, "how a node plugs
    the core in"): anything not applied and not a plain repeat is invalid."""
    if outcome in NEW:
        return Verdict.NEW
    if outcome in KNOWN:
        return Verdict.KNOWN
    return Verdict.INVALID


def body_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=32).hexdigest()


def join(encoded: list[bytes]) -> bytes:
    """The bytes an envelope's signature covers: its messages as one compact JSON list,
    which is what ``wire.encode`` of each joined by commas is, on both sides."""
    return b"[" + b",".join(encoded) + b"]"


def envelope(
    key: SigningKey, to: str, at: int, encoded: list[bytes], secret: bytes | None = None
) -> bytes:
    """An authenticated gossip request (already encoded JSON, framed by the transport as
    is); ``secret`` is ``pair_key(key, to)`` if the caller holds it."""
    me = public_hex(key)
    body = join(encoded)
    doc = {"from": me, "to": to, "at": at, "body": body_hash(body)}
    mac = mac_doc(secret or pair_key(key, to), KIND, doc)
    head = f'{{"from":"{me}","to":"{to}","at":{at},"mac":"{mac}","messages":'
    return head.encode() + body + b"}"


class OfferHoldings(Holdings):
    """Holdings of what ``lookup`` can hand back: offer records, not ledger heads (those
    are hints the replicator follows and repairs with its own feed sync)."""

    def update(self, owner: str, key: str, seq: int) -> bool:
        if key == "ledger":
            return False
        return super().update(owner, key, seq)


class GossipNet:
    def __init__(
        self,
        key: SigningKey,
        peers: Peers,
        client: PeerClient,
        intake: Intake,
        index: OfferIndex,
        *,
        round_s: float = 15.0,
        params: MeshParams | None = None,
        marks: EnvelopeMarks | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.key = key
        self.me = public_hex(key)
        self.peers = peers
        self.client = client
        self.intake = intake
        self.index = index
        self.round_s = round_s
        self.wall_ms = wall_ms
        self.clock = clock
        rng = rng or random.Random()
        self.holdings = OfferHoldings()
        self.mesh = Mesh(self.me, params or MeshParams(), rng, clock)
        seen = SeenCache(SEEN_TTL_S, SEEN_CAPACITY, clock)
        self.router = Router(
            self.me, self.mesh, seen, self.holdings, self._validate, self._lookup, rng
        )
        self._lock = threading.RLock()  # the router, the outboxes, the counters
        self._idle = threading.Condition(self._lock)  # every outbox drained
        self._outbox: dict[str, deque[Queued]] = {}
        self._busy: set[str] = set()
        # sender -> the last envelope time we accepted; those changed since the last save
        self._marks = marks
        self._last_at = {} if marks is None else marks.load(wall_ms() - CLOCK_WINDOW_MS)
        self._marks_dirty: set[str] = set()
        self._secrets: dict[str, bytes] = {}  # peer -> pair_key(ours, theirs), oldest first
        self._sent_at = 0
        self.counts: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(SEND_WORKERS, thread_name_prefix="gossip-send")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the core's hooks ----------------------------------------------------------------

    def _validate(self, v: wire.Version, sender: str | None) -> Verdict:
        return verdict(self.intake.receive_record(v.record, SOURCE))

    def _lookup(self, owner: str, key: str) -> wire.Version | None:
        signed = self.index.record(key)  # a tombstone too: how a missed close is repaired
        if signed is None or signed.owner != owner:
            return None
        return wire.Version.of(signed.record)

    def reconcile(self) -> None:
        """Holdings := the index's records (ours included): what any path applied, minus
        what the book dropped (expired; a closed record stays as a tombstone), so two nodes
        with the same book send the same digests."""
        held = {(o, k): s for o, k, s in self.index.versions()}
        with self._lock:
            for owner in self.holdings.owners():
                for k in self.holdings.entries(owner):
                    if (owner, k) not in held:
                        self.holdings.forget(owner, k)
            for (owner, k), seq in held.items():
                self.holdings.update(owner, k, seq)

    # -- out -----------------------------------------------------------------------------

    def publish(self, versions: Iterable[Any]) -> None:
        """Our new versions (``Publishable``: offers, the ledger head) to the mesh only."""
        # just started: do not wait a beat (candidates outside the lock: may look up)
        candidates = self._candidates() if len(self.mesh) < self.mesh.params.d_low else []
        with self._lock:
            sends: list[Send] = self.router.heartbeat(candidates) if candidates else []
            for signed in versions:
                out = self.router.publish(signed.record)
                self.counts["published"] += 1
                self.counts["sent_by_owner"] += len(out)
                sends += out
        self._dispatch(sends)

    def flush(self, timeout_s: float) -> bool:
        """Wait (bounded) until everything queued is sent. The publisher calls it after
        ``publish`` as it waits for its pushes, so that the DHT put it holds back for
        ``PUSH_FIRST_S`` does not compete with the owner's sends; True if drained."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout_s)

    def _candidates(self) -> list[str]:
        return [p.client_id for p in self.peers.nodes()]

    def _dispatch(self, sends: list[Send]) -> None:
        with self._lock:
            for peer, message in sends:
                box = self._outbox.setdefault(peer, deque())
                if len(box) >= MAX_OUTBOX:
                    box.popleft()
                    self.counts["outbox_dropped"] += 1
                kind = str(message.get("t"))
                box.append((kind, wire.claimed_id(message), wire.encode(message)))
                if peer not in self._busy:
                    self._busy.add(peer)
                    try:
                        self._pool.submit(self._drain, peer)
                    except RuntimeError:  # stopping
                        self._busy.discard(peer)

    def _drain(self, peer: str) -> None:
        """Send ``peer``'s queued messages, an envelope at a time, until none are left."""
        while True:
            with self._lock:
                box = self._outbox.get(peer)
                if not box or self._stopping.is_set():
                    self._outbox.pop(peer, None)
                    self._busy.discard(peer)
                    if not self._busy:
                        self._idle.notify_all()
                    return
                batch: list[bytes] = []
                size = 0
                while box and (not batch or size + len(box[0][2]) + 1 <= ENVELOPE_BUDGET):
                    kind, _, data = box.popleft()
                    self.counts["sent_" + kind] += 1
                    size += len(data) + 1
                    batch.append(data)
                self._sent_at = at = max(self.wall_ms(), self._sent_at + 1)
            ok = self._send(peer, at, batch)
            with self._lock:
                if ok:
                    self.router.delivered(peer)
                    self.counts["envelopes_sent"] += 1
                else:
                    self.router.send_failed(peer)
                    self.counts["envelopes_failed"] += 1

    def _withdraw(self, peer: str, ids: set[tuple[str, int]]) -> None:
        """``peer`` just sent us these versions, so it has them: drop our copies still
        queued for it (gossipsub v1.2's IDONTWANT, learnt from the duplicate itself).
        On one busy host most forwards wait behind a request in flight, so this saves
        a good part of the duplicates."""
        box = self._outbox.get(peer)
        if not box or not ids:
            return
        kept = deque(q for q in box if q[1] not in ids or q[0] != "version")
        self.counts["withdrawn"] += len(box) - len(kept)
        self._outbox[peer] = kept

    def _send(self, peer: str, at: int, batch: list[bytes]) -> bool:
        address = next((p.address for p in self.peers.nodes() if p.client_id == peer), None)
        if address is None:  # not (yet) identified: look up again, this send fails
            self.peers.invalidate()
            return False
        try:
            secret = self._secret(peer)
            self.client.gossip(address, envelope(self.key, peer, at, batch, secret))
        except SignatureError:  # an id that is no public key: it can never be sent to
            return False
        except TransportError as exc:
            log.debug("gossip to %s failed: %s", address, exc)
            self.peers.unreachable(address)
            return False
        except errors.DomainError as exc:  # it answered, and refused: not a neighbour
            log.info("gossip to %s refused: %s", address, exc)
            return False
        return True

    # -- in ------------------------------------------------------------------------------

    def _secret(self, peer: str, remember: bool = True) -> bytes:
        """The pair secret with ``peer`` (raises ``SignatureError`` for a junk key).

        A sender's is remembered only once its envelope verified, so junk ids cannot
        push our neighbours' secrets out of the cache."""
        with self._lock:
            secret = self._secrets.get(peer)
        if secret is None:
            secret = pair_key(self.key, peer)  # X25519: outside the lock
            if remember:
                self._remember(peer, secret)
        return secret

    def _remember(self, peer: str, secret: bytes) -> None:
        with self._lock:
            if peer not in self._secrets and len(self._secrets) >= MAX_SENDERS:
                del self._secrets[next(iter(self._secrets))]
            self._secrets[peer] = secret

    def receive(self, sender: str, to: str, at: int, mac: str, messages: list[Any]) -> int:
        """A peer's envelope (shape checked by the route): authenticate, then hand each
        message to the router. Returns how many messages were taken."""
        if to != self.me:
            raise errors.InvalidInput("this gossip envelope is addressed to another node")
        now = self.wall_ms()
        if abs(at - now) > CLOCK_WINDOW_MS:
            raise errors.InvalidInput(
                f"gossip envelope time {at} is more than {CLOCK_WINDOW_MS} ms from ours ({now})"
            )
        try:
            encoded = [wire.encode(m) for m in messages]
        except (TypeError, ValueError):
            raise errors.InvalidInput("gossip messages must be JSON objects of ours") from None
        doc = {"from": sender, "to": to, "at": at, "body": body_hash(join(encoded))}
        try:
            secret = self._secret(sender, remember=False)
            verify_mac(secret, KIND, doc, mac)
            self._remember(sender, secret)
        except SignatureError:
            self._count("refused_signature")
            raise errors.InvalidSignature(
                "the gossip envelope's authentication code does not verify"
            ) from None
        sends: list[Send] = []
        with self._lock:
            if at <= self._last_at.get(sender, 0):
                self.counts["refused_replay"] += 1
                raise errors.InvalidInput("gossip envelope replayed (not newer than the last)")
            if len(self._last_at) >= MAX_SENDERS:
                self._last_at = {s: t for s, t in self._last_at.items() if now - t < 60_000}
            self._last_at[sender] = at
            self._marks_dirty.add(sender)
            self.counts["envelopes_received"] += 1
            self._withdraw(sender, {i for m in messages if (i := wire.claimed_id(m))})
            if any(m.get("t") == "graft" for m in messages):
                # The mesh's backoff keeps a peer that failed (or pruned us) from coming
                # back through DHT refreshes for 60 s. An authenticated GRAFT proves it is alive
                # and wants us: without this, a node restarted within the backoff is
                # refused by every neighbour and gossips with nobody for a minute. (The
                # core has no call for it; ``Mesh`` should grow one.)
                self.mesh._backoff.pop(sender, None)
            for data in encoded:
                before = self.router.stats["duplicate"]
                out = self.router.handle(sender, data)
                self.counts["duplicates"] += self.router.stats["duplicate"] - before
                self.counts["forwarded"] += sum(1 for _, m in out if m.get("t") == "version")
                sends += out
        if sender not in self.mesh and sender not in self._candidates():
            self.peers.invalidate()  # a node we have not found yet: look up again
        self._dispatch(sends)
        return len(encoded)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gossip", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Heartbeat every second (mesh upkeep from the DHT lookup); a digest round every
        ``round_s``, the first one a beat after start (a node repairs as it comes up)."""
        next_round = self.clock() + HEARTBEAT_S
        while not self._stopping.wait(HEARTBEAT_S):
            try:
                candidates = self._candidates()
                with self._lock:
                    sends = self.router.heartbeat(candidates)
                if self.clock() >= next_round:
                    next_round = self.clock() + self.round_s
                    self.reconcile()
                    with self._lock:
                        sends += self.router.anti_entropy()
                        self.counts["rounds"] += 1
                self._dispatch(sends)
                self.save_marks()
            except Exception:
                log.exception("gossip heartbeat failed")

    def save_marks(self) -> None:
        """Persist the envelope times accepted since the last save (replay protection that
        survives a restart); the database is written outside the router's lock."""
        if self._marks is None:
            return
        with self._lock:
            dirty, self._marks_dirty = self._marks_dirty, set()
            marks = [(s, self._last_at[s]) for s in dirty if s in self._last_at]
        if marks:
            self._marks.save(marks, self.wall_ms() - CLOCK_WINDOW_MS)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self.save_marks()
        except Exception:
            log.exception("saving gossip envelope marks failed")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats = self.router.stats
            return {
                "mesh": len(self.mesh),
                "neighbours": sorted(self.mesh.members()),
                **{k: self.counts[k] for k in _REPORTED},
                "new": stats["new"],
                "known": stats["known"],
                "invalid": stats["invalid"],
                "repaired": stats["repaired"],
                "malformed": stats["malformed"],
                "held": len(self.holdings),
                **{k: v for k, v in sorted(self.counts.items()) if k not in _REPORTED},
            }


# always in /health, zero or not (the rest of ``counts`` only once they happen)
_REPORTED = (
    "published",
    "sent_by_owner",
    "forwarded",
    "duplicates",
    "sent_version",
    "envelopes_sent",
    "envelopes_failed",
    "envelopes_received",
    "withdrawn",
    "refused_signature",
    "refused_replay",
    "rounds",
)
