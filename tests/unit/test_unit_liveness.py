"""Host liveness (ADR 0015): up -> suspect -> confirmed down by the fence device or by
witnesses, driven by a manual clock.

Settings used throughout: heartbeat every 100 ms, 3 misses -> suspect after 300 ms,
confirmation retried every 100 ms, 3 witnesses per round.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Literal

import pytest

from nfvha.controller.config import HostEntry
from nfvha.director.liveness import (
    HostLiveness,
    HostRecord,
    HostState,
    ProbeRequest,
    TickResult,
    Transition,
)
from nfvha.model.settings import Settings
from nfvha.util.clock import ManualClock

SUSPECT_S = 0.300  # host_suspect_after_ms with the settings below
RETRY_S = 0.100
HOSTS = ["h1", "h2", "h3"]
Power = Literal["on", "off"] | None


def settings(**kw: int) -> Settings:
    return Settings(host_heartbeat_interval_ms=100, host_heartbeat_misses=3,
                    host_confirm_retry_ms=100, host_probe_witnesses=3, **kw)


class FakePower:
    """A fence device whose answer the test sets per host; records every query."""

    def __init__(self) -> None:
        self.status: dict[str, Power] = {}
        self.queries: list[str] = []

    def __call__(self, host: str) -> Power:
        self.queries.append(host)
        return self.status.get(host)


def moves(ts: list[Transition] | TickResult) -> list[tuple[str, HostState, HostState]]:
    if isinstance(ts, TickResult):
        ts = ts.transitions
    return [(t.host, t.old, t.new) for t in ts]


def racked(layout: dict[str, list[str]]) -> list[HostEntry]:
    """Controller config entries: rack -> its hosts."""
    return [HostEntry(name=h, rack=rack) for rack, hosts in layout.items() for h in hosts]


def all_up(live: HostLiveness, hosts: list[str], boot: int = 1, seq: int = 1) -> None:
    for h in hosts:
        live.heartbeat(h, boot, seq)


def silence(live: HostLiveness, clock: ManualClock, silent: str) -> TickResult:
    """Everyone but ``silent`` keeps beating until ``silent`` is overdue; the tick
    that suspects it."""
    others = [h for h in live.hosts if h != silent and live.state(h).state == HostState.UP]
    for seq in range(2, 5):
        clock.advance(0.100)
        all_up(live, others, seq=seq)
    clock.advance(0.015)
    return live.tick()


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
    return HostLiveness(HOSTS, settings(), clock, None, rng=random.Random(1))


# -- suspicion ------------------------------------------------------------------------


def test_hosts_start_unknown(fenced: HostLiveness, clock: ManualClock) -> None:
    assert all(fenced.state(h).state == HostState.UNKNOWN for h in HOSTS)
    assert all(fenced.state(h).boot is None for h in HOSTS)
    clock.advance(10)
    assert fenced.tick() == TickResult()  # still within the boot grace period
    assert fenced.state("h1").state == HostState.UNKNOWN


@pytest.mark.req("HV-1")
def test_host_never_heard_of_is_suspected_after_boot_grace(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    """A host already dead when the director starts must not stay 'unknown' forever."""
    grace = settings().host_boot_grace_s
    fenced.heartbeat("h2", 1, 1)
    clock.advance(grace - 1.0)
    fenced.heartbeat("h2", 1, 2)
    assert [m for m in moves(fenced.tick()) if m[0] == "h1"] == []
    clock.advance(1.5)
    fenced.heartbeat("h2", 1, 3)
    power.status["h1"] = "off"
    ts = fenced.tick()
    assert ("h1", HostState.UNKNOWN, HostState.SUSPECT) in moves(ts)
    assert "no heartbeat since the director started 30 s ago" in ts.transitions[0].reason
    assert fenced.state("h1").state == HostState.DOWN
    assert fenced.state("h2").state == HostState.UP


def test_first_heartbeat_brings_host_up(fenced: HostLiveness, clock: ManualClock) -> None:
    ts = fenced.heartbeat("h1", 7, 1)
    assert moves(ts) == [("h1", HostState.UNKNOWN, HostState.UP)]
    assert ts[0].at_mono_ns == clock.mono_ns()
    assert "heartbeat" in ts[0].reason
    rec = fenced.state("h1")
    assert (rec.state, rec.boot, rec.seq, rec.last_hb_mono_ns, rec.since_mono_ns) == (
        HostState.UP, 7, 1, clock.mono_ns(), clock.mono_ns())
    # Further heartbeats from an up host are not transitions.
    assert fenced.heartbeat("h1", 7, 2) == []


def test_heartbeat_from_unknown_host_is_ignored(fenced: HostLiveness) -> None:
    assert fenced.heartbeat("stranger", 1, 1) == []
    assert "stranger" not in fenced.hosts


def test_suspect_only_after_suspect_time(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "on"
    fenced.heartbeat("h1", 1, 1)
    clock.advance(SUSPECT_S - 0.010)
    assert fenced.tick() == TickResult()
    assert fenced.state("h1").state == HostState.UP
    assert power.queries == []  # not suspect: the fence is not asked
    clock.advance(0.020)
    ts = fenced.tick()
    assert moves(ts) == [("h1", HostState.UP, HostState.SUSPECT)]
    assert "no heartbeat for 310 ms" in ts.transitions[0].reason


def test_heartbeats_keep_host_up(fenced: HostLiveness, clock: ManualClock) -> None:
    fenced.heartbeat("h1", 1, 1)
    for n in range(2, 50):
        clock.advance(0.100)
        assert fenced.heartbeat("h1", 1, n) == []
        assert fenced.tick() == TickResult()
    assert fenced.state("h1").state == HostState.UP


def test_hosts_are_suspected_in_the_order_they_went_quiet(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, ["h3", "h1", "h2"])
    clock.advance(0.050)
    unfenced.heartbeat("h3", 1, 2)  # h3 now the most recent
    clock.advance(SUSPECT_S - 0.040)
    assert moves(unfenced.tick()) == [("h1", HostState.UP, HostState.SUSPECT),
                                      ("h2", HostState.UP, HostState.SUSPECT)]
    assert unfenced.state("h3").state == HostState.UP
    clock.advance(0.050)
    assert moves(unfenced.tick()) == [("h3", HostState.UP, HostState.SUSPECT)]


# -- work proportional to change -------------------------------------------------------


class CountingRecords(dict[str, HostRecord]):
    """The liveness's host table, counting every record looked up; walking it fails."""

    def __init__(self, records: dict[str, HostRecord]) -> None:
        super().__init__(records)
        self.touched = 0

    def __getitem__(self, key: str) -> HostRecord:
        self.touched += 1
        return super().__getitem__(key)

    def get(self, key: str, default: HostRecord | None = None) -> HostRecord | None:  # type: ignore[override]
        self.touched += 1
        return super().get(key, default)

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the host table was walked")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the host table was walked")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the host table was walked")


