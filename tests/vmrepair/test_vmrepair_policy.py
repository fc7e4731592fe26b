"""The VM repair policy (ADR 0010) against a fake agent port and a manual clock: one
repair per failure whoever asks, and each repair_action doing what it says."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from nfvha.amf.ports import RepairOutcome, RepairRefused
from nfvha.controller.vmrepair import VmRepairPolicy
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.topology import Topology, parse_topology
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import CommandOp, Reply

TOPOLOGY: dict[str, Any] = {
    "name": "repairs",
    "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                       {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [
        {"name": "v-conf", "host": "h1"},
        {"name": "v-init", "host": "h1"},
        {"name": "v-snap", "host": "h2"},
        {"name": "v-fo", "host": "h1"},
        {"name": "v-fo-sb", "host": "h2", "standby_for": "v-fo"},
        {"name": "v-free", "host": "h2"},
    ],
    "vnfs": [
        {"name": name, "redundancy": "none", "stateful": False, "repair_action": action,
         "components": [{"name": f"{name}-1", "vm": vm}]}
        for name, vm, action in (("conf", "v-conf", "confirm"),
                                 ("init", "v-init", "restart-initial"),
                                 ("snap", "v-snap", "restart-snapshot"),
                                 ("fo", "v-fo", "failover-standby-vm"))
    ],
}
SNAPSHOT_S = 30.0
_ids = itertools.count(100)


def topology() -> Topology:
    return parse_topology(TOPOLOGY, "test")


class FakeAgents:
    """Records every command; with ``permits`` each waits for one; ``refuse`` fails an op."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, object]]] = []
        self.permits: asyncio.Semaphore | None = None
        self.refuse: set[str] = set()

    def ops(self) -> list[tuple[str, str, str]]:
        return [(host, op, target) for host, op, target, _ in self.calls]

    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply:
        self.calls.append((host, op, target, dict(args or {})))
        if self.permits is not None:
            await self.permits.acquire()
        if op in self.refuse:
            return Reply(id=1, ok=False, error=f"{op} refused")
        if op == "vm.start":
            return Reply(id=1, ok=True, result={
                "vm": target, "ready": True, "data_ip": f"198.18.0.{len(target)}",
                "disk": {"mode": (args or {}).get("disk")}})
        if op == "vm.snapshot":
            return Reply(id=1, ok=True, result={"vm": target, "snapshot": {
                "taken": 5.0, "files": 1, "bytes": 10}})
        return Reply(id=1, ok=True, result={"vm": target, "stopped": True})


class Bed:
    def __init__(self, host_up: Callable[[str], bool] | None = None) -> None:
        self.clock = ManualClock()
        self.agents = FakeAgents()
        self.published: list[Event] = []
        self.policy = VmRepairPolicy(topology(), self.agents, self.publish, self.clock,
                                     host_up=host_up, snapshot_interval_s=SNAPSHOT_S,
                                     max_auto_repairs=3, auto_repair_window_s=300.0)

    async def publish(self, events: list[Event]) -> None:
        self.published.extend(events)

    def event(self, kind: Kind, vm: str) -> StoredEvent:
        ev = StoredEvent(host=self.policy.host_of(vm), seq=1, kind=kind, entity=f"vm/{vm}",
                         severity=Severity.CRITICAL, event_type=EventType.PROCESSING_ERROR_ALARM,
                         probable_cause="test", event_time=self.clock.wall(),
                         detected_mono_ns=self.clock.mono_ns(), id=next(_ids),
                         received_time=self.clock.wall(), received_mono_ns=self.clock.mono_ns())
        self.policy.on_events([ev])
        return ev

    async def outcome(self, vm: str) -> RepairOutcome:
        job = self.policy.job(vm)
        assert job is not None, f"no repair of {vm} under way"
        return await job.outcome()


@pytest.fixture
def bed() -> Bed:
    return Bed()


