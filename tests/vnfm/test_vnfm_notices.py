"""An agent's direct failure notice at the availability manager (ADR 0014).

The manager runs for real on loopback; the components are raw SDK sessions that
register with a chosen pid (all of a test's clients live in one process, so the
SDK's own pid would not tell them apart) and record the orders they get. The
manager's clock is manual: no lease runs out on its own, so every readiness change
seen here is the notice's or the stored event's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from vnfm_util import RecordingRepair, until

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.manager import AvailabilityManager
from nfvha.amf.model import Readiness
from nfvha.model.events import EventType, Kind, Severity, StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import parse_topology
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.testbed.deploy import free_tcp_port as free_port
from nfvha.util.clock import ManualClock
from nfvha.wire.director import Notice, NoticeKind

TOPOLOGY: dict[str, Any] = {
    "name": "t",
    "sites": [{"name": "s", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                      {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [{"name": "vm1", "host": "h1"}, {"name": "vm2", "host": "h2"}],
    "vnfs": [{"name": "gw", "redundancy": "2n", "stateful": False,
              "components": [{"name": "gw-a", "vm": "vm1", "port": 7000},
                             {"name": "gw-b", "vm": "vm2", "port": 7000}]}],
}
HOST = {"gw-a": "h1", "gw-b": "h2"}
VM = {"gw-a": "vm1", "gw-b": "vm2"}
AGENT = "agent-incarnation-1"


class RawComponent:
    """One life of a component: registers with ``pid``, keeps what it is told."""

    def __init__(self, name: str, pid: int, port: int) -> None:
        self.name, self.pid, self.port = name, pid, port
        self.incarnation = uuid.uuid4().hex
        self.got: list[dict[str, Any]] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> RawComponent:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer.write(json.dumps({"op": "register", "component": self.name,
                                       "pid": self.pid, "incarnation": self.incarnation,
                                       "assignments": []}).encode() + b"\n")
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                self.got.append(json.loads(line))

    def state(self, si: str) -> str | None:
        """Its role for ``si`` as the orders it got leave it."""
        state = None
        for m in self.got:
            if m.get("op") == "assign" and m["si"] == si:
                state = m["ha_state"]
            elif m.get("op") == "remove" and m["si"] == si:
                state = None
        return state

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def settled() -> None:
    """Let every decision kicked so far run (decisions run on the loop's next turn)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Site:
    def __init__(self, am: AvailabilityManager, repair: RecordingRepair, port: int) -> None:
        self.am, self.repair, self.port = am, repair, port
        self.lives: dict[str, RawComponent] = {}
        self._pids = iter(range(4000, 5000))
        self._events = 0

    async def life(self, name: str) -> RawComponent:
        """A new process of ``name`` registers."""
        c = await RawComponent(name, next(self._pids), self.port).start()
        self.lives[name] = c
        await until(lambda: self.am.readiness(name) is Readiness.IN_SERVICE,
                    f"{name} never registered")
        return c

    def record(self) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        rec = self.am.records("gw")["gw"]
        return (rec.active, rec.standby, rec.epoch) if rec else ((), (), 0)

    def notice(self, kind: NoticeKind, entity: str, host: str, seq: int,
               pid: int | None = None, incarnation: str = AGENT) -> None:
        self.am.on_notice(Notice(host=host, incarnation=incarnation, seq=seq, kind=kind,
                                 entity=entity, pid=pid, detected_mono_ns=time.monotonic_ns()))

    def stored(self, kind: Kind, entity: str, host: str, seq: int, **details: Any) -> None:
        self._events += 1
        now = time.time()
        self.am.on_events([StoredEvent(
            id=self._events, host=host, seq=seq, kind=kind, entity=entity,
            severity=Severity.MAJOR, event_type=EventType.PROCESSING_ERROR_ALARM,
            probable_cause="test", event_time=now, detected_mono_ns=time.monotonic_ns(),
            received_time=now, received_mono_ns=time.monotonic_ns(), details=details)])

    def failures(self, su: str) -> int:
        return self.am._repairs.tracker("gw").component_failures(su)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    topology = parse_topology(TOPOLOGY)
    port = free_port()
    cfg = AmfConfig(listen_ip="127.0.0.1", port=port, components=[
        ComponentEndpoint(name=c.name, vnf=v.name, vm=c.vm, host=topology.vm(c.vm).host,
                          address="127.0.0.1", port=c.port, sync_port=c.port + 1)
        for v, c in topology.components()])
    store = SqliteAssignmentStore(tmp_path / "amf.db")
    repair = RecordingRepair()
    am = AvailabilityManager(topology, cfg, store, repair, Settings(),
                             ManualClock())
    await am.start()
    s = Site(am, repair, port)
    try:
        await s.life("gw-a")
        await s.life("gw-b")
        await until(lambda: len(s.record()[0]) == 1 and len(s.record()[1]) == 1,
                    "gw not assigned")
        yield s
    finally:
        for c in s.lives.values():
            await c.close()
        await am.close()
        store.close()


@pytest.mark.req("UC-1")
async def test_a_vnfc_notice_fails_over_without_the_stored_event(site: Site) -> None:
    [active], [standby], epoch = site.record()
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=7,
                pid=site.lives[active].pid)
    assert site.am.readiness(active) is Readiness.OUT_OF_SERVICE
    await until(lambda: site.record()[0] == (standby,), "no failover on the notice")
    assert site.record()[2] > epoch
    await until(lambda: site.lives[standby].state("gw") == "active", "never promoted")
    # Readiness only: the repair and its counting are the stored event's.
    assert site.repair.calls == []
    assert site.failures(active) == 0
    [si] = site.am.status()[0].service_instances
    assert si.active == [standby] and si.epoch == site.record()[2]
    assert si.decided_mono_ns == site.am.decisions[-1].decided_mono_ns
    assert si.reason is not None and "agent's notice" in si.reason


