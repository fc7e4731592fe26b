"""Compute-node health (FM-9) follows liveness and host alarms as they change, and
only for the host that changed: no periodic walk over every host."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from nfvha.controller import health as health_module
from nfvha.controller.bus import EventBus
from nfvha.controller.directorlink import DirectorLink, TermWork
from nfvha.controller.faults import FaultManagement
from nfvha.controller.health import HealthPublisher
from nfvha.controller.hoststates import HostStates
from nfvha.faults.manager import AlarmManager
from nfvha.faults.model import HostHealth
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.hosts import HostState
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology, parse_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import ManualClock
from nfvha.wire.director import HostState as HostStateMsg
from nfvha.wire.director import Publish

HOSTS = ["h1", "h2", "h3"]
SETTINGS = Settings(host_heartbeat_interval_ms=100, host_heartbeat_misses=3,
                    host_boot_grace_s=1.0)


def topology() -> Topology:
    return parse_topology({
        "name": "t", "settings": SETTINGS.model_dump(),
        "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [
            {"name": h} for h in HOSTS]}]}]})


class Notices:
    """The notifier as health uses it: what it was asked to notify."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []  # host, previous, now
        self.reasons: list[list[str]] = []

    def publish_host_health(self, health: HostHealth, previous: str, *, api_root: str,
                            change_id: str | None = None) -> list[str]:
        self.sent.append((health.hostName, previous, health.healthStatus))
        self.reasons.append(health.reasons)
        return []


class Site:
    """Health as the controller wires it: its mirror of the HA director's host states
    (ADR 0014) and the host alarms."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.liveness = HostStates(HOSTS, self.clock)
        self.store = SqliteAlarmStore(tmp_path / "alarms.db")
        self.alarms = AlarmManager(topology(), self.store, self.clock, SETTINGS)
        self.notices = Notices()
        self.health = HealthPublisher(HOSTS, self.liveness, self.alarms,
                                      cast(Notifier, self.notices), AlarmStream(),
                                      "/vnffm/v1", self.clock)

    def host_state(self, host: str, state: str, reason: str = "") -> None:
        """The director says ``host`` is ``state`` now."""
        self.liveness.apply(HostStateMsg(host=host, state=state,  # type: ignore[arg-type]
                                         reason=reason, since_mono_ns=self.clock.mono_ns(),
                                         boot=1))
        self.health.on_host_state(host)

    def alarm(self, kind: Kind, host: str, **kw: Any) -> None:
        ev = Event(host=host, seq=0, kind=kind, entity=f"host/{host}",
                   event_type=EventType.EQUIPMENT_ALARM, probable_cause="test",
                   event_time=self.clock.wall(), detected_mono_ns=self.clock.mono_ns(), **kw)
        self.health.on_changes(self.alarms.on_event(ev))

    def status(self, host: str) -> str:
        return self.health.current[host].healthStatus


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.store.close()


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts whose health is computed, in order."""
    seen: list[str] = []
    real = health_module.host_health

    def spy(host: str, *args: Any) -> HostHealth:
        seen.append(host)
        return real(host, *args)

    monkeypatch.setattr(health_module, "host_health", spy)
    return seen


@pytest.mark.req("FM-9")
def test_health_follows_liveness_transitions_of_that_host_only(
        site: Site, computed: list[str]) -> None:
    assert {site.status(h) for h in HOSTS} == {"UNKNOWN"}
    site.host_state("h1", "up", "heartbeat received")
    assert site.status("h1") == "HEALTHY" and site.status("h2") == "UNKNOWN"
    assert computed == ["h1"]  # the others did not change: not looked at
    assert site.notices.sent == [("h1", "UNKNOWN", "HEALTHY")]
    site.host_state("h2", "up", "heartbeat received")
    site.host_state("h3", "up", "heartbeat received")
    computed.clear()
    # The director stops hearing h2 and its witnesses still reach it: suspect, DEGRADED
    # at once, not at some periodic refresh.
    site.host_state("h2", "suspect", "unreachable from the controller, but h1 reaches it")
    assert site.status("h2") == "DEGRADED"
    assert site.health.current["h2"].reasons == [
        "unreachable: unreachable from the controller, but h1 reaches it"]
    assert computed == ["h2"]
    assert site.notices.sent[-1] == ("h2", "HEALTHY", "DEGRADED")


@pytest.mark.req("FM-9")
def test_health_follows_the_alarms_of_that_host(site: Site, computed: list[str]) -> None:
    for h in HOSTS:
        site.host_state(h, "up", "heartbeat received")
    computed.clear()
    site.alarm(Kind.HOST_PROCESS_FAILED, "h3", severity=Severity.MAJOR,
               details={"process": "vswitch"})
    assert site.status("h3") == "DEGRADED" and computed == ["h3"]
    assert site.health.current["h3"].alarmIds
    site.alarm(Kind.HOST_DOWN, "h3", severity=Severity.CRITICAL)
    assert site.status("h3") == "FAILED"
    site.alarm(Kind.HOST_UP, "h3", severity=Severity.CLEARED, clears=True)
    site.alarm(Kind.HOST_PROCESS_RESTARTED, "h3", severity=Severity.CLEARED, clears=True,
               details={"process": "vswitch"})
    assert site.status("h3") == "HEALTHY"
    assert set(computed) == {"h3"}
    assert [n[2] for n in site.notices.sent if n[0] == "h3"] == \
        ["HEALTHY", "DEGRADED", "FAILED", "DEGRADED", "HEALTHY"]


