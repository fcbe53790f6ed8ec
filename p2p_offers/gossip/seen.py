"""Which versions this node has already handled: a bounded, expiring set of (hash, seq).

This is what makes a node forward a version once and drop the copies its other
neighbours send (in a mesh of degree D each node receives up to D of them). It
is an optimisation, not the safety net: once an entry expires or is evicted, a
late copy goes to the validator again, which refuses it as not newer than what
is held, so it is still not forwarded. Hence both bounds can be small: the TTL
only has to outlast a version's spread through the mesh (seconds), and the
capacity the versions arriving within one TTL.

Only versions that validated are added (the router's rule): a forged record
carrying someone's (hash, seq) must not shadow the real one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

SeenKey = tuple[str, int]


class SeenCache:
    def __init__(self, ttl_s: float, capacity: int, clock: Callable[[], float]) -> None:
        if ttl_s <= 0 or capacity <= 0:
            raise ValueError("ttl_s and capacity must be positive")
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        # Insertion order is expiry order: one TTL for all, and the clock does not go back.
        self._expires: OrderedDict[SeenKey, float] = OrderedDict()
        self.evicted = 0  # dropped for room before expiring: capacity too small if it grows

    def __contains__(self, key: object) -> bool:
        expires = self._expires.get(key)  # type: ignore[call-overload]
        return expires is not None and expires > self.clock()

    def add(self, key: SeenKey) -> bool:
        """Remember ``key``; False if it was already there (and still fresh)."""
        now = self.clock()
        self._expire(now)
        if key in self._expires:
            return False
        while len(self._expires) >= self.capacity:
            self._expires.popitem(last=False)
            self.evicted += 1
        self._expires[key] = now + self.ttl_s
        return True

    def __len__(self) -> int:
        self._expire(self.clock())
        return len(self._expires)

    def _expire(self, now: float) -> None:
        while self._expires:
            key, expires = next(iter(self._expires.items()))
            if expires > now:
                return
            del self._expires[key]