@pytest.mark.req("UC-2")
async def test_a_vm_crash_notice_takes_its_sus_out_and_a_hang_makes_them_suspect(
        site: Site) -> None:
    [active], [standby], _ = site.record()
    site.notice("vm.hung", f"vm/{VM[standby]}", HOST[standby], seq=3)
    assert site.am.readiness(standby) is Readiness.SUSPECT
    site.notice("vm.crashed", f"vm/{VM[active]}", HOST[active], seq=4)
    assert site.am.readiness(active) is Readiness.OUT_OF_SERVICE
    await settled()
    # The only other SU is suspect: it keeps its standby role, nobody is active.
    assert site.record()[:2] == ((), (standby,))
    assert site.repair.calls == []


async def test_stale_and_duplicate_notices_are_ignored(site: Site) -> None:
    [active], _, epoch = site.record()
    pid = site.lives[active].pid
    # A pid it did not register with: another (earlier) life of the VNFC.
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=5, pid=pid + 1)
    # No pid to check against.
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=6)
    # From a host it does not live on.
    other = next(h for h in HOST.values() if h != HOST[active])
    site.notice("vnfc.crashed", f"vnfc/{active}", other, seq=7, pid=pid)
    site.notice("vm.crashed", f"vm/{VM[active]}", other, seq=8)
    # From a host that is not in the topology at all.
    site.notice("vm.crashed", f"vm/{VM[active]}", "nowhere", seq=9)
    await settled()
    assert site.am.readiness(active) is Readiness.IN_SERVICE
    assert site.record()[2] == epoch

    # A notice at or below the highest sequence number seen from its agent: a duplicate,
    # or one whose stored event came first.
    site.stored(Kind.VNFC_STARTED, f"vnfc/{active}", HOST[active], seq=20)
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=20, pid=pid)
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=12, pid=pid)
    await settled()
    assert site.am.readiness(active) is Readiness.IN_SERVICE
    assert site.record()[2] == epoch
    # A restarted agent numbers afresh (its spool was lost): its notices count again.
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=1, pid=pid,
                incarnation="agent-incarnation-2")
    assert site.am.readiness(active) is Readiness.OUT_OF_SERVICE


