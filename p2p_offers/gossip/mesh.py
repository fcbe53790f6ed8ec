"""The bounded set of neighbours a node gossips with (gossipsub's mesh, one topic).

Every version goes to at most ``d_high`` peers, whatever the size of the
network: that is the whole point. The set is kept between ``d_low`` and
``d_high`` and refilled to ``d`` from a candidate list (the DHT's
``p2p_offers:node`` lookup), at random so that the overlay is a random graph
(short paths, no hot spots, hard to eclipse by announcing many addresses first)
but deterministically given the injected RNG, so simulations and tests replay.

Links are made symmetric the gossipsub way: a node that adds a peer tells it
(GRAFT, via the router) and the peer keeps it unless it is full (then it
answers PRUNE). A symmetric mesh means a node that has just joined receives
gossip at once, rather than when others happen to pick it.

Peers that fail ``max_failures`` sends in a row are dropped, and a dropped or
pruned peer is not picked again for ``backoff_s`` (gossipsub's prune backoff),
so a dead address still listed by the DHT (announcements outlive their node by
up to the grape's ``--dpa``) does not churn back in at every refresh.

Except while the mesh is below ``d_low``: then a peer dropped for failed sends
(not one that pruned us) is tried again after ``retry_s``. A partition is what
empties a mesh that way, and without the retry the two halves of a healed
partition stayed apart until every backoff ran out (a 30 s cut on 6 hosts took
10 anti-entropy rounds to repair instead of 2: ``tests/test_testbed_partition.py``).
A full mesh never retries, so dead addresses still cost nothing there.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_CANDIDATES = 256  # a lookup answer is untrusted input too


@dataclass(frozen=True, slots=True)
class MeshParams:
    d: int = 6
    d_low: int = 4
    d_high: int = 8
    max_failures: int = 3
    backoff_s: float = 60.0
    retry_s: float = 2.0  # an undersized mesh retries peers dropped for failures this soon

    def __post_init__(self) -> None:
        if not 1 <= self.d_low <= self.d <= self.d_high:
            raise ValueError("need 1 <= d_low <= d <= d_high")
        if self.max_failures < 1 or self.backoff_s < 0 or self.retry_s < 0:
            raise ValueError("max_failures >= 1, backoff_s >= 0 and retry_s >= 0")


class Mesh:
    def __init__(
        self,
        me: str,
        params: MeshParams,
        rng: random.Random,
        clock: Callable[[], float],
    ) -> None:
        self.me = me
        self.params = params
        self.rng = rng
        self.clock = clock
        self._peers: dict[str, int] = {}  # peer -> consecutive failed sends
        self._backoff: dict[str, float] = {}  # peer -> not before this time
        self._failed: dict[str, float] = {}  # peer dropped for failed sends -> when

    def members(self) -> list[str]:
        """The neighbours, sorted (so that callers iterating them are deterministic)."""
        return sorted(self._peers)

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def refresh(self, candidates: Iterable[str]) -> tuple[list[str], list[str]]:
        """Bring the mesh back into [d_low, d_high]: returns (added, removed).

        Below ``d_low`` it is topped up to ``d`` from ``candidates`` not in the mesh
        and not backing off; above ``d_high`` (only after ``params`` shrank) it is
        cut back to ``d``. The caller GRAFTs the added and PRUNEs the removed.
        """
        now = self.clock()
        self._backoff = {p: t for p, t in self._backoff.items() if t > now}
        self._failed = {p: t for p, t in self._failed.items() if p in self._backoff}
        added: list[str] = []
        removed: list[str] = []
        p = self.params
        if len(self._peers) < p.d_low:
            listed = {
                c
                for _, c in zip(range(MAX_CANDIDATES), candidates, strict=False)
                if isinstance(c, str) and c != self.me and c not in self._peers
            }
            pool = sorted(c for c in listed if c not in self._backoff)
            added = self.rng.sample(pool, min(len(pool), p.d - len(self._peers)))
            retry = sorted(c for c in listed if self._failed.get(c, now) + p.retry_s <= now)
            added += self.rng.sample(retry, min(len(retry), p.d - len(self._peers) - len(added)))
            for peer in added:
                self._peers[peer] = 0
                self._backoff.pop(peer, None)
                self._failed.pop(peer, None)
        elif len(self._peers) > p.d_high:
            removed = self.rng.sample(self.members(), len(self._peers) - p.d)
            for peer in removed:
                self._drop(peer, now)
        return added, removed

    def graft(self, peer: str) -> bool:
        """A peer asks to be our neighbour: yes while there is room (and it is not
        backing off); False means the caller answers PRUNE."""
        if peer == self.me:
            return False
        if peer in self._peers:
            return True
        if len(self._peers) >= self.params.d_high or self._backoff.get(peer, 0) > self.clock():
            return False
        self._peers[peer] = 0
        return True

    def prune(self, peer: str) -> None:
        """The peer dropped us (or refused our GRAFT)."""
        if peer in self._peers:
            self._drop(peer, self.clock())

    def succeeded(self, peer: str) -> None:
        if peer in self._peers:
            self._peers[peer] = 0

    def failed(self, peer: str) -> bool:
        """A send to ``peer`` failed; True if that dropped it from the mesh."""
        if peer not in self._peers:
            return False
        self._peers[peer] += 1
        if self._peers[peer] >= self.params.max_failures:
            now = self.clock()
            self._drop(peer, now)
            self._failed[peer] = now
            return True
        return False

    def _drop(self, peer: str, now: float) -> None:
        del self._peers[peer]
        self._backoff[peer] = now + self.params.backoff_s