@pytest.mark.req("REC-2")
@pytest.mark.req("VNFHA-10")
async def test_confirm_waits_for_the_ask_and_repairs_each_failure_once(bed: Bed) -> None:
    crash = bed.event(Kind.VM_CRASHED, "v-conf")
    assert bed.policy.job("v-conf") is None and bed.agents.calls == []
    st = bed.policy.status_of("v-conf")
    assert (st.state, st.failure_event, st.repair_action) == (
        "awaiting-confirmation", crash.id, "confirm")
    ticket = bed.policy.repair_vm("v-conf", requested_by="api", failure=crash.id)
    assert ticket.how == "started" and ticket.job is not None
    done = await ticket.job.outcome()
    # A crashed VM is not stopped first; it is replaced in its initial state.
    assert bed.agents.calls == [("h1", "vm.start", "v-conf", {"disk": "initial"})]
    assert (done.ok, done.action, done.requested_by, done.failure_event) == (
        True, "restart-initial", "api", crash.id)
    [ev] = bed.published
    assert ev.kind == Kind.VM_REPAIRED and ev.clears and ev.entity == "vm/v-conf"
    # The same failure asked about again (a slow manager, a retry): not repaired twice.
    again = bed.policy.repair_vm("v-conf", requested_by="api", failure=crash.id)
    assert again.how == "resolved" and again.job is None and again.last == done
    assert len(bed.agents.calls) == 1
    assert bed.policy.status_of("v-conf").state == "ok"


@pytest.mark.req("REC-2")
@pytest.mark.req("VNFHA-13")
@pytest.mark.req("VNFHA-10")
async def test_restart_initial_repairs_by_itself_and_a_vnfm_ask_joins(bed: Bed) -> None:
    crash = bed.event(Kind.VM_CRASHED, "v-init")
    job = bed.policy.job("v-init")
    assert job is not None and job.requested_by == "policy"
    ask = bed.policy.repair_vm("v-init", requested_by="vnfm", failure=crash.id)
    assert ask.how == "joined" and ask.job is job
    done = await bed.outcome("v-init")
    assert bed.agents.calls == [("h1", "vm.start", "v-init", {"disk": "initial"})]
    assert done.ok and done.replacement == "v-init" and done.disk == {"mode": "initial"}


@pytest.mark.req("REC-2")
async def test_a_hung_vm_is_stopped_before_anything_starts(bed: Bed) -> None:
    seen: list[list[tuple[str, str, str]]] = []
    bed.agents.permits = asyncio.Semaphore(0)
    bed.event(Kind.VM_HUNG, "v-init")
    job = bed.policy.job("v-init")
    assert job is not None
    job.when_stopped(lambda: seen.append(bed.agents.ops()))
    for _ in range(2):  # the stop, then the start
        bed.agents.permits.release()
    done = await job.outcome()
    # The callback ran after the stop and before the start was sent.
    assert seen == [[("h1", "vm.stop", "v-init")]]
    assert bed.agents.ops() == [("h1", "vm.stop", "v-init"), ("h1", "vm.start", "v-init")]
    assert done.stopped_first


@pytest.mark.req("REC-2")
async def test_restart_snapshot_boots_from_the_snapshot_taken_periodically(bed: Bed) -> None:
    await bed.policy.tick()
    assert bed.agents.calls == []  # not due before one interval
    bed.clock.advance(SNAPSHOT_S + 1)
    await bed.policy.tick()
    # Only the serving VM of the restart-snapshot VNF, on its host.
    assert bed.agents.ops() == [("h2", "vm.snapshot", "v-snap")]
    assert bed.policy.status_of("v-snap").last_snapshot == {"taken": 5.0, "files": 1,
                                                              "bytes": 10}
    await bed.policy.tick()
    assert len(bed.agents.calls) == 1  # the next one is an interval later
    bed.agents.calls.clear()
    bed.event(Kind.VM_CRASHED, "v-snap")
    done = await bed.outcome("v-snap")
    assert bed.agents.calls == [("h2", "vm.start", "v-snap", {"disk": "snapshot"})]
    assert done.ok and done.action == "restart-snapshot"


@pytest.mark.req("REC-2")
@pytest.mark.req("HV-7")
async def test_failover_starts_the_standby_and_swaps_the_roles(bed: Bed) -> None:
    bed.event(Kind.VM_CRASHED, "v-fo")
    done = await bed.outcome("v-fo")
    assert bed.agents.calls == [("h2", "vm.start", "v-fo-sb", {"disk": "initial"})]
    assert (done.replacement, done.replacement_host, done.replacement_address) == (
        "v-fo-sb", "h2", "198.18.0.7")
    assert bed.policy.serving_vm("v-fo") == "v-fo-sb"
    assert [bed.policy.status_of(v).role for v in ("v-fo", "v-fo-sb")] == ["standby", "serving"]
    # The failed VM is now the standby: nothing of it is repaired or asked for.
    with pytest.raises(RepairRefused, match="standby"):
        bed.policy.repair_vm("v-fo", requested_by="api")
    # The standby-turned-serving VM hangs: it is killed, and the old one takes over.
    bed.agents.calls.clear()
    bed.event(Kind.VM_HUNG, "v-fo-sb")
    back = await bed.outcome("v-fo-sb")
    assert bed.agents.ops() == [("h2", "vm.stop", "v-fo-sb"), ("h1", "vm.start", "v-fo")]
    assert back.replacement == "v-fo" and bed.policy.serving_vm("v-fo") == "v-fo"


