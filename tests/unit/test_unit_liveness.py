"""Host liveness: up -> suspect -> confirmed down, driven by a manual clock.

Settings used throughout: heartbeat every 100 ms, 3 misses -> suspect after 300 ms,
confirmation retried every 100 ms.
"""

from __future__ import annotations

from typing import Literal

import pytest

from nfvha.controller.liveness import HostLiveness, HostState, Transition
from nfvha.model.settings import Settings
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import Heartbeat

SUSPECT_S = 0.300  # host_suspect_after_ms with the settings below
HOSTS = ["h1", "h2", "h3"]
Power = Literal["on", "off"] | None


def settings() -> Settings:
    return Settings(
        host_heartbeat_interval_ms=100, host_heartbeat_misses=3, host_confirm_retry_ms=100
    )


class FakePower:
    """A fence device whose answer the test sets per host; records every query."""

    def __init__(self) -> None:
        self.status: dict[str, Power] = {}
        self.queries: list[str] = []

    def __call__(self, host: str) -> Power:
        self.queries.append(host)
        return self.status.get(host)


def hb(host: str, boot: str = "boot-1", n: int = 1, **peers_seen_ms: int) -> Heartbeat:
    return Heartbeat(host=host, boot=boot, n=n, peers_seen_ms=peers_seen_ms)


def moves(ts: list[Transition]) -> list[tuple[str, HostState, HostState]]:
    return [(t.host, t.old, t.new) for t in ts]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def power() -> FakePower:
    return FakePower()


@pytest.fixture
def fenced(clock: ManualClock, power: FakePower) -> HostLiveness:
    return HostLiveness(HOSTS, settings(), clock, power)


@pytest.fixture
def unfenced(clock: ManualClock) -> HostLiveness:
    return HostLiveness(HOSTS, settings(), clock, None)


def test_hosts_start_unknown(fenced: HostLiveness, clock: ManualClock) -> None:
    assert all(fenced.state(h).state == HostState.UNKNOWN for h in HOSTS)
    clock.advance(10)
    assert fenced.tick() == []  # still within the boot grace period
    assert fenced.state("h1").state == HostState.UNKNOWN


