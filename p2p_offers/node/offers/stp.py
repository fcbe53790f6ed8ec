"""Self-trade prevention: what to do when a new offer of ours would cross our own resting ones."""

from __future__ import annotations

from enum import StrEnum


class Stp(StrEnum):
    """Without one, such an offer is refused ``self_cross``; this one cancels them first."""

    CANCEL_RESTING = "cancel_resting"
