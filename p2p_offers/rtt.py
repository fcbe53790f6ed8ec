"""Retransmission timeouts that follow each contact's measured round trip (RFC 6298).

A fixed RPC timeout tuned for loopback (250 ms) declares every peer dead once
the round trip passes it, and on a lossy link one lost datagram does the same
to a live peer. So each contact gets TCP's estimator instead:

- the first sample R sets ``SRTT = R`` and ``RTTVAR = R / 2``; later samples
  update ``RTTVAR = 3/4 RTTVAR + 1/4 |SRTT - R|`` then ``SRTT = 7/8 SRTT + 1/8 R``;
- ``RTO = SRTT + max(G, 4 RTTVAR)``, kept within ``[min_s, max_s]``;
- before any sample the RTO is ``initial_s`` (RFC 6298 says 1 s);
- on a timeout the RTO doubles (up to ``max_s``) until the next sample;
- Karn's rule: a reply to a request that was sent more than once is no
  sample (it cannot be told which copy it answers), the caller passes
  ``retransmitted=True`` and only the backed-off RTO is kept.

Pure: no clock, no I/O; the caller measures and reports. ``RtoTable`` keeps
one estimator per contact address, bounded in size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

ALPHA = 1 / 8
BETA = 1 / 4
K = 4
GRANULARITY_S = 0.001


@dataclass
class Rto:
    """One contact's estimator; every time is in seconds."""

    min_s: float = 0.25
    max_s: float = 8.0
    initial_s: float = 1.0
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: int = 0  # timeouts in a row since the last sample

    @property
    def timeout(self) -> float:
        """How long to wait for the next reply before resending (or giving up)."""
        if self.srtt is None:
            base = max(self.initial_s, self.min_s)
        else:
            base = self.srtt + max(GRANULARITY_S, K * self.rttvar)
        return min(self.max_s, max(self.min_s, base) * 2**self.backoff)

    def sample(self, rtt_s: float, retransmitted: bool = False) -> None:
        """A reply came ``rtt_s`` after its request was (last) sent."""
        if retransmitted or not rtt_s >= 0:  # Karn; and a NaN or negative clock reading
            return
        if self.srtt is None:
            self.srtt, self.rttvar = rtt_s, rtt_s / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt_s)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * rtt_s
        self.backoff = 0

    def timed_out(self) -> None:
        """No reply within ``timeout``: back off (the RTO doubles, up to ``max_s``)."""
        if self.timeout < self.max_s:
            self.backoff += 1


class RtoTable:
    """An ``Rto`` per contact, the least recently used dropped beyond ``limit``."""

    def __init__(
        self,
        min_s: float = 0.25,
        max_s: float = 8.0,
        initial_s: float = 1.0,
        limit: int = 10_000,
    ) -> None:
        if not 0 < min_s <= max_s or initial_s <= 0:
            raise ValueError("need 0 < min_s <= max_s and initial_s > 0")
        self.min_s, self.max_s, self.initial_s = min_s, max_s, initial_s
        self.limit = limit
        self._rtos: OrderedDict[Hashable, Rto] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rtos)

    def get(self, contact: Hashable) -> Rto:
        rto = self._rtos.get(contact)
        if rto is None:
            rto = Rto(self.min_s, self.max_s, self.initial_s)
            self._rtos[contact] = rto
            if len(self._rtos) > self.limit:
                self._rtos.popitem(last=False)
        else:
            self._rtos.move_to_end(contact)
        return rto

    def timeout(self, contact: Hashable) -> float:
        return self.get(contact).timeout

    def sample(self, contact: Hashable, rtt_s: float, retransmitted: bool = False) -> None:
        self.get(contact).sample(rtt_s, retransmitted)

    def timed_out(self, contact: Hashable) -> None:
        self.get(contact).timed_out()