@pytest.mark.req("HV-1")
def test_tick_work_is_proportional_to_change_not_to_hosts(clock: ManualClock) -> None:
    layout = {f"r{r}": [f"h{r}-{i}" for i in range(40)] for r in range(25)}
    names = [h for hosts in layout.values() for h in hosts]
    assert len(names) == 1000
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(3))
    all_up(live, names)
    table = CountingRecords(live.hosts)
    live.hosts = table
    quiet = "h7-3"
    beating = [h for h in names if h != quiet]
    touched_per_tick = []
    for seq in range(2, 5):
        clock.advance(0.100)
        table.touched = 0
        all_up(live, beating, seq=seq)
        assert table.touched == len(beating)  # one record per heartbeat
        table.touched = 0
        assert live.tick() == TickResult()
        touched_per_tick.append(table.touched)
    assert max(touched_per_tick) <= 2  # only the head of the order: the quiet host
    clock.advance(0.015)
    table.touched = 0
    result = live.tick()
    assert moves(result) == [(quiet, HostState.UP, HostState.SUSPECT)]
    assert len(result.probes) == 3
    # The suspect, the next head, and the witnesses' racks: tens, not a thousand.
    assert table.touched <= 40, table.touched
    # Nothing changes: the tick looks at the head and at the suspect's due round only.
    table.touched = 0
    clock.advance(0.040)
    all_up(live, beating, seq=9)
    table.touched = 0
    assert live.tick() == TickResult()
    assert table.touched <= 2


# -- the fence device -------------------------------------------------------------------


