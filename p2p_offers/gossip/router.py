"""What a node does with each gossip message: the protocol, as a pure state machine.

Push (gossipsub's mesh delivery): a version we publish goes to our neighbours,
at most ``d_high`` of them whatever N is. A version from a neighbour is looked
up in the seen-cache by (hash, seq); a repeat is dropped there, before any
signature is checked. Otherwise the node's validator decides:

* ``NEW``: valid and newer than what we hold. Remembered as seen, recorded in
  the holdings, and forwarded once to every neighbour except the one it came
  from and its owner.
* ``KNOWN``: valid but not news (a replay of an old seq, a copy that outlived
  the seen-cache): remembered as seen, never forwarded.
* ``INVALID``: forged, malformed, implausible. Never forwarded and *not*
  remembered, so a forgery carrying a real (hash, seq) cannot shadow the real
  record arriving later.

Each node forwards a version at most once (the seen-cache, or failing that the
validator, stops the second time), so one version costs at most
``d_high x N`` messages in all.

Pull (anti-entropy, in place of gossipsub's IHAVE/IWANT): every round a node
picks one neighbour and sends it a page of per-owner digests; the neighbour
answers with its per-key seqs for the owners that differ; each then sends the
other what it is missing (``want`` -> ``versions`` one way, ``versions``
directly the other). Records arriving this way are validated like any other
but not forwarded: a joining node repairing a whole book must not turn that
into a flood, and its neighbours run their own rounds.

Everything returns the ``(peer, message)`` pairs to send; the caller owns the
transport and reports failed sends back (``send_failed``), which is how dead
neighbours leave the mesh.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from p2p_offers.gossip import digest, wire
from p2p_offers.gossip.digest import Holdings
from p2p_offers.gossip.mesh import Mesh
from p2p_offers.gossip.seen import SeenCache
from p2p_offers.gossip.wire import Version
from p2p_offers.records import Record

Send = tuple[str, dict[str, Any]]
MAX_WINDOWS = 1024  # big owners whose window position we remember
MAX_ANSWERED = 4096  # (peer, kind) answer marks kept before sweeping


class Verdict(Enum):
    NEW = "new"
    KNOWN = "known"
    INVALID = "invalid"


Validate = Callable[[Version, str | None], Verdict]  # (version, sender or None if ours)
Lookup = Callable[[str, str], Version | None]  # (owner, key) -> newest version we hold


@dataclass(frozen=True, slots=True)
class RouterParams:
    digest_page: int = wire.MAX_DIGEST_OWNERS
    max_push: int = 4 * wire.MAX_VERSIONS  # records we send unasked per exchange
    # A digest or a want costs the asker ~100 bytes and us up to ~64 KiB (entries)
    # or ~300 KiB (records): each peer gets one answer of each kind per interval.
    answer_interval_s: float = 1.0


class Router:
    def __init__(
        self,
        me: str,
        mesh: Mesh,
        seen: SeenCache,
        holdings: Holdings,
        validate: Validate,
        lookup: Lookup,
        rng: random.Random,
        params: RouterParams | None = None,
    ) -> None:
        self.me = me
        self.mesh = mesh
        self.seen = seen
        self.holdings = holdings
        self.validate = validate
        self.lookup = lookup
        self.rng = rng
        self.params = params or RouterParams()
        self.stats: Counter[str] = Counter()
        self._cursor = ""  # where our next digest page starts
        self._windows: dict[str, str] = {}  # big owner -> first key of its next window
        self._answered: dict[tuple[str, str], float] = {}  # (peer, kind) -> when

    # -- push ----------------------------------------------------------------------------

    def publish(self, record: Record | Version) -> list[Send]:
        """A version we signed: to every neighbour, and nobody else."""
        v = record if isinstance(record, Version) else Version.of(record)
        self.seen.add(v.id)
        self.holdings.update(v.owner, v.key, v.seq)
        message = wire.version(v, 1)
        sends = [(peer, message) for peer in self.mesh.members()]
        self.stats["published"] += 1
        self.stats["sent_version"] += len(sends)
        return sends

    def handle(self, sender: str, data: bytes) -> list[Send]:
        """Bytes from ``sender`` (as the transport authenticated it)."""
        try:
            obj = wire.loads(data)
            claimed = wire.claimed_id(obj)
            mend = self._one_sided(sender) if claimed is not None else []
            if claimed is not None and claimed in self.seen:
                self.mesh.succeeded(sender)
                self.stats["duplicate"] += 1
                return mend
            message = wire.parse(obj)
        except wire.WireError:
            self.stats["malformed"] += 1
            return []
        return mend + self.handle_message(sender, message)

    def _one_sided(self, sender: str) -> list[Send]:
        """A version comes only from a peer that has us in its mesh: if ours lacks it, take
        it in (room permitting) or say PRUNE, so that no link stays one-sided. Otherwise a
        lost PRUNE (a GRAFT refused while the answer could not be sent) leaves a node whose
        neighbours all dropped it believing in them: it forwards to them and gets nothing
        back but anti-entropy repairs (seen at 50 hosts)."""
        if sender in self.mesh:
            return []
        if self.mesh.graft(sender):
            self.stats["reciprocated"] += 1
            return []
        self.stats["pruned_one_sided"] += 1
        return [(sender, wire.prune())]

    def handle_message(self, sender: str, message: wire.Message) -> list[Send]:
        self.mesh.succeeded(sender)
        match message:
            case wire.VersionMsg(version=v, hops=hops):
                return self._version(sender, v, hops)
            case wire.Graft():
                return [] if self.mesh.graft(sender) else [(sender, wire.prune())]
            case wire.Prune():
                self.mesh.prune(sender)
                return []
            case wire.DigestMsg():
                if not self._may_answer(sender, "digest"):
                    return []
                return self._digest(sender, message)
            case wire.EntriesMsg():
                return self._entries(sender, message)
            case wire.WantMsg(items=items):
                if not self._may_answer(sender, "want"):
                    return []
                return self._want(sender, items)
            case wire.VersionsMsg(versions=vs):
                for v in vs:
                    self._accept(v, sender, "repaired")
                return []
        raise AssertionError(f"unhandled message {message!r}")  # pragma: no cover

    def _version(self, sender: str, v: Version, hops: int) -> list[Send]:
        if not self._accept(v, sender, "new"):
            return []
        if hops >= wire.MAX_HOPS:
            self.stats["hop_limit"] += 1
            return []
        message = wire.version(v, hops + 1)
        sends = [(p, message) for p in self.mesh.members() if p != sender and p != v.owner]
        self.stats["sent_version"] += len(sends)
        return sends

    def _accept(self, v: Version, sender: str | None, counter: str) -> bool:
        """Seen-cache, then the validator; True if ``v`` is news (and now recorded)."""
        if v.id in self.seen:
            self.stats["duplicate"] += 1
            return False
        verdict = self.validate(v, sender)
        if verdict is Verdict.INVALID:
            self.stats["invalid"] += 1
            return False
        self.seen.add(v.id)
        if verdict is Verdict.KNOWN:
            self.stats["known"] += 1
            return False
        self.holdings.update(v.owner, v.key, v.seq)
        self.stats[counter] += 1
        return True

    # -- mesh upkeep ---------------------------------------------------------------------

    def heartbeat(self, candidates: Iterable[str]) -> list[Send]:
        """Keep the mesh in bounds from a fresh candidate list (the DHT lookup); it is
        only iterated when the mesh needs peers, so it may be lazy."""
        added, removed = self.mesh.refresh(candidates)
        return [(p, wire.graft()) for p in added] + [(p, wire.prune()) for p in removed]

    def send_failed(self, peer: str) -> None:
        """The transport could not deliver to ``peer`` (refused, timed out)."""
        if self.mesh.failed(peer):
            self.stats["dropped_peer"] += 1

    def delivered(self, peer: str) -> None:
        self.mesh.succeeded(peer)

    # -- anti-entropy --------------------------------------------------------------------

    def anti_entropy(self) -> list[Send]:
        """Start one exchange: the next page of our digests to one random neighbour."""
        members = self.mesh.members()
        if not members:
            return []
        peer = self.rng.choice(members)
        start = self._cursor
        digests, end, nxt = self.holdings.page(start, self.params.digest_page)
        self._cursor = nxt or ""
        self.stats["digest_sent"] += 1
        return [(peer, wire.digest(start, end, digests))]

    def _may_answer(self, sender: str, kind: str) -> bool:
        """At most one answer per peer and kind per ``answer_interval_s`` (an honest
        peer asks once per anti-entropy round), so nobody can make us a traffic
        amplifier. Bounded: old marks are swept once there are many."""
        now = self.mesh.clock()
        interval = self.params.answer_interval_s
        last = self._answered.get((sender, kind))
        if last is not None and now - last < interval:
            self.stats["refused_" + kind] += 1
            return False
        if len(self._answered) >= MAX_ANSWERED:
            self._answered = {k: t for k, t in self._answered.items() if now - t < interval}
        self._answered[(sender, kind)] = now
        return True

    def _digest(self, sender: str, message: wire.DigestMsg) -> list[Send]:
        """A peer's digests: our per-key seqs for every owner in its range that differs."""
        owners = digest.differing(self.holdings, message.start, message.end, message.owners)
        out: dict[str, dict[str, int]] = {}
        spans: dict[str, tuple[str, str]] = {}
        budget = wire.MAX_ENTRIES
        for owner in owners:
            held = self.holdings.entries(owner)
            if len(out) >= wire.MAX_ENTRY_OWNERS or len(held) > budget:
                if out:
                    break  # the rest next round: digests keep differing until repaired
                held, spans[owner] = self._window(owner, held, budget)  # larger than a message
            out[owner] = held
            budget -= len(held)
        return [(sender, wire.entries(out, spans))] if out else []

    def _window(
        self, owner: str, held: dict[str, int], size: int
    ) -> tuple[dict[str, int], tuple[str, str]]:
        """The next ``size`` keys of a big owner, and the span they cover. Successive
        windows walk the owner's keys and wrap, so ``len / size`` exchanges cover it
        all; the receiver judges only that span (a key outside it is not missing
        here, just not listed)."""
        keys = sorted(held)
        start = self._windows.pop(owner, "")
        i = bisect.bisect_left(keys, start)
        if i >= len(keys):
            i = 0
        chosen = keys[i : i + size]
        if i + size < len(keys):
            if len(self._windows) >= MAX_WINDOWS:
                self._windows.clear()  # only costs some repeated windows
            self._windows[owner] = keys[i + size]
        return {k: held[k] for k in chosen}, (chosen[0], chosen[-1])

    def _entries(self, sender: str, message: wire.EntriesMsg) -> list[Send]:
        """The peer's seqs for owners that differ: ask for what is newer there, send what
        is newer here."""
        wanted: list[tuple[str, str]] = []
        pushed: list[Version] = []
        for owner, theirs in message.owners.items():
            mine = self.holdings.entries(owner)
            span = message.spans.get(owner)
            if span is not None:
                mine = {k: s for k, s in mine.items() if span[0] <= k <= span[1]}
            request, send = digest.compare(mine, theirs)
            wanted.extend((owner, k) for k in request)
            for k in send:
                if len(pushed) >= self.params.max_push:
                    break
                v = self.lookup(owner, k)
                if v is not None:
                    pushed.append(v)
        sends: list[Send] = []
        if wanted:
            sends.append((sender, wire.want(wanted[: wire.MAX_WANT])))
            self.stats["wanted"] += min(len(wanted), wire.MAX_WANT)
        sends.extend(self._versions(sender, pushed))
        return sends

    def _want(self, sender: str, items: list[tuple[str, str]]) -> list[Send]:
        found = [v for v in (self.lookup(o, k) for o, k in items) if v is not None]
        return self._versions(sender, found)

    def _versions(self, peer: str, vs: list[Version]) -> list[Send]:
        """``vs`` in as few ``versions`` messages as fit the body limit (JSON escaping can
        make a 1000-byte ``v`` six times larger, so count alone is not enough)."""
        self.stats["repair_sent"] += len(vs)
        sends: list[Send] = []
        batch: list[Version] = []
        size = 0
        for v in vs:
            n = wire.size(v)
            if batch and (len(batch) >= wire.MAX_VERSIONS or size + n > wire.VERSIONS_BUDGET):
                sends.append((peer, wire.versions(batch)))
                batch, size = [], 0
            batch.append(v)
            size += n
        if batch:
            sends.append((peer, wire.versions(batch)))
        return sends