@pytest.mark.req("VNFHA-10")
async def test_the_stored_event_after_a_notice_repairs_once_and_spares_the_new_life(
        site: Site) -> None:
    [active], [standby], _ = site.record()
    old = site.lives[active]
    site.notice("vnfc.crashed", f"vnfc/{active}", HOST[active], seq=11, pid=old.pid)
    await until(lambda: site.record()[0] == (standby,), "no failover on the notice")
    # The VNFC is running again (started by the VIM, say) before the stored event
    # reaches the manager: a new life registers and becomes the standby.
    await old.close()
    new = await site.life(active)
    await until(lambda: site.record()[:2] == ((standby,), (active,)), "not standby again")
    await until(lambda: new.state("gw") == "standby", "the new life never stood by")
    epoch = site.record()[2]

    # The stored event of the crash comes late (naming no pid: the notice's sequence
    # number is what tells the manager which life it is about).
    site.stored(Kind.VNFC_CRASHED, f"vnfc/{active}", HOST[active], seq=11, vm=VM[active])
    await until(lambda: site.repair.calls != [], "no repair on the stored event")
    await settled()
    assert site.repair.calls == [("restart", active)]  # the repair: once
    assert site.failures(active) == 1  # counted once
    # ...and no second readiness change: the new life keeps its role and its session.
    assert site.am.readiness(active) is Readiness.IN_SERVICE
    assert site.record() == ((standby,), (active,), epoch)
    assert {u.name: u.connected for u in site.am.status()[0].service_units}[active]


async def test_a_late_stored_event_never_takes_out_a_life_that_registered_since(
        site: Site) -> None:
    """Without a notice (it was lost): the event's pid tells the old life from the new."""
    [active], [standby], _ = site.record()
    old = site.lives[active]
    await old.close()  # the process died; its connection closes: suspect, not more
    await until(lambda: site.am.readiness(active) is Readiness.SUSPECT, "not suspect")
    # Started again before the stored event reached the manager: a new life's roles
    # are not the old one's, so it is moved out of the record, then made the standby.
    await site.life(active)
    await until(lambda: site.record()[:2] == ((standby,), (active,)), "not standby again")
    epoch = site.record()[2]
    site.stored(Kind.VNFC_CRASHED, f"vnfc/{active}", HOST[active], seq=30, pid=old.pid,
                vm=VM[active])
    await until(lambda: site.repair.calls != [], "no repair on the stored event")
    await settled()
    assert site.am.readiness(active) is Readiness.IN_SERVICE
    assert site.record() == ((standby,), (active,), epoch)
    assert site.repair.calls == [("restart", active)]
    assert site.failures(active) == 1
    # The same event about the registered life takes it out, as before.
    site.stored(Kind.VNFC_CRASHED, f"vnfc/{active}", HOST[active], seq=31,
                pid=site.lives[active].pid, vm=VM[active])
    assert site.am.readiness(active) is Readiness.OUT_OF_SERVICE
    await until(lambda: site.record()[:2] == ((standby,), ()), "still standby")
    assert site.record()[2] > epoch


async def test_a_vm_crash_after_its_notice_repairs_the_vm_once_and_spares_a_new_life(
        site: Site) -> None:
    [active], [standby], _ = site.record()
    old = site.lives[active]
    site.notice("vm.crashed", f"vm/{VM[active]}", HOST[active], seq=40)
    await until(lambda: site.record()[0] == (standby,), "no failover on the notice")
    await old.close()
    await site.life(active)  # the VIM's own repair policy brought the VM back already
    await until(lambda: site.record()[:2] == ((standby,), (active,)), "not standby again")
    epoch = site.record()[2]
    site.stored(Kind.VM_CRASHED, f"vm/{VM[active]}", HOST[active], seq=40, pid=12345)
    site.stored(Kind.VNFC_CRASHED, f"vnfc/{active}", HOST[active], seq=41,
                cause_entity=f"vm/{VM[active]}")
    await settled()
    assert site.repair.calls == [("repair-vm", VM[active])]
    assert site.am.readiness(active) is Readiness.IN_SERVICE
    assert site.record() == ((standby,), (active,), epoch)
