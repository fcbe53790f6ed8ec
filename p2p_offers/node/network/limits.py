"""How much one peer may push at us: a token bucket per peer address (docs/limits.md).

Announcements are hints that cost the receiver a signature check per record (and
a DHT get per hash-only item), so a peer that pushes without pause could keep a
node verifying forever. Each push (one request, at most 64 KiB: ~120 records)
takes a token from its sender address's bucket; an empty bucket refuses the
push, whose records are then counted ``rate_limited`` and not looked at. The
defaults are far above honest traffic: a publisher pushes one batch per peer
per round, so a 10,000-offer burst from one node is ~85 pushes, inside the
burst of 1,000 even when every node of a test network shares 127.0.0.1.
Records refused so still arrive by sync, which we pull, at our pace.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_PUSH_RATE = 200.0  # pushes per second per peer address, sustained
DEFAULT_PUSH_BURST = 1000  # pushes a quiet peer may send at once
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

    def allow(self, address: str) -> bool:
        """Take one token from ``address``'s bucket; False (nothing taken) if it is empty."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[address] = (tokens - 1.0 if allowed else tokens, now)
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
