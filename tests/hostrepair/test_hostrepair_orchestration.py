"""Host repair with fake fence devices and agents: the order of its steps (REC-1), the
VMs kept (HV-7), UC-9's correlation, and what it refuses to do."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from hostrepair_testutil import FakeAgents, FakeDriver, three_racks

from nfvha.agent.config import VmLaunch
from nfvha.controller.correlator import Verdict
from nfvha.controller.fencing import Fencing
from nfvha.controller.hostrepair import HostRepair
from nfvha.controller.placement import Placement
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.settings import Settings
from nfvha.nfvi.fence import FenceDriver
from nfvha.util.clock import ManualClock


class Rig:
    def __init__(self, tmp_path: Path, *, fenced: Iterable[str] = ("h1", "h2", "h3"),
                 up: Iterable[str] = ("h1", "h2", "h3"), power_on: bool = True) -> None:
        self.log: list[str] = []
        self.clock = ManualClock()
        self.topology = three_racks()
        self.drivers = {h: FakeDriver(self.log, h) for h in fenced}
        drivers: dict[str, FenceDriver] = dict(self.drivers)
        settings = Settings(fence_verify_interval_ms=10, host_repair_power_on=power_on)
        self.agents = FakeAgents(self.log)
        self.up = set(up)
        self.events: list[Event] = []
        self.placement = Placement(self.topology, tmp_path / "placement.json")
        launch = {v.name: VmLaunch(name=v.name, cpu=v.cpu, memory_mb=v.memory_mb,
                                   netns=None, data_ip="198.18.9.9") for v in self.topology.vms}
        self.repair = HostRepair(self.topology, settings, self.clock,
                                 Fencing(drivers, settings, self.clock), self.placement,
                                 self.agents, lambda: sorted(self.up), self.publish, launch)
        self.placed: list[tuple[str, str]] = []
        self.repair.on_placed(lambda vm, host: self.placed.append((vm, host)))

    async def publish(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.log.extend(f"event {e.kind.value} {e.entity}" for e in events)

    def host_down(self, host: str) -> None:
        self.up.discard(host)
        if host in self.drivers:
            self.drivers[host].state = "off"
        self.repair.on_events([StoredEvent(
            id=1, received_time=0.0, received_mono_ns=self.clock.mono_ns(),
            host=host, seq=0, origin="controller", kind=Kind.HOST_DOWN,
            entity=f"host/{host}", severity=Severity.CRITICAL,
            event_type=EventType.EQUIPMENT_ALARM, probable_cause="host-failure",
            description="fence device reports power off", event_time=0.0,
            detected_mono_ns=self.clock.mono_ns())])

    async def settled(self, repairs: int = 1) -> None:
        for _ in range(500):
            done = [r for r in self.repair.history if r.ended_mono_ns is not None]
            if len(done) >= repairs:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"host repair did not end: {self.log}")


@pytest.mark.req("REC-1")
@pytest.mark.req("HV-7")
async def test_host_down_is_fenced_before_its_vms_start_elsewhere(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.host_down("h1")
    await rig.settled()
    fenced_at = rig.log.index("fence-off h1")
    starts = [i for i, line in enumerate(rig.log) if line.startswith("vm.start")]
    assert len(starts) == 2 and min(starts) > rig.log.index("event host.fenced host/h1")
    assert rig.log.index("event host.fenced host/h1") > fenced_at
    # gw-a's VM avoids gw-b's host; db's VM goes to the least loaded host.
    assert rig.placement.host_of("vm-a") == "h3"
    assert rig.placement.host_of("vm-c") == "h2"
    assert sorted(rig.placed) == [("vm-a", "h3"), ("vm-c", "h2")]
    assert "vm.start vm-a on h3" in rig.log and "vm.start vm-c on h2" in rig.log
    # The new host is sent how to launch a VM it never had.
    assert rig.agents.args["vm-a"]["spec"]["name"] == "vm-a"  # type: ignore[index]
    rec = rig.repair.history[0]
    assert rec.moved == {"vm-a": "h3", "vm-c": "h2"} and rec.left == {}
    assert not rec.powered_on and "power-on h1" not in rig.log  # a failed host stays off
    assert [e.kind for e in rig.events].count(Kind.VM_EVACUATED) == 2


@pytest.mark.req("REC-1")
async def test_no_vm_moves_when_fencing_fails_or_there_is_no_fence(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.drivers["h1"].fail_off = True
    rig.host_down("h1")
    await rig.settled()
    assert not any(line.startswith("vm.start") for line in rig.log)
    assert Kind.HOST_FENCE_FAILED in [e.kind for e in rig.events]
    assert rig.placement.vms_on("h1") == ["vm-a", "vm-c"]
    assert "device unreachable" in (rig.repair.history[0].error or "")

    # Down by its peers' word, but nothing can isolate it: its VMs stay.
    unfenced = Rig(tmp_path, fenced=("h2", "h3"))
    unfenced.host_down("h1")
    await asyncio.sleep(0.05)
    assert unfenced.repair.history == [] and unfenced.log == []
    assert unfenced.repair.vm_repair_requested("vm-a", "api").verdict is Verdict.REPAIR_VM
    assert unfenced.repair.vm_repair_requested("vm-c", "api").verdict is Verdict.REPAIR_VM


@pytest.mark.req("HV-7")
async def test_a_vm_without_an_anti_affine_host_is_left_not_packed(tmp_path: Path) -> None:
    rig = Rig(tmp_path, up=("h1", "h2"))  # h3 is not up
    rig.host_down("h1")
    await rig.settled()
    rec = rig.repair.history[0]
    assert rec.left == {"vm-a": "no surviving host keeps its anti-affinity"}
    assert rec.moved == {"vm-c": "h2"}


@pytest.mark.req("UC-9")
async def test_several_vms_reported_repair_the_host_instead(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    first = rig.repair.vm_repair_requested("vm-a", "api")
    assert first.verdict is Verdict.REPAIR_VM and rig.log == []
    second = rig.repair.vm_repair_requested("vm-c", "api")
    assert second.verdict is Verdict.REPAIR_HOST
    # Absorbed while the repair runs: the VM is repaired with its host.
    assert rig.repair.vnfm_hook("vm-a", "vnfm", False) is True
    await rig.settled()
    assert rig.log.index("fence-off h1") < rig.log.index("vm.start vm-a on h3")
    assert rig.log[-1] == "power-on h1"  # repaired: back in service, empty
    assert rig.placement.vms_on("h1") == []
    kinds = [e.kind for e in rig.events]
    assert kinds[:2] == [Kind.HOST_REPAIR_STARTED, Kind.HOST_FENCED]
    # The liveness check's "host down" for the power-off it caused is not a new failure.
    rig.host_down("h1")
    await asyncio.sleep(0.05)
    assert len(rig.repair.history) == 1


@pytest.mark.req("UC-9")
async def test_failfast_escalation_repairs_the_host(tmp_path: Path) -> None:
    rig = Rig(tmp_path, power_on=False)
    assert rig.repair.vnfm_hook("vm-b", "vnfm escalation of gw-b", True) is True
    await rig.settled()
    assert rig.placement.host_of("vm-b") == "h3"  # not h1: gw-a's host
    assert "power-on h2" not in rig.log


@pytest.mark.req("REC-1")
async def test_a_cold_standby_vm_is_not_started_by_evacuation(tmp_path: Path) -> None:
    """A failover pair's stopped standby VM runs its partner's VNFCs once started:
    evacuating it would run them twice (ADR 0010/0011)."""
    rig = Rig(tmp_path)
    on_h1 = sorted(rig.placement.vms_on("h1"))
    cold = on_h1[0]
    rig.repair.use_cold_standby_check(lambda vm: vm == cold)
    rig.host_down("h1")
    await rig.settled()
    [rec] = rig.repair.history
    assert cold not in rec.moved and "cold standby" in rec.left[cold]
    started = [line for line in rig.log if line.startswith("vm.start")]
    assert not any(cold in line.split() for line in started)
    assert set(rec.moved) == set(on_h1) - {cold}
