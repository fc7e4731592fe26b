"""The alarm manager's decisions, one event at a time, on an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.faults.manager import AlarmManager, AlarmNotFound, AlreadyInState
from nfvha.faults.model import AckState, FaultyResourceType, NotificationType
from nfvha.model.containment import EntityRef
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.topology import Topology, parse_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import ManualClock

TOPO: dict[str, Any] = {
    "name": "t",
    "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                       {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [{"name": "vm-a", "host": "h1"}, {"name": "vm-b", "host": "h2"},
            {"name": "vm-c", "host": "h1"}, {"name": "vm-d", "host": "h1"}],
    "vnfs": [
        {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
         "components": [{"name": "gw-a", "vm": "vm-a"}, {"name": "gw-b", "vm": "vm-b"}]},
        {"name": "db", "redundancy": "none", "stateful": True, "state": "checkpoint",
         "components": [{"name": "db-1", "vm": "vm-c"}]},
    ],
}


def topology() -> Topology:
    return parse_topology(TOPO)


_CAUSES = {Kind.VNFC_CRASHED: "vnfc-crash", Kind.VM_CRASHED: "vm-crash", Kind.VM_HUNG: "vm-hang",
           Kind.AGENT_LOST: "hypervisor-failure", Kind.HOST_SUSPECT: "host-unreachable",
           Kind.HOST_DOWN: "host-failure", Kind.HOST_PROCESS_FAILED: "host-software-failure",
           Kind.SENSOR: "host-hardware-failure", Kind.LINK_DOWN: "link-failure"}


def ev(kind: Kind, entity: str, *, host: str = "h1", severity: Severity = Severity.MAJOR,
       clears: bool = False, informational: bool = False, **details: Any) -> Event:
    return Event(host=host, seq=0, kind=kind, entity=entity,
                 severity=Severity.CLEARED if clears else severity,
                 event_type=EventType.EQUIPMENT_ALARM if kind == Kind.SENSOR
                 else EventType.PROCESSING_ERROR_ALARM,
                 probable_cause=_CAUSES.get(kind, kind.value), description=f"{kind} {entity}",
                 clears=clears, informational=informational, event_time=1_800_000_000.0,
                 detected_mono_ns=1, details=details)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "nfvha-test-alarms.db"


@pytest.fixture
def mgr(db: Path, clock: ManualClock) -> Iterator[AlarmManager]:
    store = SqliteAlarmStore(db)
    yield AlarmManager(topology(), store, clock, topology().settings)
    store.close()


def only(changes: list[Any], n: NotificationType) -> list[Any]:
    return [c.alarm for c in changes if c.notification == n]


@pytest.mark.req("FM-5")
def test_fault_raises_alarm_with_time_location_type_and_level(mgr: AlarmManager) -> None:
    [a] = only(mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-a", severity=Severity.CRITICAL,
                               exit_desc="killed by SIGKILL")), NotificationType.ALARM)
    assert a.alarmRaisedTime is not None and a.eventTime is not None        # time
    assert a.rootCauseFaultyResource.faultyResource.resourceId == "vm/vm-a"  # location
    assert a.managedObjectId == "gw" and a.vnfcInstanceIds == ["gw-a"]
    assert a.eventType == EventType.PROCESSING_ERROR_ALARM                  # type
    assert a.faultType == "vm-failure" and a.probableCause == "vm-crash"
    assert a.perceivedSeverity == Severity.CRITICAL                         # level
    assert a.isRootCause and a.ackState == AckState.UNACKNOWLEDGED
    assert "host=h1" in a.faultDetails and "exit_desc=killed by SIGKILL" in a.faultDetails


def test_informational_events_raise_nothing(mgr: AlarmManager) -> None:
    assert mgr.on_event(ev(Kind.VM_LAST_WORDS, "vm/vm-a", informational=True)) == []


def test_recovery_clears_and_vm_start_clears_hang_too(mgr: AlarmManager) -> None:
    mgr.on_event(ev(Kind.VM_HUNG, "vm/vm-a", severity=Severity.CRITICAL))
    changes = mgr.on_event(ev(Kind.VM_STARTED, "vm/vm-a", clears=True))
    [cleared] = only(changes, NotificationType.ALARM_CLEARED)
    assert cleared.perceivedSeverity == Severity.CLEARED and cleared.alarmClearedTime
    assert mgr.active_for("vm/vm-a") == []
    assert mgr.on_event(ev(Kind.VM_STARTED, "vm/vm-a", clears=True)) == []  # nothing left


def test_storm_collapses_into_one_alarm_with_a_count(mgr: AlarmManager) -> None:
    first = mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="vswitch"))
    assert len(first) == 1
    for _ in range(50):
        assert mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="vswitch")) == []
    [a] = mgr.active_for("host/h1", "host-software-failure")
    assert "count=51" in a.faultDetails
    # A different process is a different fault.
    assert len(mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="nova"))) == 1


@pytest.mark.req("REC-3")
@pytest.mark.req("FM-8")
def test_vm_hypervisor_host_software_and_hardware_failures_are_distinct(
        mgr: AlarmManager) -> None:
    types = set()
    for kind, entity, extra in [
        (Kind.VM_CRASHED, "vm/vm-b", {}), (Kind.AGENT_LOST, "host/h2", {}),
        (Kind.HOST_SUSPECT, "host/h2", {}), (Kind.HOST_PROCESS_FAILED, "host/h2",
                                             {"process": "vswitch"}),
        (Kind.SENSOR, "host/h2", {"sensor": "temp1"}),
    ]:
        [a] = only(mgr.on_event(ev(kind, entity, host="h2", **extra)), NotificationType.ALARM)
        types.add((a.faultType, a.probableCause))
    assert {t for t, _ in types} == {"vm-failure", "hypervisor-failure", "host-failure",
                                     "host-software-failure", "host-hardware-failure"}
    assert len({c for _, c in types}) == 5


def test_link_alarm_is_a_network_resource(mgr: AlarmManager) -> None:
    [a] = only(mgr.on_event(ev(Kind.LINK_DOWN, "host/h1", link="data0")), NotificationType.ALARM)
    assert a.rootCauseFaultyResource.faultyResourceType == FaultyResourceType.NETWORK
    [c] = only(mgr.on_event(ev(Kind.LINK_UP, "host/h1", clears=True, link="data0")),
               NotificationType.ALARM_CLEARED)
    assert c.id == a.id


def test_vm_crash_is_root_cause_of_its_vnfcs(mgr: AlarmManager) -> None:
    [vm] = only(mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-a", severity=Severity.CRITICAL)),
                NotificationType.ALARM)
    [vnfc] = only(mgr.on_event(ev(Kind.VNFC_CRASHED, "vnfc/gw-a")), NotificationType.ALARM)
    assert vnfc.isRootCause is False and vnfc.correlatedAlarmIds == [vm.id]
    assert vnfc.id in (mgr.get(vm.id).correlatedAlarmIds or [])


def test_host_down_escalates_suspect_and_owns_all_its_vms_and_vnfcs(mgr: AlarmManager) -> None:
    # A VNFC alarm raised just before its host is found down is adopted too.
    early = only(mgr.on_event(ev(Kind.VNFC_CRASHED, "vnfc/db-1")), NotificationType.ALARM)[0]
    [suspect] = only(mgr.on_event(ev(Kind.HOST_SUSPECT, "host/h1")), NotificationType.ALARM)
    changes = mgr.on_event(ev(Kind.HOST_DOWN, "host/h1", severity=Severity.CRITICAL))
    raised = only(changes, NotificationType.ALARM)
    host = mgr.get(suspect.id)
    assert host.perceivedSeverity == Severity.CRITICAL and host.isRootCause  # escalated
    consequences = {a.rootCauseFaultyResource.faultyResource.resourceId: a
                    for a in raised if a.id != host.id}
    assert set(consequences) >= {"vm/vm-a", "vm/vm-c", "vm/vm-d", "vnfc/gw-a", "vnfc/db-1"}
    assert "vm/vm-b" not in consequences  # another host
    for a in consequences.values():
        assert a.isRootCause is False and a.correlatedAlarmIds == [host.id]
    assert mgr.get(early.id).correlatedAlarmIds == [host.id]
    # The host coming back clears the host alarm; its VMs stay failed until restarted.
    mgr.on_event(ev(Kind.HOST_UP, "host/h1", clears=True))
    assert mgr.active_for("host/h1", "host-failure") == []
    assert mgr.active_for("vm/vm-a", "vm-failure")


def test_late_report_after_host_came_back_is_correlated_to_the_host(
        mgr: AlarmManager, clock: ManualClock) -> None:
    [host] = only(mgr.on_event(ev(Kind.HOST_DOWN, "host/h2", host="h2",
                                  severity=Severity.CRITICAL)), NotificationType.ALARM)[:1]
    mgr.on_event(ev(Kind.HOST_UP, "host/h2", host="h2", clears=True))
    mgr.on_event(ev(Kind.VM_STARTED, "vm/vm-b", host="h2", clears=True))
    clock.advance(5)
    [late] = only(mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-b", host="h2")),
                  NotificationType.ALARM)
    assert late.isRootCause is False and late.correlatedAlarmIds == [host.id]
    clock.advance(topology().settings.fm_correlation_window_s + 1)
    mgr.on_event(ev(Kind.VM_STARTED, "vm/vm-b", host="h2", clears=True))
    [later] = only(mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-b", host="h2")),
                   NotificationType.ALARM)
    assert later.isRootCause is True


@pytest.mark.req("VNFHA-6")
def test_failures_of_co_located_vms_raise_a_suspected_latent_host_fault(
        mgr: AlarmManager, clock: ManualClock) -> None:
    mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-a"))
    mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-b", host="h2"))  # another host: not counted
    assert mgr.active_for("host/h1", "suspected-latent-host-fault") == []
    clock.advance(10)
    changes = mgr.on_event(ev(Kind.VNFC_CRASHED, "vnfc/db-1"))  # in vm-c, also on h1
    latent = [a for a in only(changes, NotificationType.ALARM)
              if a.faultType == "suspected-latent-host-fault"]
    assert len(latent) == 1
    lat = latent[0]
    assert lat.managedObjectId == "host/h1" and lat.eventType == EventType.EQUIPMENT_ALARM
    assert len(lat.correlatedAlarmIds or []) == 2 and "vms=2" in (lat.faultDetails or [])
    # A third VM adds to the same suspicion, no second alarm.
    changes = mgr.on_event(ev(Kind.VM_HUNG, "vm/vm-d"))
    assert len(mgr.active_for("host/h1", "suspected-latent-host-fault")) == 1
    assert "vms=3" in (mgr.active_for("host/h1", "suspected-latent-host-fault")[0]
                       .faultDetails or [])
    # Quiet for a whole window: the suspicion is cleared.
    clock.advance(topology().settings.fm_latent_fault_window_s - 1)
    assert mgr.tick() == []
    clock.advance(2)
    [cleared] = only(mgr.tick(), NotificationType.ALARM_CLEARED)
    assert cleared.faultType == "suspected-latent-host-fault"


def test_failures_caused_by_a_host_failure_do_not_make_a_latent_suspicion(
        mgr: AlarmManager) -> None:
    mgr.on_event(ev(Kind.HOST_DOWN, "host/h1", severity=Severity.CRITICAL))
    assert mgr.active_for("host/h1", "suspected-latent-host-fault") == []


def test_acknowledge_and_conflict(mgr: AlarmManager) -> None:
    [a] = only(mgr.on_event(ev(Kind.VM_HUNG, "vm/vm-a")), NotificationType.ALARM)
    acked = mgr.acknowledge(a.id, AckState.ACKNOWLEDGED)
    assert acked.ackState == AckState.ACKNOWLEDGED and acked.alarmAcknowledgedTime
    with pytest.raises(AlreadyInState):
        mgr.acknowledge(a.id, AckState.ACKNOWLEDGED)
    assert mgr.acknowledge(a.id, AckState.UNACKNOWLEDGED).alarmAcknowledgedTime is None
    with pytest.raises(AlarmNotFound):
        mgr.acknowledge("nope", AckState.ACKNOWLEDGED)


def test_acknowledge_the_store_refused_is_not_kept(mgr: AlarmManager) -> None:
    """The API answers 503 for it; the alarm must not look acknowledged meanwhile (a
    later commit of the alarm would store an acknowledgement nobody was told of)."""
    [a] = only(mgr.on_event(ev(Kind.VM_HUNG, "vm/vm-a")), NotificationType.ALARM)
    mgr.commit()

    def down(rows: object, processed_event_id: object = None) -> None:
        raise StoreUnavailable("PostgreSQL: connection refused")

    mgr._store.put = down  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        mgr.acknowledge(a.id, AckState.ACKNOWLEDGED)
    assert mgr.get(a.id).ackState == AckState.UNACKNOWLEDGED


@pytest.mark.req("FM-7")
def test_alarms_survive_a_restart_and_age_by_policy(db: Path, clock: ManualClock) -> None:
    store = SqliteAlarmStore(db)
    mgr = AlarmManager(topology(), store, clock, topology().settings)
    [a] = only(mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-a", severity=Severity.CRITICAL)),
               NotificationType.ALARM)
    [w] = only(mgr.on_event(ev(Kind.SENSOR, "host/h1", severity=Severity.WARNING,
                               sensor="temp1")), NotificationType.ALARM)
    mgr.on_event(ev(Kind.SENSOR, "host/h1", clears=True, sensor="temp1"))
    mgr.commit()
    store.close()
    store = SqliteAlarmStore(db)
    again = AlarmManager(topology(), store, clock, topology().settings)
    assert again.get(a.id).perceivedSeverity == Severity.CRITICAL
    assert [c.notification for c in again.rebuilt()] == [NotificationType.ALARM_LIST_REBUILT]
    # The active alarm is still the one a recovery clears.
    [c] = only(again.on_event(ev(Kind.VM_STARTED, "vm/vm-a", clears=True)),
               NotificationType.ALARM_CLEARED)
    assert c.id == a.id
    again.commit()
    # Ageing: cleared WARNINGs are kept 7 days, cleared CRITICALs 30 days (defaults).
    retention = topology().settings.fm_cleared_alarm_retention_s
    now = clock.wall()
    assert store.age(now + 8 * 86_400, retention, 10 * 86_400) == (1, 0)
    assert store.get(w.id) is None and store.get(a.id) is not None
    assert store.age(now + 31 * 86_400, retention, 10 * 86_400) == (1, 0)
    store.close()


def test_the_same_stored_event_decided_twice_gives_the_same_alarm_and_change_ids(
        tmp_path: Path, clock: ManualClock) -> None:
    """What makes replay after a controller crash safe: ids derive from the event."""
    from nfvha.model.events import StoredEvent

    stored = StoredEvent(**ev(Kind.HOST_DOWN, "host/h1", severity=Severity.CRITICAL)
                         .model_copy(update={"seq": 7}).model_dump(),
                         id=42, received_time=1.0, received_mono_ns=1)
    results = []
    for i in range(2):
        store = SqliteAlarmStore(tmp_path / f"nfvha-test-{i}.db")
        mgr = AlarmManager(topology(), store, clock, topology().settings)
        results.append(sorted((c.alarm.id, c.change_id) for c in mgr.on_event(stored)))
        store.close()
    assert results[0] == results[1] and len(results[0]) > 1


def test_active_alarms_are_found_by_entity_through_raise_clear_and_reload(
        db: Path, clock: ManualClock) -> None:
    """The index by entity gives what a walk over every active alarm gave: the
    entity's active alarms in the order they were raised, of one type if asked."""
    store = SqliteAlarmStore(db)
    mgr = AlarmManager(topology(), store, clock, topology().settings)
    mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="vswitch"))
    mgr.on_event(ev(Kind.SENSOR, "host/h1", severity=Severity.WARNING, sensor="temp1"))
    mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-b", host="h2"))
    mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="nova"))

    def on_h1(type_name: str | None = None) -> list[str]:
        return [a.rootCauseFaultyResource.faultyResource.resourceId + ":" + a.faultType
                + ":" + next(d for d in a.faultDetails or [] if d.startswith(("process=",
                                                                               "sensor=")))
                for a in mgr.active_for("host/h1", type_name)]

    assert on_h1() == ["host/h1:host-software-failure:process=vswitch",
                       "host/h1:host-hardware-failure:sensor=temp1",
                       "host/h1:host-software-failure:process=nova"]
    assert on_h1("host-software-failure") == [on_h1()[0], on_h1()[2]]
    assert [a.faultType for a in mgr.active_for("vm/vm-b")] == ["vm-failure"]
    assert mgr.active_for("host/h2") == [] and mgr.active_for("not an entity") == []
    # Cleared: gone from its entity, the others stay; raised again: last in the order.
    mgr.on_event(ev(Kind.HOST_PROCESS_RESTARTED, "host/h1", clears=True, process="vswitch"))
    assert on_h1() == ["host/h1:host-hardware-failure:sensor=temp1",
                       "host/h1:host-software-failure:process=nova"]
    mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="vswitch"))
    assert on_h1()[-1] == "host/h1:host-software-failure:process=vswitch"
    mgr.commit()
    # Reloaded from the store (a restart, or a dropped decision): the same alarms (in
    # the store's order, as before the index).
    def active(m: AlarmManager) -> dict[str, list[str]]:
        return {e: sorted(a.id for a in m.active_for(e)) for e in ("host/h1", "vm/vm-b")}

    before = active(mgr)
    mgr.on_event(ev(Kind.SENSOR, "host/h1", clears=True, sensor="temp1"))  # not committed
    assert len(active(mgr)["host/h1"]) == 2
    mgr.reload()
    assert active(mgr) == before
    assert active(AlarmManager(topology(), store, clock, topology().settings)) == before
    store.close()


def test_finding_an_entitys_alarms_does_not_walk_every_active_alarm(
        mgr: AlarmManager, monkeypatch: pytest.MonkeyPatch) -> None:
    """Host health asks for each host's alarms: that must cost what the host has, not
    what the deployment has (it re-parsed every alarm's entity per question)."""
    for i in range(200):
        mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h2", host="h2", process=f"p{i}"))
    mgr.on_event(ev(Kind.HOST_PROCESS_FAILED, "host/h1", process="vswitch"))
    parsed: list[str] = []
    real = EntityRef.parse

    def counting(text: str) -> EntityRef:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(EntityRef, "parse", staticmethod(counting))
    assert len(mgr.active_for("host/h1")) == 1
    assert parsed == ["host/h1"]
