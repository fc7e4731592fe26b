"""The control plane's alarms decided from the watch's looks (also of etcd without a
quorum), and the shared token check, without processes (controlplane.py, quorum.py,
store/tokens.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nfvha.controller.cluster import Watched
from nfvha.controller.controlplane import ControlPlaneAlarms
from nfvha.controller.quorum import QuorumWatch
from nfvha.faults.manager import AlarmChange, AlarmManager
from nfvha.faults.model import Alarm, NotificationType
from nfvha.model.auth import Role, TokenEntry, token_hash
from nfvha.model.events import Event, Kind, Severity
from nfvha.model.topology import parse_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import StoreUnavailable
from nfvha.store.health import StoreHealth
from nfvha.store.tokens import MemoryTokenStore, TokenCheck
from nfvha.util.clock import ManualClock


class FakeAlarms:
    """Active alarms by entity, as the alarm manager keeps them from the events."""

    def __init__(self) -> None:
        self.active: set[str] = set()

    def active_for(self, entity: str, type_name: str | None = None) -> list[Any]:
        return [entity] if entity in self.active else []


class Bus:
    def __init__(self, alarms: FakeAlarms) -> None:
        self.alarms = alarms
        self.down = False
        self.stored: list[Event] = []

    async def publish(self, events: list[Event]) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL: connection refused")
        for ev in events:
            self.stored.append(ev)
            (self.alarms.active.discard if ev.clears else self.alarms.active.add)(ev.entity)


def look(n: int, *, c2: str = "up", pg: str = "up") -> Watched:
    return Watched(members={"c1": {"state": "up"}, "c2": {"state": c2}},
                   postgres={"state": pg}, at_ns=n)


def setup() -> tuple[ControlPlaneAlarms, Bus]:
    alarms = FakeAlarms()
    bus = Bus(alarms)
    cpa = ControlPlaneAlarms("c1", Watched, alarms, bus.publish,  # type: ignore[arg-type]
                             ManualClock(), lambda: True, confirm_looks=2)
    return cpa, bus


@pytest.mark.req("FM-2")
async def test_a_member_failed_in_two_looks_raises_once_and_clears_when_back() -> None:
    cpa, bus = setup()
    await cpa.look(look(1, c2="unreachable"))
    assert bus.stored == []  # one slow answer is not a failure
    await cpa.look(look(2, c2="unreachable"))
    await cpa.look(look(3, c2="unreachable"))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_FAILED, "control/controller:c2")]
    await cpa.look(look(4))
    assert [e.kind for e in bus.stored][1:] == [Kind.CONTROL_SERVICE_RESTORED]
    assert bus.alarms.active == set()


@pytest.mark.req("FM-2")
async def test_postgresql_outage_is_stored_once_it_is_back() -> None:
    """Its alarm cannot be stored while it is down: raised with its detection time,
    then cleared, once it answers."""
    cpa, bus = setup()
    bus.down = True
    for n in (1, 2, 3):
        await cpa.look(look(n, pg="unavailable"))
    assert bus.stored == []
    bus.down = False
    await cpa.look(look(4))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_FAILED, "control/postgresql"),
        (Kind.CONTROL_SERVICE_RESTORED, "control/postgresql")]
    assert bus.alarms.active == set()


@pytest.mark.req("FM-2")
async def test_a_new_leader_clears_an_earlier_terms_alarm_and_raises_none_twice() -> None:
    cpa, bus = setup()
    bus.alarms.active = {"control/controller:c2", "control/postgresql"}
    await cpa.look(look(1, c2="unreachable"))
    await cpa.look(look(2, c2="unreachable"))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_RESTORED, "control/postgresql")]


@pytest.mark.req("VNFHA-12")
async def test_token_check_reads_the_store_and_falls_back_to_the_configured_ones() -> None:
    configured = TokenEntry(sha256=token_hash("cfg"), role="admin")
    store = MemoryTokenStore([configured])
    clock = ManualClock()
    check = TokenCheck(store, [configured], clock, cache_s=2.0)
    assert await check.role_of("new") is None
    store.put(TokenEntry(sha256=token_hash("new"), role="reader"))
    assert await check.role_of("new") == Role.READER  # at once: misses are not cached
    store.delete(token_hash("new"))
    assert await check.role_of("new") == Role.READER  # cached for cache_s
    clock.advance(2.5)
    assert await check.role_of("new") is None
    store.delete(configured.sha256)
    assert await check.role_of("cfg") is None  # the store decides while it answers

    def down(_: str) -> TokenEntry | None:
        raise StoreUnavailable("down")

    store.get = down  # type: ignore[method-assign]
    assert await check.role_of("cfg") == Role.ADMIN
    assert await check.role_of("other") is None


# -- etcd without a quorum: nobody leads, the next leader raises it (quorum.py) ----------

NO_QUORUM = StoreHealth(store="etcd", state="unavailable", quorum=False, answering=["m1"],
                        reason="no quorum: 0 of 3 members agree on a leader, 2 needed;"
                               " answering: m1")
IN_SYNC = StoreHealth(store="etcd", state="in-sync", reason="3 members in sync",
                      answering=["m1", "m2", "m3"])


def outage_seen(member: str, clock: ManualClock, *, lasting_s: float = 10.0,
                skew_s: float = 0.0) -> QuorumWatch:
    """A member's watch through one outage, a look a second (``skew_s``: when its
    looks fall, relative to the others')."""
    watch = QuorumWatch(member, clock)
    clock.advance(skew_s)
    watch.look(IN_SYNC)
    for _ in range(round(lasting_s)):
        clock.advance(1.0)
        watch.look(NO_QUORUM)
    clock.advance(1.0)
    watch.look(IN_SYNC)
    return watch