@pytest.mark.req("HV-1")
def test_host_never_heard_of_is_suspected_after_boot_grace(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    """A host already dead when the controller starts must not stay 'unknown' forever."""
    grace = settings().host_boot_grace_s
    fenced.heartbeat(hb("h2"))
    clock.advance(grace - 1.0)
    fenced.heartbeat(hb("h2"))
    assert [m for m in moves(fenced.tick()) if m[0] == "h1"] == []
    clock.advance(1.5)
    fenced.heartbeat(hb("h2"))
    power.status["h1"] = "off"
    assert ("h1", HostState.UNKNOWN, HostState.SUSPECT) in moves(fenced.tick())
    assert fenced.state("h1").state == HostState.DOWN


def test_first_heartbeat_brings_host_up(fenced: HostLiveness, clock: ManualClock) -> None:
    ts = fenced.heartbeat(hb("h1"))
    assert moves(ts) == [("h1", HostState.UNKNOWN, HostState.UP)]
    assert ts[0].at_mono_ns == clock.mono_ns()
    assert "heartbeat" in ts[0].reason
    assert fenced.state("h1").state == HostState.UP
    # Further heartbeats from an up host are not transitions.
    assert fenced.heartbeat(hb("h1", n=2)) == []


def test_heartbeat_from_unknown_host_is_ignored(fenced: HostLiveness) -> None:
    assert fenced.heartbeat(hb("stranger")) == []
    assert "stranger" not in fenced.hosts


def test_suspect_only_after_suspect_time(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "on"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S - 0.010)
    assert fenced.tick() == []
    assert fenced.state("h1").state == HostState.UP
    assert power.queries == []  # not suspect: the fence is not asked
    clock.advance(0.020)
    ts = fenced.tick()
    assert moves(ts) == [("h1", HostState.UP, HostState.SUSPECT)]
    assert "no heartbeat for 310 ms" in ts[0].reason


def test_heartbeats_keep_host_up(fenced: HostLiveness, clock: ManualClock) -> None:
    fenced.heartbeat(hb("h1"))
    for n in range(2, 50):
        clock.advance(0.100)
        assert fenced.heartbeat(hb("h1", n=n)) == []
        assert fenced.tick() == []
    assert fenced.state("h1").state == HostState.UP


@pytest.mark.req("HV-1")
def test_suspect_to_down_when_fence_reports_power_off(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "off"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S + 0.010)
    ts = fenced.tick()
    assert moves(ts) == [
        ("h1", HostState.UP, HostState.SUSPECT),
        ("h1", HostState.SUSPECT, HostState.DOWN),
    ]
    assert "power off" in ts[1].reason
    assert fenced.state("h1").state == HostState.DOWN
    assert power.queries == ["h1"]


@pytest.mark.req("HV-1")
def test_slow_network_does_not_declare_a_powered_host_dead(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "on"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S + 0.010)
    assert moves(fenced.tick()) == [("h1", HostState.UP, HostState.SUSPECT)]
    # However long the silence lasts, a host whose power is on stays suspect.
    for _ in range(100):
        clock.advance(0.100)
        assert fenced.tick() == []
    rec = fenced.state("h1")
    assert rec.state == HostState.SUSPECT
    assert "power on" in rec.reason
    # The confirmation is retried every host_confirm_retry_ms, not on every tick.
    assert 95 <= len(power.queries) <= 102


@pytest.mark.req("HV-1")
def test_confirmation_is_retried_and_power_off_later_confirms(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "on"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S + 0.010)
    fenced.tick()
    clock.advance(0.050)
    fenced.tick()
    assert len(power.queries) == 1  # retry interval not reached yet
    power.status["h1"] = "off"
    clock.advance(0.060)
    assert moves(fenced.tick()) == [("h1", HostState.SUSPECT, HostState.DOWN)]


@pytest.mark.req("HV-1")
def test_no_fence_down_when_every_up_peer_lost_the_host(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    for h in HOSTS:
        unfenced.heartbeat(hb(h))
    clock.advance(0.200)
    # The peers keep beating and report h1 unseen for longer than the suspect time.
    unfenced.heartbeat(hb("h2", n=2, h1=400, h3=50))
    unfenced.heartbeat(hb("h3", n=2, h1=450, h2=50))
    clock.advance(0.110)
    ts = unfenced.tick()
    assert moves(ts) == [
        ("h1", HostState.UP, HostState.SUSPECT),
        ("h1", HostState.SUSPECT, HostState.DOWN),
    ]
    assert "h2" in ts[1].reason and "h3" in ts[1].reason
    assert unfenced.state("h2").state == HostState.UP


@pytest.mark.req("HV-1")
def test_no_fence_stays_suspect_while_one_peer_still_hears_it(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    for h in HOSTS:
        unfenced.heartbeat(hb(h))
    clock.advance(0.200)
    unfenced.heartbeat(hb("h2", n=2, h1=400, h3=50))
    unfenced.heartbeat(hb("h3", n=2, h1=50, h2=50))  # h3 still hears h1
    clock.advance(0.110)
    assert moves(unfenced.tick()) == [("h1", HostState.UP, HostState.SUSPECT)]
    for n in range(3, 20):
        clock.advance(0.100)
        unfenced.heartbeat(hb("h2", n=n, h1=400 + n * 100, h3=50))
        unfenced.heartbeat(hb("h3", n=n, h1=50, h2=50))
        assert unfenced.tick() == []
    rec = unfenced.state("h1")
    assert rec.state == HostState.SUSPECT
    assert "peers still hear it" in rec.reason


@pytest.mark.req("HV-1")
def test_no_fence_a_peer_report_at_the_suspect_time_is_not_loss(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    # A peer that last heard the host exactly the suspect time ago has not (yet) lost it.
    for h in ("h1", "h2"):
        unfenced.heartbeat(hb(h))
    clock.advance(0.200)
    unfenced.heartbeat(hb("h2", n=2, h1=300))
    clock.advance(0.110)
    assert moves(unfenced.tick()) == [("h1", HostState.UP, HostState.SUSPECT)]
    clock.advance(0.100)
    unfenced.heartbeat(hb("h2", n=3, h1=301))
    assert moves(unfenced.tick()) == [("h1", HostState.SUSPECT, HostState.DOWN)]


@pytest.mark.req("HV-1")
def test_no_fence_peer_that_never_heard_the_host_counts_as_lost(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    for h in ("h1", "h2"):
        unfenced.heartbeat(hb(h))
    clock.advance(0.200)
    unfenced.heartbeat(hb("h2", n=2))  # no entry for h1 at all
    clock.advance(0.110)
    assert moves(unfenced.tick())[-1] == ("h1", HostState.SUSPECT, HostState.DOWN)


@pytest.mark.req("HV-1")
def test_no_fence_and_no_up_peer_stays_suspect(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    unfenced.heartbeat(hb("h1"))  # h2, h3 never came up: no witness
    clock.advance(SUSPECT_S + 0.010)
    assert moves(unfenced.tick()) == [("h1", HostState.UP, HostState.SUSPECT)]
    clock.advance(1.0)
    assert unfenced.tick() == []
    rec = unfenced.state("h1")
    assert rec.state == HostState.SUSPECT
    assert "no peer" in rec.reason


@pytest.mark.req("HV-1")
def test_fence_without_answer_falls_back_to_peers(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    # power_status returns None for h1 (no fence device): the peers decide.
    for h in ("h1", "h2"):
        fenced.heartbeat(hb(h))
    clock.advance(0.200)
    fenced.heartbeat(hb("h2", n=2, h1=500))
    clock.advance(0.110)
    assert moves(fenced.tick())[-1] == ("h1", HostState.SUSPECT, HostState.DOWN)
    assert power.queries == ["h1"]


def test_suspect_host_heartbeat_brings_it_back_up(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "on"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S + 0.010)
    fenced.tick()
    ts = fenced.heartbeat(hb("h1", n=2))
    assert moves(ts) == [("h1", HostState.SUSPECT, HostState.UP)]


def test_heartbeat_after_down_brings_host_up(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "off"
    fenced.heartbeat(hb("h1"))
    clock.advance(SUSPECT_S + 0.010)
    fenced.tick()
    assert fenced.state("h1").state == HostState.DOWN
    clock.advance(5)
    assert fenced.tick() == []  # down stays down without news
    ts = fenced.heartbeat(hb("h1", boot="boot-2"))
    assert moves(ts) == [("h1", HostState.DOWN, HostState.UP)]
    # ... and is suspected afresh when it goes quiet again.
    clock.advance(SUSPECT_S + 0.010)
    assert moves(fenced.tick())[0] == ("h1", HostState.UP, HostState.SUSPECT)


def test_changed_boot_id_while_up_is_a_reboot(fenced: HostLiveness, clock: ManualClock) -> None:
    fenced.heartbeat(hb("h1", boot="boot-1"))
    clock.advance(0.050)
    ts = fenced.heartbeat(hb("h1", boot="boot-2"))
    assert len(ts) == 1
    assert (ts[0].old, ts[0].new) == (HostState.UP, HostState.UP)
    assert "rebooted" in ts[0].reason
    assert fenced.state("h1").boot == "boot-2"
    # The same boot id again is not another reboot.
    assert fenced.heartbeat(hb("h1", boot="boot-2", n=2)) == []
