"""The generic VNFM's side of host repair: its escalation goes to the VIM's correlator
(UC-9), and it follows a VM moved by an evacuation (HV-7)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hostrepair_testutil import three_racks

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.manager import AvailabilityManager
from nfvha.amf.model import Readiness
from nfvha.model.events import EventType, Kind, Severity, StoredEvent
from nfvha.model.settings import Settings
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.util.clock import ManualClock


class Port:
    """Records the component restarts; any VM repair is a failure of the test."""

    def __init__(self) -> None:
        self.restarts: list[str] = []

    async def restart_component(self, host: str, vnfc: str) -> None:
        self.restarts.append(vnfc)

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None:
        self.restarts.append(vnfc)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the VNFM asked for {name}: the VIM repairs the host")


def stored(kind: Kind, entity: str, host: str, n: int) -> StoredEvent:
    return StoredEvent(id=n, received_time=0.0, received_mono_ns=0, host=host, seq=n,
                       kind=kind, entity=entity, severity=Severity.MAJOR,
                       event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="x",
                       event_time=0.0, detected_mono_ns=0)


@pytest.fixture
def vnfm(tmp_path: Path) -> AvailabilityManager:
    t = three_racks()
    eps = [ComponentEndpoint(name=c.name, vnf=v.name, vm=c.vm, host=t.vm(c.vm).host,
                             address="198.18.7.60", port=7000, sync_port=7001)
           for v, c in t.components()]
    cfg = AmfConfig(listen_ip="127.0.0.1", port=0, components=eps)
    return AvailabilityManager(
        t, cfg, SqliteAssignmentStore(tmp_path / "amf.db"), Port(),  # type: ignore[arg-type]
        Settings(), ManualClock())


@pytest.mark.req("UC-9")
async def test_escalated_vm_repairs_go_to_the_vim_first(vnfm: AvailabilityManager) -> None:
    asked: list[tuple[str, str, bool]] = []

    async def hook(vm: str, source: str, failfast: bool) -> bool:
        asked.append((vm, source, failfast))
        return True  # the VIM repairs the host

    vnfm.use_host_repair(hook)
    # gw's policy: 3 restarts within the probation time, the 4th failure escalates.
    for n in range(1, 5):
        vnfm.on_events([stored(Kind.VNFC_CRASHED, "vnfc/gw-a", "h1", n)])
        await asyncio.sleep(0)
    assert asked == [("vm-a", "vnfm escalation of gw-a", False)]


@pytest.mark.req("HV-7")
async def test_the_vnfm_follows_a_moved_vm(vnfm: AvailabilityManager) -> None:
    vnfm.vm_placed("vm-a", "h3")
    # h1 fenced: gw-a no longer lives there, db-1 (not moved) does.
    vnfm.on_events([stored(Kind.HOST_FENCED, "host/h1", "h1", 1)])
    await asyncio.sleep(0)
    assert vnfm.readiness("gw-a") is not Readiness.OUT_OF_SERVICE
    assert vnfm.readiness("db-1") is Readiness.OUT_OF_SERVICE
    vnfm.on_events([stored(Kind.HOST_FENCED, "host/h3", "h3", 2)])
    await asyncio.sleep(0)
    assert vnfm.readiness("gw-a") is Readiness.OUT_OF_SERVICE