@pytest.mark.req("HV-1")
def test_suspect_to_down_when_fence_reports_power_off(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    power.status["h1"] = "off"
    fenced.heartbeat("h1", 1, 1)
    clock.advance(SUSPECT_S + 0.010)
    ts = fenced.tick()
    assert moves(ts) == [
        ("h1", HostState.UP, HostState.SUSPECT),
        ("h1", HostState.SUSPECT, HostState.DOWN),
    ]
    assert ts.probes == []
    assert "power off" in ts.transitions[1].reason
    assert fenced.state("h1").state == HostState.DOWN
    assert power.queries == ["h1"]


@pytest.mark.req("HV-1")
def test_slow_network_does_not_declare_a_powered_host_dead(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    all_up(fenced, HOSTS)
    power.status["h1"] = "on"
    assert moves(silence(fenced, clock, "h1")) == [("h1", HostState.UP, HostState.SUSPECT)]
    # However long the silence lasts, a host whose power is on stays suspect, and its
    # peers are not bothered: the fence device answered.
    for seq in range(10, 110):
        clock.advance(0.100)
        all_up(fenced, ["h2", "h3"], seq=seq)
        assert fenced.tick() == TickResult()
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
    fenced.heartbeat("h1", 1, 1)
    clock.advance(SUSPECT_S + 0.010)
    fenced.tick()
    clock.advance(0.050)
    fenced.tick()
    assert len(power.queries) == 1  # retry interval not reached yet
    power.status["h1"] = "off"
    clock.advance(0.060)
    assert moves(fenced.tick()) == [("h1", HostState.SUSPECT, HostState.DOWN)]


@pytest.mark.req("HV-1")
def test_fence_without_answer_falls_back_to_witnesses(
    fenced: HostLiveness, clock: ManualClock, power: FakePower
) -> None:
    all_up(fenced, HOSTS)
    result = silence(fenced, clock, "h1")  # power_status answers None for h1
    assert power.queries == ["h1"]
    assert sorted(p.witness for p in result.probes) == ["h2", "h3"]


# -- witnesses ----------------------------------------------------------------------


@pytest.mark.parametrize("rack_a", [4, 12], ids=["small-rack", "rack-of-most-hosts"])
def test_witnesses_are_k_up_hosts_of_other_racks(clock: ManualClock, rack_a: int) -> None:
    layout = {"a": [f"a{i}" for i in range(1, rack_a + 1)], "b": ["b1", "b2", "b3"],
              "c": ["c1", "c2", "c3"]}
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(5))
    all_up(live, [*layout["a"], "b1", "b2", "b3", "c1", "c2"])  # c3 never up
    for seq in range(30):
        result = silence(live, clock, "a1")
        witnesses = [p.witness for p in result.probes]
        assert len(witnesses) == 3 == len(set(witnesses))
        assert {p.target for p in result.probes} == {"a1"}
        assert len({p.nonce for p in result.probes}) == 1
        assert set(witnesses) <= {"b1", "b2", "b3", "c1", "c2"}  # other racks, up
        live.heartbeat("a1", 1, 100 + seq)


def test_witness_choice_is_random_and_only_among_up_hosts(clock: ManualClock) -> None:
    layout = {"a": ["a1", "a2"], "b": ["b1", "b2", "b3", "b4"], "c": ["c1", "c2", "c3"]}
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(7))
    all_up(live, ["a1", "a2", "b1", "b2", "b3", "b4", "c1", "c2", "c3"])
    silence(live, clock, "c3")  # suspect: never a witness
    seen: Counter[str] = Counter()
    for seq in range(100):
        live.heartbeat("a1", 2, seq)  # a1 comes back: suspected afresh each time
        for h in ("a2", "b1", "b2", "b3", "b4", "c1", "c2"):
            live.heartbeat(h, 1, 100 + seq)
        clock.advance(SUSPECT_S + 0.015)
        for h in ("a2", "b1", "b2", "b3", "b4", "c1", "c2"):
            live.heartbeat(h, 1, 200 + seq)
        result = live.tick()
        round_ = [p.witness for p in result.probes if p.target == "a1"]
        assert len(round_) == 3 == len(set(round_))
        seen.update(round_)
    assert "a1" not in seen and "c3" not in seen and "a2" not in seen
    # Every up host of the other racks gets picked, none of them every time.
    assert set(seen) == {"b1", "b2", "b3", "b4", "c1", "c2"}
    assert max(seen.values()) < 100


