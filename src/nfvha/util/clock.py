"""Injected time.

Every component takes a ``Clock`` instead of calling ``time`` directly, so ageing,
liveness and escalation logic can be unit-tested without sleeping.  ``mono_ns`` is
CLOCK_MONOTONIC, which on Linux is one clock for every process on the machine: the
benchmark compares a fault's injection time in one process with an event's arrival
time in another.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def mono_ns(self) -> int: ...

    def wall(self) -> float: ...


class SystemClock:
    def mono_ns(self) -> int:
        return time.monotonic_ns()

    def wall(self) -> float:
        return time.time()


class ManualClock:
    """A clock that moves only when told to (for tests)."""

    def __init__(self, mono_ns: int = 1_000_000_000, wall: float = 1_800_000_000.0) -> None:
        self._mono_ns = mono_ns
        self._wall = wall

    def mono_ns(self) -> int:
        return self._mono_ns

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        self._mono_ns += int(seconds * 1e9)
        self._wall += seconds


SYSTEM_CLOCK = SystemClock()
