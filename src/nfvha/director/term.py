"""Whether the director may decide right now (ADR 0013, 0014).

A single controller's director always may. A cluster member's director may while its
member leads: the member says so with every lease renewal (``term``: the epoch, and
``decide_until`` = the lease's validity minus the margin), and the director checks
its own clock against that deadline at every action. CLOCK_MONOTONIC is one clock
for every process of the machine, and the director runs beside its member: a member
that stalls or dies stops its director's decisions in time, with no message needed.
"""

from __future__ import annotations

from nfvha.util.clock import Clock
from nfvha.wire.director import Term


class TermGate:
    """``LeaderGate`` of the director's availability manager and liveness."""

    def __init__(self, clock: Clock, *, single: bool) -> None:
        self._clock = clock
        self.single = single
        self._epoch = 0
        self._until_ns = 0
        self.leader_key = ""

    @property
    def epoch(self) -> int:
        return 0 if self.single else self._epoch

    @property
    def decide_until_ns(self) -> int:
        return self._until_ns

    def is_leader(self) -> bool:
        return self.single or (self._epoch > 0 and self._clock.mono_ns() < self._until_ns)

    def update(self, term: Term) -> None:
        """A newer or equal epoch replaces what we know; a lower one is stale. Epoch 0
        ends the current term at once."""
        if term.epoch == 0:
            self._epoch, self._until_ns = 0, 0
            return
        if term.epoch < self._epoch:
            return
        if term.epoch > self._epoch:
            self.leader_key = term.leader_key
        self._epoch = term.epoch
        self._until_ns = term.decide_until_mono_ns