class AlarmBus:
    """The leader's bus over a real alarm manager (the shared history every term
    replays): what it stores is decided, and its changes are what subscribers get."""

    def __init__(self, mgr: AlarmManager) -> None:
        self.mgr = mgr
        self.down = False
        self.changes: list[AlarmChange] = []

    async def publish(self, events: list[Event]) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL: connection refused")
        for ev in events:
            self.changes += self.mgr.on_event(ev)
        self.mgr.commit()

    def etcd_alarms(self) -> list[Alarm]:
        return [a for a in self.mgr.all_alarms() if a.faultType == "control-plane-failure"
                and a.rootCauseFaultyResource is not None
                and a.rootCauseFaultyResource.faultyResource.resourceId == "control/etcd"]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def alarm_bus(tmp_path: Path, clock: ManualClock) -> Iterator[AlarmBus]:
    topo = parse_topology({"name": "t", "sites": [
        {"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]}]}]})
    store = SqliteAlarmStore(tmp_path / "nfvha-test-alarms.db")
    yield AlarmBus(AlarmManager(topo, store, clock, topo.settings))
    store.close()


def leader_alarms(member: str, bus: AlarmBus, clock: ManualClock,
                  allowed: Callable[[], bool] = lambda: True) -> ControlPlaneAlarms:
    return ControlPlaneAlarms(member, Watched, bus.mgr, bus.publish, clock, allowed)


def watched(watch: QuorumWatch, clock: ManualClock, health: StoreHealth = IN_SYNC) -> Watched:
    return Watched(etcd=health, etcd_outage=watch.current, etcd_outages=watch.ended,
                   at_ns=clock.mono_ns())


@pytest.mark.req("FM-2")
def test_quorum_watch_keeps_the_outage_from_its_first_look_and_logs_it_at_error(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    watch = QuorumWatch("c2", clock, confirm_looks=2)
    watch.look(NO_QUORUM)  # one slow look is not an outage
    clock.advance(1.0)
    watch.look(IN_SYNC)
    assert watch.current is None and watch.ended == ()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    clock.advance(1.0)
    lost_wall, lost_ns = clock.wall(), clock.mono_ns()
    watch.look(NO_QUORUM)
    clock.advance(1.0)
    with caplog.at_level(logging.ERROR, logger="nfvha.controller.quorum"):
        watch.look(NO_QUORUM)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "no quorum" in errors[0] and "c2" in errors[0]
    clock.advance(2.5)
    live = watch.status()["no_quorum"]
    assert live is not None and live["for_s"] == 3.5 and live["answering"] == ["m1"]
    assert live["since"].startswith(datetime.fromtimestamp(lost_wall, UTC).isoformat()[:19])
    watch.look(IN_SYNC)
    assert watch.current is None and len(watch.ended) == 1
    o = watch.ended[0]
    assert (o.since_wall, o.since_mono_ns) == (lost_wall, lost_ns)
    assert o.until_wall == clock.wall() and o.duration_s(0) == 3.5
    assert watch.status()["no_quorum"] is None and watch.status()["last_outage"]["for_s"] == 3.5


@pytest.mark.req("FM-2")
async def test_first_leader_after_the_quorum_outage_raises_and_clears_it_once(
        alarm_bus: AlarmBus, clock: ManualClock) -> None:
    seen_by_c2 = outage_seen("c2", clock)
    # another member looked 0.4 s later: the same outage, at other times
    seen_by_c3 = outage_seen("c3", ManualClock(), skew_s=0.4)
    o = seen_by_c2.ended[0]
    c2 = leader_alarms("c2", alarm_bus, clock)
    await c2.look(watched(seen_by_c2, clock))
    [alarm] = alarm_bus.etcd_alarms()
    assert alarm.eventTime.timestamp() == o.since_wall  # its detection time
    assert alarm.alarmClearedTime is not None and alarm.perceivedSeverity == Severity.CLEARED
    assert alarm.probableCause == "etcd-quorum-lost"
    assert alarm.faultDetails and "no quorum for 10.0 s" in alarm.faultDetails[0]
    # subscribers: raised, then cleared
    assert [c.notification for c in alarm_bus.changes] == [
        NotificationType.ALARM, NotificationType.ALARM_CLEARED]
    # later looks of the same term, a next term of c2, then c3 leading: none again
    clock.advance(1.0)
    await c2.look(watched(seen_by_c2, clock))
    await leader_alarms("c2", alarm_bus, clock).look(watched(seen_by_c2, clock))
    await leader_alarms("c3", alarm_bus, clock).look(watched(seen_by_c3, clock))
    assert len(alarm_bus.etcd_alarms()) == 1 and len(alarm_bus.changes) == 2


@pytest.mark.req("FM-2")
async def test_quorum_outage_waits_for_its_end_the_gate_and_postgresql(
        alarm_bus: AlarmBus, clock: ManualClock) -> None:
    watch = QuorumWatch("c1", clock)
    for _ in range(3):
        clock.advance(1.0)
        watch.look(NO_QUORUM)
    leading = False
    cpa = leader_alarms("c1", alarm_bus, clock, lambda: leading)
    # still going, as this member's last look saw it: nothing yet (and no leader anyway)
    await cpa.look(watched(watch, clock, NO_QUORUM))
    clock.advance(1.0)
    watch.look(IN_SYNC)
    await cpa.look(watched(watch, clock))  # over, but the term's gate is closed
    alarm_bus.down = True
    leading = True
    clock.advance(1.0)
    await cpa.look(watched(watch, clock))  # PostgreSQL refuses: kept for the next look
    assert alarm_bus.etcd_alarms() == []
    alarm_bus.down = False
    clock.advance(1.0)
    await cpa.look(watched(watch, clock))
    [alarm] = alarm_bus.etcd_alarms()
    assert alarm.eventTime.timestamp() == watch.ended[0].since_wall
    assert alarm.alarmClearedTime is not None


@pytest.mark.req("FM-2")
async def test_a_later_quorum_outage_is_a_new_alarm(alarm_bus: AlarmBus,
                                                    clock: ManualClock) -> None:
    watch = outage_seen("c1", clock, lasting_s=3)
    cpa = leader_alarms("c1", alarm_bus, clock)
    await cpa.look(watched(watch, clock))
    clock.advance(60.0)
    for _ in range(4):
        clock.advance(1.0)
        watch.look(NO_QUORUM)
    clock.advance(1.0)
    watch.look(IN_SYNC)
    await leader_alarms("c1", alarm_bus, clock).look(watched(watch, clock))
    alarms = alarm_bus.etcd_alarms()
    assert [a.eventTime.timestamp() for a in alarms] == [o.since_wall for o in watch.ended]
    assert all(a.alarmClearedTime is not None for a in alarms)


@pytest.mark.req("FM-2")
async def test_a_new_leader_clears_an_etcd_alarm_left_active(alarm_bus: AlarmBus,
                                                             clock: ManualClock) -> None:
    """Raised live by a leader whose watch found no quorum before its term ended."""
    cpa = leader_alarms("c1", alarm_bus, clock)
    for _ in range(2):
        clock.advance(1.0)
        await cpa.look(Watched(etcd=NO_QUORUM, at_ns=clock.mono_ns()))
    [alarm] = alarm_bus.etcd_alarms()
    assert alarm.alarmClearedTime is None
    clock.advance(1.0)
    await leader_alarms("c2", alarm_bus, clock).look(Watched(etcd=IN_SYNC,
                                                             at_ns=clock.mono_ns()))
    [alarm] = alarm_bus.etcd_alarms()
    assert alarm.alarmClearedTime is not None
