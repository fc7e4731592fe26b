"""Compute-node health (FM-9) follows liveness and host alarms as they change, and
only for the host that changed: no periodic walk over every host."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from nfvha.controller import health as health_module
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.faults import FaultManagement
from nfvha.controller.health import HealthPublisher
from nfvha.controller.liveness import HostLiveness
from nfvha.faults.manager import AlarmManager
from nfvha.faults.model import HostHealth
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology, parse_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import Heartbeat

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
    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock()
        self.liveness = HostLiveness(HOSTS, SETTINGS, self.clock)
        self.store = SqliteAlarmStore(tmp_path / "alarms.db")
        self.alarms = AlarmManager(topology(), self.store, self.clock, SETTINGS)
        self.notices = Notices()
        self.health = HealthPublisher(HOSTS, self.liveness, self.alarms,
                                      cast(Notifier, self.notices), AlarmStream(),
                                      "/vnffm/v1", self.clock)

    def heartbeat(self, host: str, hears: Sequence[str] = ()) -> None:
        """``host``'s heartbeat, saying it hears ``hears`` (its peers) well."""
        hb = Heartbeat(host=host, boot="b1", n=1, peers_seen_ms={h: 50 for h in hears})
        for t in self.liveness.heartbeat(hb):
            self.health.on_host_state(t.host)

    def tick(self) -> None:
        for t in self.liveness.tick():
            self.health.on_host_state(t.host)

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
    site.heartbeat("h1")
    assert site.status("h1") == "HEALTHY" and site.status("h2") == "UNKNOWN"
    assert computed == ["h1"]  # the others did not change: not looked at
    assert site.notices.sent == [("h1", "UNKNOWN", "HEALTHY")]
    site.heartbeat("h1")  # no transition: nothing to do
    assert computed == ["h1"]
    site.heartbeat("h2")
    site.heartbeat("h3")
    computed.clear()
    # The controller stops hearing h2 (its peers still do): suspect, DEGRADED at once,
    # not at some periodic refresh.
    for _ in range(4):
        site.clock.advance(0.1)
        site.heartbeat("h1", hears=["h2"])
        site.heartbeat("h3", hears=["h2"])
        site.tick()
    assert site.status("h2") == "DEGRADED"
    assert site.health.current["h2"].reasons == [
        "unreachable: unreachable from the controller, but peers still hear it"]
    assert computed == ["h2"]
    assert site.notices.sent[-1] == ("h2", "HEALTHY", "DEGRADED")


@pytest.mark.req("FM-9")
def test_health_follows_the_alarms_of_that_host(site: Site, computed: list[str]) -> None:
    for h in HOSTS:
        site.heartbeat(h)
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
    """The event bus as the agent server's liveness events need it."""

    def __init__(self) -> None:
        self.published: list[Sequence[Event]] = []

    async def publish(self, events: Sequence[Event]) -> list[Any]:
        self.published.append(events)
        return []


async def test_the_agent_server_tells_health_of_each_liveness_transition(
        site: Site) -> None:
    """Until the HA director's host states arrive (ADR 0014), liveness transitions are
    seen where heartbeats are judged: the agent server."""
    bus = _Bus()
    server = AgentServer(("127.0.0.1", 0), cast(EventBus, bus), site.liveness, site.clock,
                         tick_s=1.0)
    told: list[str] = []
    server.watch_host_state(told.append)
    server.watch_host_state(site.health.on_host_state)
    # A first heartbeat has no event: told at once.
    server._apply(site.liveness.heartbeat(Heartbeat(host="h2", boot="b1", n=1)))
    assert told == ["h2"] and site.status("h2") == "HEALTHY"
    site.clock.advance(1.5)  # everyone silent past the boot grace: suspect
    server._apply(site.liveness.tick())
    # Suspect and down have events: told once those are stored (and alarmed).
    assert told == ["h2"]
    for _ in range(3):
        await asyncio.sleep(0)
    # h1, never heard of by the controller nor by h2 (up until this tick): down at once.
    assert told == ["h2", "h1", "h2", "h3"]
    assert [site.status(h) for h in HOSTS] == ["FAILED", "DEGRADED", "DEGRADED"]
    kinds = [e.kind for batch in bus.published for e in batch]
    assert kinds.count(Kind.HOST_SUSPECT) == 3 and kinds.count(Kind.HOST_DOWN) == 1


def test_a_failing_health_listener_does_not_stop_liveness(site: Site) -> None:
    server = AgentServer(("127.0.0.1", 0), cast(EventBus, _Bus()), site.liveness,
                         site.clock, tick_s=1.0)
    after: list[str] = []

    def broken(host: str) -> None:
        raise RuntimeError("bug")

    server.watch_host_state(broken)
    server.watch_host_state(after.append)
    server._apply(site.liveness.heartbeat(Heartbeat(host="h1", boot="b1", n=1)))
    assert after == ["h1"]


@pytest.mark.req("FM-9")
async def test_a_host_down_is_notified_failed_with_its_alarm_as_the_reason(
        tmp_path: Path) -> None:
    """As the controller wires it: liveness -> event -> alarm -> health. The FAILED
    notification carries the host-failure alarm, not a bare status."""
    clock = ManualClock()
    power = {"h3": "on"}
    liveness = HostLiveness(HOSTS, SETTINGS, clock, lambda h: power.get(h))  # type: ignore
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
    server = AgentServer(("127.0.0.1", 0), bus, liveness, clock, tick_s=1.0)
    server.watch_host_state(health.on_host_state)
    try:
        for h in HOSTS:
            server._apply(liveness.heartbeat(Heartbeat(host=h, boot="b1", n=1)))
        clock.advance(0.2)
        for h in ("h1", "h2"):
            server._apply(liveness.heartbeat(Heartbeat(host=h, boot="b1", n=2)))
        power["h3"] = "off"  # h3 lost its power: suspect, and down by its fence device
        clock.advance(0.2)
        server._apply(liveness.tick())

        async def failed() -> None:  # the commit in the bus's thread, then the decision
            while not any(n[0] == "h3" and n[2] == "FAILED" for n in notices.sent):
                await bus.wait_after(bus.last_id, 0.05)

        await asyncio.wait_for(failed(), 30)
        [(prev, reasons)] = [(n[1], r) for n, r in zip(notices.sent, notices.reasons,
                                                        strict=True) if n[0] == "h3"
                             and n[2] != "HEALTHY"]
        assert prev == "HEALTHY" and any(r.startswith("host-failure") for r in reasons)
        assert health.current["h3"].alarmIds
    finally:
        bus.close()
        for s in (store, alarm_store, ager):
            s.close()
