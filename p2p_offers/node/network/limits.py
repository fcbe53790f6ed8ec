"""How much one peer may push at us: a token bucket per peer address (docs/limits.md).

Announcements are hints that cost the receiver a signature check per record (and
a DHT get per hash-only item), so a peer that pushes without pause could keep a
node verifying forever. A push takes a token per record from its sender
address's bucket (records, not requests: a request may carry one record or
~120); a push the bucket cannot pay for is refused whole, its records counted
``rate_limited`` and not looked at. Records refused so still arrive by sync,
which we pull, at our own pace.

The defaults are far above honest traffic: an honest node pushes each new
version once to each peer, and one node creates at most a few hundred offers a
second (each is a commit); a 10,000-offer burst fits in one bucket even on a
test network where every node pushes from 127.0.0.1. An attacker's address
costs us at most ~2,000 signature checks a second, a fraction of one core.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_PUSH_RATE = 2000.0  # records per second per peer address, sustained
DEFAULT_PUSH_BURST = 20_000  # records a quiet peer address may push at once
MAX_BUCKETS = 10_000  # addresses tracked; the fullest (idle longest) are dropped first


class PushLimiter:
    """Thread-safe token buckets, one per peer address (an IP; ports change per connection)."""

    def __init__(
        self,
        rate: float = DEFAULT_PUSH_RATE,
        burst: int = DEFAULT_PUSH_BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a push rate above 0 and a burst of at least 1 are needed")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str, cost: int = 1) -> bool:
        """Take ``cost`` tokens from ``address``'s bucket; False (nothing taken) if it has
        fewer (a refused push still refills while its sender waits)."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= cost
            self._buckets[address] = (tokens - cost if allowed else tokens, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_full(now)
            return allowed

    def _forget_full(self, now: float) -> None:
        """Drop buckets that refilled completely: forgetting them changes nothing."""
        refill = self.burst / self.rate
        self._buckets = {a: b for a, b in self._buckets.items() if now - b[1] < refill}
        if len(self._buckets) > MAX_BUCKETS:  # that many busy addresses: keep the latest half
            latest = sorted(self._buckets.items(), key=lambda item: item[1][1])
            self._buckets = dict(latest[-(MAX_BUCKETS // 2) :])