def test_too_few_hosts_in_other_racks_the_targets_rack_fills_in(clock: ManualClock) -> None:
    layout = {"a": ["a1", "a2", "a3", "a4", "a5", "a6"], "b": ["b1"]}
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(9))
    all_up(live, [h for hosts in layout.values() for h in hosts])
    for _ in range(20):
        result = silence(live, clock, "a1")
        witnesses = [p.witness for p in result.probes]
        assert len(witnesses) == 3 == len(set(witnesses))
        assert "b1" in witnesses and "a1" not in witnesses
        live.heartbeat("a1", 1, 99)


def test_no_racks_given_any_up_host_is_a_witness(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    result = silence(unfenced, clock, "h2")
    # Fewer up peers than host_probe_witnesses: all of them are asked.
    assert sorted(p.witness for p in result.probes) == ["h1", "h3"]


@pytest.mark.req("HV-1")
def test_down_when_every_witness_asked_could_not_reach_it(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    result = silence(unfenced, clock, "h1")
    assert moves(result) == [("h1", HostState.UP, HostState.SUSPECT)]
    (w1, w2) = [p.witness for p in result.probes]
    nonce = result.probes[0].nonce
    assert unfenced.probe_result(w1, "h1", nonce, reached=False) == []
    assert unfenced.state("h1").state == HostState.SUSPECT  # one of two is not enough
    ts = unfenced.probe_result(w2, "h1", nonce, reached=False)
    assert moves(ts) == [("h1", HostState.SUSPECT, HostState.DOWN)]
    assert ts[0].reason == f"witnesses {w1}, {w2} could not reach it"
    assert unfenced.state("h2").state == HostState.UP


@pytest.mark.req("HV-1")
def test_stays_suspect_when_any_witness_reaches_it(clock: ManualClock) -> None:
    layout = {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"]}
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(2))
    all_up(live, [h for hosts in layout.values() for h in hosts])
    result = silence(live, clock, "a1")
    w = [p.witness for p in result.probes]
    nonce = result.probes[0].nonce
    assert live.probe_result(w[0], "a1", nonce, reached=False) == []
    assert live.probe_result(w[1], "a1", nonce, reached=True) == []
    assert live.probe_result(w[2], "a1", nonce, reached=False) == []  # all answered
    rec = live.state("a1")
    assert rec.state == HostState.SUSPECT
    assert rec.reason == f"unreachable from the controller, but {w[1]} reaches it"


@pytest.mark.req("HV-1")
def test_a_round_without_enough_answers_is_retried_with_fresh_witnesses(
    clock: ManualClock,
) -> None:
    layout = {"a": ["a1"], "b": [f"b{i}" for i in range(8)]}
    live = HostLiveness(racked(layout), settings(), clock, None, rng=random.Random(4))
    others = layout["b"]
    all_up(live, ["a1", *others])
    first = silence(live, clock, "a1").probes
    assert len(first) == 3
    old = first[0].nonce
    # Two answer, one stays silent: not enough for a verdict.
    live.probe_result(first[0].witness, "a1", old, reached=False)
    live.probe_result(first[1].witness, "a1", old, reached=False)
    clock.advance(RETRY_S / 2)
    all_up(live, others, seq=50)
    assert live.tick() == TickResult()  # the retry is not due yet
    clock.advance(RETRY_S / 2)
    all_up(live, others, seq=51)
    second = live.tick().probes
    assert len(second) == 3 and second[0].nonce != old
    # The old round's late answer counts for nothing now.
    assert live.probe_result(first[2].witness, "a1", old, reached=False) == []
    assert live.state("a1").state == HostState.SUSPECT
    witnesses = set()
    for _ in range(10):
        clock.advance(RETRY_S)
        all_up(live, others, seq=52)
        witnesses |= {p.witness for p in live.tick().probes}
    assert len(witnesses) > 3  # fresh draws, not the same three each round
    # A complete round of "not reached" settles it.
    clock.advance(RETRY_S)
    all_up(live, others, seq=53)
    last = live.tick().probes
    ts = [t for p in last for t in live.probe_result(p.witness, "a1", p.nonce, False)]
    assert moves(ts) == [("a1", HostState.SUSPECT, HostState.DOWN)]


def test_answers_that_do_not_belong_to_the_round_are_ignored(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    probes = silence(unfenced, clock, "h1").probes
    nonce = probes[0].nonce
    assert unfenced.probe_result("h2", "h1", nonce + 1, reached=False) == []  # stale nonce
    assert unfenced.probe_result("h1", "h1", nonce, reached=False) == []  # not asked
    assert unfenced.probe_result("h2", "h3", nonce, reached=False) == []  # not a suspect
    assert unfenced.probe_result("h2", "nobody", nonce, reached=False) == []
    assert unfenced.probe_result("h2", "h1", nonce, reached=False) == []
    assert unfenced.probe_result("h2", "h1", nonce, reached=False) == []  # twice: once
    assert unfenced.state("h1").state == HostState.SUSPECT
    ts = unfenced.probe_result("h3", "h1", nonce, reached=False)
    assert moves(ts) == [("h1", HostState.SUSPECT, HostState.DOWN)]
    # Answers after the verdict change nothing.
    assert unfenced.probe_result("h3", "h1", nonce, reached=True) == []
    assert unfenced.state("h1").state == HostState.DOWN


@pytest.mark.req("HV-1")
def test_no_fence_and_no_up_peer_stays_suspect(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    unfenced.heartbeat("h1", 1, 1)  # h2, h3 never came up: no witness
    clock.advance(SUSPECT_S + 0.010)
    result = unfenced.tick()
    assert moves(result) == [("h1", HostState.UP, HostState.SUSPECT)]
    assert result.probes == []
    clock.advance(1.0)
    assert unfenced.tick() == TickResult()
    rec = unfenced.state("h1")
    assert rec.state == HostState.SUSPECT
    assert "no peer" in rec.reason


def test_witnesses_that_go_quiet_are_not_asked_again(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    clock.advance(SUSPECT_S + 0.010)
    # Everyone quiet at once (the director's own network): nobody left to ask.
    result = unfenced.tick()
    assert [t.new for t in result.transitions] == [HostState.SUSPECT] * 3
    assert result.probes == []


# -- coming back -------------------------------------------------------------------------


def test_suspect_host_heartbeat_brings_it_back_up(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    probes = silence(unfenced, clock, "h1").probes
    ts = unfenced.heartbeat("h1", 1, 5)
    assert moves(ts) == [("h1", HostState.SUSPECT, HostState.UP)]
    # The witnesses' answers of the abandoned suspicion change nothing.
    for p in probes:
        assert unfenced.probe_result(p.witness, "h1", p.nonce, reached=False) == []
    assert unfenced.state("h1").state == HostState.UP
    # And its pending retry is not run.
    clock.advance(RETRY_S)
    all_up(unfenced, HOSTS, seq=6)
    assert unfenced.tick() == TickResult()


def test_heartbeat_after_down_brings_host_up(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    for p in silence(unfenced, clock, "h1").probes:
        unfenced.probe_result(p.witness, "h1", p.nonce, reached=False)
    assert unfenced.state("h1").state == HostState.DOWN
    clock.advance(5)
    all_up(unfenced, ["h2", "h3"], seq=9)
    assert unfenced.tick() == TickResult()  # down stays down without news
    ts = unfenced.heartbeat("h1", 2, 1)
    assert moves(ts) == [("h1", HostState.DOWN, HostState.UP)]
    assert ts[0].reason == "heartbeat received (host rebooted)"
    # ... and is suspected afresh when it goes quiet again.
    assert moves(silence(unfenced, clock, "h1")) == [("h1", HostState.UP, HostState.SUSPECT)]


def test_changed_boot_id_while_up_is_a_reboot(fenced: HostLiveness, clock: ManualClock) -> None:
    fenced.heartbeat("h1", 1, 1)
    clock.advance(0.050)
    ts = fenced.heartbeat("h1", 2, 1)
    assert len(ts) == 1
    assert (ts[0].old, ts[0].new) == (HostState.UP, HostState.UP)
    assert "rebooted" in ts[0].reason
    assert fenced.state("h1").boot == 2
    # The same boot id again is not another reboot.
    assert fenced.heartbeat("h1", 2, 2) == []


def test_probe_requests_name_witness_target_and_round(
    unfenced: HostLiveness, clock: ManualClock
) -> None:
    all_up(unfenced, HOSTS)
    probes = silence(unfenced, clock, "h3").probes
    assert all(isinstance(p, ProbeRequest) and p.target == "h3" and p.nonce > 0
               for p in probes)