@pytest.mark.req("HV-7")
async def test_failover_to_a_standby_whose_host_is_down_restarts_in_place() -> None:
    bed = Bed(host_up=lambda host: host != "h2")
    bed.event(Kind.VM_CRASHED, "v-fo")
    done = await bed.outcome("v-fo")
    assert bed.agents.calls == [("h1", "vm.start", "v-fo", {"disk": "initial"})]
    assert done.ok and done.replacement == "v-fo" and "h2 is down" in (done.fallback or "")
    assert bed.policy.serving_vm("v-fo") == "v-fo"


async def test_an_ask_may_choose_another_action_within_what_exists(bed: Bed) -> None:
    with pytest.raises(RepairRefused, match="no standby"):
        bed.policy.repair_vm("v-conf", requested_by="api", action="failover-standby-vm")
    # A VM of no VNF, asked for without a failure: a running VM, stopped and replaced.
    t = bed.policy.repair_vm("v-free", requested_by="api")
    assert t.job is not None and (await t.job.outcome()).action == "restart-initial"
    assert bed.agents.ops() == [("h2", "vm.stop", "v-free"), ("h2", "vm.start", "v-free")]
    t = bed.policy.repair_vm("v-conf", requested_by="api", action="restart-snapshot")
    assert t.job is not None and (await t.job.outcome()).action == "restart-snapshot"
    with pytest.raises(KeyError, match="no VM named"):
        bed.policy.repair_vm("v-nope", requested_by="api")


async def test_a_failed_repair_is_announced_and_leaves_the_failure_pending(bed: Bed) -> None:
    stopped: list[bool] = []
    bed.agents.refuse.add("vm.stop")
    hang = bed.event(Kind.VM_HUNG, "v-init")
    job = bed.policy.job("v-init")
    assert job is not None
    job.when_stopped(lambda: stopped.append(True))
    done = await job.outcome()
    assert not done.ok and "vm.stop refused" in (done.error or "")
    # A hung VM that could not be stopped may thaw: nobody is told it is gone.
    assert stopped == []
    assert bed.agents.ops() == [("h1", "vm.stop", "v-init")]
    [ev] = bed.published
    assert not ev.clears and ev.informational
    st = bed.policy.status_of("v-init")
    assert (st.state, st.failure_event) == ("repair-failed", hang.id)


async def test_a_vm_that_keeps_failing_is_given_up_until_someone_asks(bed: Bed) -> None:
    for _ in range(3):
        bed.event(Kind.VM_CRASHED, "v-init")
        assert (await bed.outcome("v-init")).ok
        bed.clock.advance(1)
    crash = bed.event(Kind.VM_CRASHED, "v-init")
    assert bed.policy.job("v-init") is None
    assert bed.policy.status_of("v-init").state == "gave-up"
    assert len(bed.agents.calls) == 3
    t = bed.policy.repair_vm("v-init", requested_by="api", failure=crash.id)
    assert t.how == "started"
    # After the window the budget is back.
    bed.clock.advance(301)
    await bed.outcome("v-init")
    bed.event(Kind.VM_CRASHED, "v-init")
    assert bed.policy.job("v-init") is not None


async def test_a_failure_during_the_repair_is_repaired_after_it(bed: Bed) -> None:
    bed.agents.permits = asyncio.Semaphore(0)
    bed.event(Kind.VM_CRASHED, "v-init")
    first = bed.policy.job("v-init")
    bed.event(Kind.VM_CRASHED, "v-init")  # e.g. it died again while booting
    assert bed.policy.job("v-init") is first
    bed.agents.permits.release()
    assert first is not None
    await first.outcome()
    second = bed.policy.job("v-init")
    assert second is not None and second is not first
    bed.agents.permits.release()
    await second.outcome()
    assert [op for _, op, _ in bed.agents.ops()] == ["vm.start", "vm.start"]


async def test_a_vm_running_again_by_itself_ends_its_pending_failure(bed: Bed) -> None:
    hang = bed.event(Kind.VM_HUNG, "v-conf")
    bed.event(Kind.VM_RESPONSIVE, "v-conf")  # thawed before anyone asked
    t = bed.policy.repair_vm("v-conf", requested_by="api", failure=hang.id)
    assert t.how == "resolved" and bed.agents.calls == []
    assert bed.policy.status_of("v-conf").state == "ok"
