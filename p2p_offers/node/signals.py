"""``Signal``: the one way a part of the node tells others that something happened.

A part owns its signals and emits them; ``wiring`` connects the listeners, all
in one place, so what reacts to what is read in one block rather than found in
constructors. Listeners run on the emitting thread, in the order connected; an
exception propagates to the emitter (a listener that must not disturb it, such
as one run after a commit, is called through ``Tx.after_commit``, which logs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, ParamSpec

P = ParamSpec("P")


class Signal(Generic[P]):
    __slots__ = ("_slots", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._slots: list[Callable[P, object]] = []

    def connect(self, slot: Callable[P, object]) -> None:
        self._slots.append(slot)

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        for slot in self._slots:
            slot(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Signal({self.name!r}, {len(self._slots)} listeners)"