class _Bus:
    """The event bus as the director link's publishing needs it."""

    def __init__(self) -> None:
        self.published: list[Sequence[Event]] = []
        self.last_id = 0

    async def publish(self, events: Sequence[Event]) -> list[Any]:
        self.published.append(events)
        return []

    def subscribe(self, listener: Any) -> None:
        pass


def _link(site: Site, bus: Any, told: list[str]) -> DirectorLink:
    link = DirectorLink(Path("/nonexistent/director.sock"), "t0000", site.liveness,
                        site.clock)

    def settled(host: str) -> None:
        told.append(host)
        site.health.on_host_state(host)

    link.attach(TermWork(bus, lambda e: True, None, lambda *a, **k: None, None,
                         host_state_settled=settled))
    return link


def _host_down(host: str, clock: ManualClock) -> Event:
    return Event(host=host, seq=0, origin="controller", kind=Kind.HOST_DOWN,
                 entity=f"host/{host}", severity=Severity.CRITICAL,
                 event_type=EventType.EQUIPMENT_ALARM, probable_cause="host-failure",
                 description=f"host {host} is down: fence device reports power off",
                 event_time=clock.wall(), detected_mono_ns=clock.mono_ns())


async def test_the_director_link_tells_health_once_a_transition_is_settled(
        site: Site) -> None:
    """A change without an event (a first heartbeat) is told at once; one the director
    makes an event of (suspect, down, up again) once that event is stored."""
    bus = _Bus()
    told: list[str] = []
    link = _link(site, bus, told)
    link._host_state(HostStateMsg(host="h2", state="up", reason="heartbeat received"))
    assert told == ["h2"] and site.status("h2") == "HEALTHY"
    link._host_state(HostStateMsg(host="h2", state="down", reason="power off"))
    assert told == ["h2"]  # its event is not stored yet
    await link._publish(Publish(id=1, events=[_host_down("h2", site.clock)]))
    assert told == ["h2", "h2"] and site.status("h2") == "FAILED"
    assert [e.kind for batch in bus.published for e in batch] == [Kind.HOST_DOWN]


def test_a_failing_health_listener_does_not_stop_the_mirror(site: Site) -> None:
    def broken(host: str, old: HostState, new: HostState) -> None:
        raise RuntimeError("bug")

    after: list[str] = []
    site.liveness.on_change(broken)
    site.liveness.on_change(lambda h, old, new: after.append(h))
    site.liveness.apply(HostStateMsg(host="h1", state="up", reason="heartbeat received"))
    assert after == ["h1"] and site.liveness.up("h1")


@pytest.mark.req("FM-9")
async def test_a_host_down_is_notified_failed_with_its_alarm_as_the_reason(
        tmp_path: Path) -> None:
    """As the controller wires it: the director's host state and its event -> store ->
    alarm -> health. The FAILED notification carries the host-failure alarm, not a bare
    status."""
    clock = ManualClock()
    liveness = HostStates(HOSTS, clock)
    store = SqliteEventStore(tmp_path / "events.db")
    alarm_store, ager = SqliteAlarmStore(tmp_path / "events.db"), SqliteAlarmStore(
        tmp_path / "events.db")
    alarms = AlarmManager(topology(), alarm_store, clock, SETTINGS)
    faults = FaultManagement(alarms, ager, SETTINGS, clock)
    bus = EventBus(store, clock)
    bus.subscribe(faults.on_events)
    notices = Notices()
    health = HealthPublisher(HOSTS, liveness, alarms, cast(Notifier, notices), AlarmStream(),
                             "/vnffm/v1", clock)
    faults.add_sink(health.on_changes)
    link = DirectorLink(tmp_path / "director.sock", "t0000", liveness, clock)
    link.attach(TermWork(bus, lambda e: True, None, lambda *a, **k: None, None,
                         host_state_settled=health.on_host_state))
    try:
        for h in HOSTS:
            link._host_state(HostStateMsg(host=h, state="up", reason="heartbeat received"))
        link._host_state(HostStateMsg(host="h3", state="down",
                                      reason="fence device reports power off"))
        await link._publish(Publish(id=1, events=[_host_down("h3", clock)]))
        [(prev, reasons)] = [(n[1], r) for n, r in zip(notices.sent, notices.reasons,
                                                        strict=True) if n[0] == "h3"
                             and n[2] != "HEALTHY"]
        assert prev == "HEALTHY" and any(r.startswith("host-failure") for r in reasons)
        assert health.current["h3"].alarmIds
    finally:
        bus.close()
        for s in (store, alarm_store, ager):
            s.close()
