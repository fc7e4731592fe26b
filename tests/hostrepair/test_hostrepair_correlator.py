"""UC-9 at the VIM: VM repair requests correlated per host, on a manual clock."""

from __future__ import annotations

import pytest

from nfvha.controller.correlator import RepairCorrelator, Verdict
from nfvha.model.settings import Settings
from nfvha.util.clock import ManualClock

pytestmark = pytest.mark.req("UC-9")


def correlator(clock: ManualClock, window_s: float = 60.0, min_vms: int = 2
               ) -> RepairCorrelator:
    return RepairCorrelator(Settings(host_repair_window_s=window_s,
                                     host_repair_min_vms=min_vms), clock)


def test_two_vms_of_one_host_within_the_window_repair_the_host() -> None:
    clock = ManualClock()
    c = correlator(clock)
    first = c.report("h1", "vm-a", "api")
    assert first.verdict is Verdict.REPAIR_VM and first.vms == ("vm-a",)
    clock.advance(59.0)
    second = c.report("h1", "vm-c", "vnfm")
    assert second.verdict is Verdict.REPAIR_HOST
    assert second.vms == ("vm-a", "vm-c")
    assert "2 VMs of host h1 within 60 s" in second.reason
    # While it is repaired, further requests for its VMs are part of that repair.
    assert c.report("h1", "vm-a", "api").verdict is Verdict.HOST_REPAIR_UNDER_WAY
    c.done("h1")
    assert c.report("h1", "vm-a", "api").verdict is Verdict.REPAIR_VM  # counted afresh


def test_requests_outside_the_window_or_on_other_hosts_do_not_add_up() -> None:
    clock = ManualClock()
    c = correlator(clock)
    assert c.report("h1", "vm-a", "api").verdict is Verdict.REPAIR_VM
    clock.advance(60.0)  # vm-a's request has expired
    assert c.report("h1", "vm-c", "api").verdict is Verdict.REPAIR_VM
    assert c.report("h2", "vm-b", "api").verdict is Verdict.REPAIR_VM
    assert c.reported("h1") == {"vm-c": clock.mono_ns()}
    # The same VM again and again is that VM's problem, not its host's.
    for _ in range(5):
        clock.advance(1.0)
        assert c.report("h2", "vm-b", "api").verdict is Verdict.REPAIR_VM


def test_threshold_is_configurable() -> None:
    clock = ManualClock()
    c = correlator(clock, window_s=10, min_vms=3)
    assert c.report("h1", "v1", "api").verdict is Verdict.REPAIR_VM
    assert c.report("h1", "v2", "api").verdict is Verdict.REPAIR_VM
    assert c.report("h1", "v3", "api").verdict is Verdict.REPAIR_HOST


def test_failfast_from_the_escalation_repairs_the_host_at_once() -> None:
    c = correlator(ManualClock())
    got = c.report("h1", "vm-a", "vnfm", failfast=True)
    assert got.verdict is Verdict.REPAIR_HOST and "node-failfast" in got.reason


def test_host_down_repair_absorbs_requests_and_only_one_repair_runs() -> None:
    c = correlator(ManualClock())
    assert c.begin("h1") is True
    assert c.begin("h1") is False
    assert c.report("h1", "vm-a", "api").verdict is Verdict.HOST_REPAIR_UNDER_WAY
    c.done("h1")
    assert not c.repairing("h1")
