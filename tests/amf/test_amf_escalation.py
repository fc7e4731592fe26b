"""Escalation counting (UC-9): restarts within a probation window, then VM repair, then host."""

from __future__ import annotations

import pytest

from nfvha.amf.escalation import EscalationTracker
from nfvha.amf.model import Recommendation
from nfvha.model.topology import EscalationPolicy, EscalationStep
from nfvha.util.clock import ManualClock

RESTART = Recommendation.COMPONENT_RESTART
FAILOVER = Recommendation.COMPONENT_FAILOVER
VM_REPAIR = Recommendation.NODE_FAILOVER
HOST_REPAIR = Recommendation.NODE_FAILFAST


def tracker(restart_max: int = 3, restart_s: float = 60, vm_max: int = 2,
            vm_s: float = 300) -> tuple[EscalationTracker, ManualClock]:
    clock = ManualClock()
    policy = EscalationPolicy(vnfc_restart=EscalationStep(max=restart_max, probation_s=restart_s),
                              vm_repair=EscalationStep(max=vm_max, probation_s=vm_s))
    return EscalationTracker(policy, clock), clock


@pytest.mark.req("UC-9")
def test_max_restarts_then_the_next_failure_asks_for_a_vm_repair() -> None:
    t, clock = tracker(restart_max=3)
    got = []
    for _ in range(4):
        got.append(t.record_component_failure("gw-a", "vm1", has_standby=False))
        clock.advance(10)
    assert got == [RESTART, RESTART, RESTART, VM_REPAIR]
    assert t.component_failures("gw-a") == 0  # escalating resets the level
    assert t.vm_failures("vm1") == 1


@pytest.mark.req("UC-9")
def test_repeated_vm_repairs_escalate_to_the_host() -> None:
    t, clock = tracker(restart_max=1, vm_max=2)
    got = []
    for _ in range(6):  # every second component failure escalates to the VM
        got.append(t.record_component_failure("gw-a", "vm1", has_standby=True, host="h1"))
        clock.advance(1)
    assert got == [FAILOVER, VM_REPAIR, FAILOVER, VM_REPAIR, FAILOVER, HOST_REPAIR]


def test_a_standby_turns_restarts_into_failovers() -> None:
    t, _ = tracker()
    assert t.record_component_failure("gw-a", "vm1", has_standby=True) is FAILOVER


def fail_at(t: EscalationTracker, clock: ManualClock, times: list[float]) -> list[Recommendation]:
    """Failures of gw-a at ``times`` seconds after the tracker was made."""
    out, now = [], 0.0
    for when in times:
        clock.advance(when - now)
        now = when
        out.append(t.record_component_failure("gw-a", "vm1", has_standby=False))
    return out


def test_the_window_starts_at_the_first_failure() -> None:
    t, clock = tracker(restart_max=3, restart_s=60)
    assert fail_at(t, clock, [0, 29, 58, 59.5]) == [RESTART, RESTART, RESTART, VM_REPAIR]


def test_the_end_of_the_window_resets_the_count() -> None:
    t, clock = tracker(restart_max=3, restart_s=60)
    # A window opened at the 2nd failure (29 s) would still hold three at 61 s.
    assert fail_at(t, clock, [0, 29, 58, 61]) == [RESTART] * 4
    assert t.component_failures("gw-a") == 1
    clock.advance(60.5)
    assert t.component_failures("gw-a") == 0


def test_max_zero_escalates_at_once() -> None:
    t, _ = tracker(restart_max=0, vm_max=0)
    assert t.record_component_failure("gw-a", "vm1", has_standby=True) is HOST_REPAIR


def test_components_and_vms_are_counted_apart() -> None:
    t, _ = tracker(restart_max=1, vm_max=1)
    assert t.record_component_failure("gw-a", "vm1", has_standby=False) is RESTART
    assert t.record_component_failure("gw-b", "vm1", has_standby=False) is RESTART
    assert t.record_component_failure("gw-a", "vm1", has_standby=False) is VM_REPAIR
    assert t.record_vm_failure("vm2", "h1") is VM_REPAIR
    assert t.record_component_failure("gw-b", "vm1", has_standby=False) is HOST_REPAIR


def test_a_vm_rebuilt_on_another_host_starts_afresh() -> None:
    t, _ = tracker(vm_max=1)
    assert t.record_vm_failure("vm1", "h1") is VM_REPAIR
    assert t.record_vm_failure("vm1", "h2") is VM_REPAIR
    assert t.record_vm_failure("vm1", "h1") is HOST_REPAIR


def test_vm_window_expiry_resets_the_vm_count() -> None:
    t, clock = tracker(vm_max=1, vm_s=300)
    assert t.record_vm_failure("vm1", "h1") is VM_REPAIR
    clock.advance(300.5)
    assert t.vm_failures("vm1", "h1") == 0
    assert t.record_vm_failure("vm1", "h1") is VM_REPAIR
