"""Hang judgment of the guest link: by pings actually sent and left unanswered."""

from __future__ import annotations

from pathlib import Path

from nfvha.agent.guestlink import GuestLink
from nfvha.util.clock import ManualClock

MS = 1_000_000


class NullHandler:
    async def guest_event(self, vm: str, event: object) -> None: ...
    def guest_state(self, vm: str, vnfcs: object) -> None: ...
    def guest_hung(self, vm: str, detected_mono_ns: int) -> None: ...
    def guest_responsive(self, vm: str) -> None: ...


def link(clock: ManualClock) -> GuestLink:
    return GuestLink("vm1", Path("/nonexistent"), clock, 100, 3, NullHandler())  # type: ignore[arg-type]


def test_three_missed_pings_make_a_hang() -> None:
    clock = ManualClock()
    g = link(clock)
    t0 = clock.mono_ns()
    g._unanswered = [(1, t0), (2, t0 + 100 * MS), (3, t0 + 200 * MS)]
    assert not g.missed_enough(t0 + 224 * MS)  # the third ping is not yet late
    assert g.missed_enough(t0 + 225 * MS)


def test_a_stalled_agent_does_not_take_its_own_delay_for_a_hang() -> None:
    """The agent's loop stalled for a second: it sent no pings meanwhile, so after the
    stall only the one ping it just sent is unanswered - not a hang."""
    clock = ManualClock()
    g = link(clock)
    wake = clock.mono_ns() + 1000 * MS
    g._unanswered = [(7, wake)]
    assert not g.missed_enough(wake + 150 * MS)


def test_a_pong_answers_its_ping_and_every_earlier_one() -> None:
    clock = ManualClock()
    g = link(clock)
    t0 = clock.mono_ns()
    g._unanswered = [(1, t0), (2, t0 + 100 * MS), (3, t0 + 200 * MS), (4, t0 + 300 * MS)]
    g._unanswered = [(k, t) for k, t in g._unanswered if k > 3]  # what a pong n=3 does
    assert not g.missed_enough(t0 + 400 * MS)
