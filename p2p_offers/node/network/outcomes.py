"""What became of a record another node sent us: the one list of intake outcomes."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    APPLIED = "applied"  # news: now held
    STALE = "stale"  # we hold this version or a newer one
    CONFLICT = "conflict"  # the id is bound to another owner
    EXPIRED = "expired"
    FORGED = "forged"  # the signature does not verify
    MISMATCH = "mismatch"  # the record is not at the address it was announced under
    MALFORMED = "malformed"
    UNKNOWN = "unknown"  # announced by hash, and the DHT has no such record
    UNAVAILABLE = "unavailable"  # the DHT could not be asked
    OWN = "own"  # one of ours: nobody can tell us news about it
    IMPLAUSIBLE = "implausible"  # signed times no live owner would sign
    DUPLICATE = "duplicate"  # the same hash twice in one batch
    OVER_LIMIT = "over_limit"  # beyond what one request may cost us
    OWNER_FULL = "owner_full"  # a new open offer of an owner holding the most we keep per owner
    RATE_LIMITED = "rate_limited"  # pushed by a peer faster than its bucket allows: not read
