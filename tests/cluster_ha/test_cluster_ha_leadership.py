"""The controllers' HA loop on an injected clock and the in-process lease: election,
renewal, demotion before the term can expire, takeover, and no action without a
new election."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from nfvha.controller.leadership import (
    Action,
    LeaderElector,
    LeaderTiming,
    Role,
    Snapshot,
    decide,
)
from nfvha.store.base import StoreUnavailable
from nfvha.store.leader import LeaderTerm, LocalLeaderLease, LocalLeaseBoard
from nfvha.util.clock import SYSTEM_CLOCK, Clock, ManualClock

TIMING = LeaderTiming(ttl_s=1.0, renew_interval_s=0.2, retry_timeout_s=0.3,
                      follow_interval_s=0.25, margin_s=0.1, retry_pause_s=0.05)


async def direct(fn: Callable[[], Any]) -> Any:
    return fn()


class Cuttable(LocalLeaderLease):
    """The in-process lease with a switch that makes the store unreachable."""

    cut = False

    def _check(self) -> None:
        if self.cut:
            raise StoreUnavailable("cut off")

    def acquire(self) -> bool:
        self._check()
        return super().acquire()

    def renew(self) -> bool:
        self._check()
        return super().renew()

    def leader(self) -> LeaderTerm | None:
        self._check()
        return super().leader()

    def release(self) -> None:
        if self.cut:
            self._lose()  # forgotten here; the store's expiry ends it there
            raise StoreUnavailable("cut off")
        super().release()


class Node:
    def __init__(self, board: LocalLeaseBoard, name: str, clock: Clock,
                 timing: LeaderTiming = TIMING) -> None:
        self.lease = Cuttable(board, "controller", name, timing.ttl_s, clock)
        self.elector = LeaderElector(self.lease, timing, clock, call=direct)
        self.elected: list[int] = []
        self.demoted: list[tuple[int, str]] = []
        self.elector.on_elected(lambda t: self.elected.append(t.epoch))
        self.elector.on_demoted(lambda t, why: self.demoted.append((t.epoch, why)))

    async def steps(self, n: int = 3) -> None:
        for _ in range(n):
            await self.elector.step()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def board() -> LocalLeaseBoard:
    return LocalLeaseBoard()


async def run_for(clock: ManualClock, nodes: list[Node], seconds: float,
                  tick_s: float = 0.01) -> None:
    """Advance the clock in ticks, one cycle of every live node per tick."""
    for _ in range(round(seconds / tick_s)):
        clock.advance(tick_s)
        for n in nodes:
            await n.elector.step()


def test_timing_is_checked_at_start_up(board: LocalLeaseBoard, clock: ManualClock) -> None:
    lease = LocalLeaderLease(board, "controller", "a", 1.0, clock)
    with pytest.raises(ValueError, match="renew interval"):
        LeaderElector(lease, LeaderTiming(ttl_s=1.0, renew_interval_s=0.5, retry_timeout_s=0.25))
    with pytest.raises(ValueError, match="margin"):
        LeaderElector(lease, LeaderTiming(ttl_s=1.0, renew_interval_s=0.2, retry_timeout_s=0.3,
                                          margin_s=0.9))
    # The TTL the lease runs with is what counts (etcd rounds up to whole seconds).
    LeaderElector(LocalLeaderLease(board, "controller", "a", 2.0, clock),
                  LeaderTiming(ttl_s=0.5, renew_interval_s=0.6, retry_timeout_s=0.6))


def test_decide_one_action_per_snapshot() -> None:
    term = LeaderTerm("a", 7)
    base = Snapshot(now_ns=10_000_000_000, acting=True, term=term,
                    valid_until_ns=10_500_000_000, must_release=False,
                    last_renew_ns=9_900_000_000, last_failure_ns=0, leader_seen=term,
                    looked_ns=9_900_000_000)
    # leading, renewal not due: wait until it is
    assert decide(base, TIMING) == (Action.WAIT, 10_100_000_000)
    # due
    assert decide(base.__class__(**{**base.__dict__, "last_renew_ns": 9_700_000_000}),
                  TIMING)[0] is Action.RENEW
    # past valid_until - margin: demote, whatever else is due
    late = {**base.__dict__, "now_ns": 10_400_000_000, "last_renew_ns": 9_000_000_000}
    assert decide(Snapshot(**late), TIMING)[0] is Action.DEMOTE
    # a failed renewal is retried after the pause, not later than the term's end
    failed = {**base.__dict__, "last_failure_ns": 9_990_000_000, "valid_until_ns": 10_120_000_000}
    assert decide(Snapshot(**failed), TIMING) == (Action.WAIT, 10_020_000_000)
    # follower: the key is free -> campaign; held -> look again after the interval
    follower = {**base.__dict__, "acting": False, "term": None, "valid_until_ns": 0,
                "last_renew_ns": 0}
    assert decide(Snapshot(**{**follower, "leader_seen": None}), TIMING)[0] is Action.ACQUIRE
    assert decide(Snapshot(**follower), TIMING) == (Action.WAIT, 10_150_000_000)
    assert decide(Snapshot(**{**follower, "looked_ns": 0}), TIMING)[0] is Action.LOOK
    # a term that ended by the clock is given up before anything else
    assert decide(Snapshot(**{**follower, "must_release": True}), TIMING)[0] is Action.DEMOTE


async def test_one_leader_is_elected_and_keeps_its_term(board: LocalLeaseBoard,
                                                        clock: ManualClock) -> None:
    a, b = Node(board, "a", clock), Node(board, "b", clock)
    await a.steps()
    await b.steps()
    assert a.elector.is_leader() and a.elector.role is Role.LEADER
    assert a.elected == [1] and a.elector.epoch == 1
    assert not b.elector.is_leader() and b.elector.epoch == 0 and b.elected == []
    assert b.elector.leader() == LeaderTerm("a", 1)
    await run_for(clock, [a, b], 5.0)
    assert a.elector.is_leader() and a.elected == [1] and a.demoted == []
    assert b.elected == []


async def test_leader_stops_deciding_before_its_term_can_expire(board: LocalLeaseBoard,
                                                                clock: ManualClock) -> None:
    a = Node(board, "a", clock)
    await a.steps()
    assert a.elector.is_leader()
    renewed = a.lease.valid_until_ns
    a.lease.cut = True  # etcd unreachable from a
    # The gate is the clock's: no cycle needs to run for a to stop deciding.
    clock.advance((renewed - clock.mono_ns()) / 1e9 - TIMING.margin_s - 0.001)
    assert a.elector.is_leader()
    clock.advance(0.002)
    assert not a.elector.is_leader() and a.elector.epoch == 0
    # ...and the store's own expiry comes later still: nobody else can lead yet.
    assert board.leases["controller"].expires_ns >= renewed
    await a.steps(1)
    assert a.demoted == [(1, "not renewed in time")]


async def test_missed_renewals_are_retried_within_the_term(board: LocalLeaseBoard,
                                                           clock: ManualClock) -> None:
    a = Node(board, "a", clock)
    await a.steps()
    a.lease.cut = True
    await run_for(clock, [a], 0.5)  # renew due at +0.2, retried every 50 ms
    assert a.elector.is_leader()
    a.lease.cut = False
    await run_for(clock, [a], 3.0)
    assert a.elector.is_leader() and a.demoted == [] and a.elected == [1]


async def test_follower_takes_over_from_a_dead_leader(board: LocalLeaseBoard,
                                                      clock: ManualClock) -> None:
    a, b = Node(board, "a", clock), Node(board, "b", clock)
    await a.steps()
    await b.steps()
    died = clock.mono_ns()  # a stops cycling: killed
    await run_for(clock, [b], 2.0)
    assert b.elector.is_leader() and b.elected == [2]
    took_over_s = (b.elector.terms[0].started_ns - died) / 1e9
    # the TTL, then at most one look of the follower
    assert took_over_s <= TIMING.ttl_s + TIMING.follow_interval_s + 0.02


@pytest.mark.req("VNFHA-10")
async def test_cut_off_leader_never_acts_again_without_reelection(board: LocalLeaseBoard,
                                                                 clock: ManualClock) -> None:
    a, b = Node(board, "a", clock), Node(board, "b", clock)
    await a.steps()
    await b.steps()
    a.lease.cut = True
    leading: list[tuple[bool, bool]] = []
    for _ in range(300):  # 3 s, in 10 ms cycles
        clock.advance(0.01)
        await a.elector.step()
        await b.elector.step()
        leading.append((a.elector.is_leader(), b.elector.is_leader()))
    assert not any(x and y for x, y in leading)  # never two at once
    assert a.demoted == [(1, "not renewed in time")]
    assert b.elector.is_leader() and b.elected == [2]
    # healed: a follows, its old term is gone for good
    a.lease.cut = False
    await run_for(clock, [a, b], 2.0)
    assert not a.elector.is_leader() and a.elected == [1]
    assert a.lease.term is None and not a.lease.renew()
    assert a.elector.leader() == LeaderTerm("b", 2)
    # only a new election makes it lead again, with a higher epoch
    b.elector.lease.release()
    await run_for(clock, [a], 0.5)
    assert a.elector.is_leader() and a.elected == [1, 3]


async def test_refused_renewal_demotes_at_once(board: LocalLeaseBoard,
                                               clock: ManualClock) -> None:
    a = Node(board, "a", clock)
    await a.steps()
    del board.leases["controller"]  # someone deleted the key: the lease is gone
    clock.advance(TIMING.renew_interval_s)
    await a.steps(1)
    assert not a.elector.is_leader()
    assert a.demoted == [(1, "renewal refused: the lease is gone")]


async def test_run_hands_over_on_stop_and_ends_a_term_during_a_hung_renewal() -> None:
    """The real loop on the system clock: a clean stop hands over at once; a renewal
    that hangs does not keep the term past its end."""
    timing = LeaderTiming(ttl_s=0.6, renew_interval_s=0.1, retry_timeout_s=0.2,
                          follow_interval_s=0.05, margin_s=0.05, retry_pause_s=0.02)
    board = LocalLeaseBoard()
    hang = asyncio.Event()
    released = asyncio.Event()

    async def call(fn: Callable[[], Any]) -> Any:
        if hang.is_set() and getattr(fn, "__name__", "") == "renew":
            await released.wait()
        return fn()

    electors = [LeaderElector(LocalLeaderLease(board, "controller", n, 0.6, SYSTEM_CLOCK),
                              timing, SYSTEM_CLOCK, call=call) for n in ("a", "b")]
    elected = {n: asyncio.Event() for n in ("a", "b")}
    demoted = asyncio.Event()
    for e in electors:
        e.on_elected(lambda t: elected[t.holder].set())
    electors[0].on_demoted(lambda t, why: demoted.set())
    tasks = [asyncio.create_task(electors[0].run())]
    await asyncio.wait_for(elected["a"].wait(), 2.0)
    tasks.append(asyncio.create_task(electors[1].run()))
    hang.set()  # a's next renewal never returns
    await asyncio.wait_for(demoted.wait(), 2.0)
    assert not electors[0].is_leader()
    term = electors[0].terms[0]
    assert term.ended_ns is not None and term.end_reason == "not renewed in time"
    electors[0].stop()
    released.set()
    await tasks[0]
    await asyncio.wait_for(elected["b"].wait(), 3.0)
    # a clean stop hands over without waiting for the TTL
    hang.clear()
    again = LeaderElector(LocalLeaderLease(board, "controller", "a", 0.6, SYSTEM_CLOCK),
                          timing, SYSTEM_CLOCK, call=call)
    again.on_elected(lambda t: elected["a"].set())
    elected["a"].clear()
    tasks[0] = asyncio.create_task(again.run())
    t0 = SYSTEM_CLOCK.mono_ns()
    electors[1].stop()
    await tasks[1]
    await asyncio.wait_for(elected["a"].wait(), 2.0)
    assert (SYSTEM_CLOCK.mono_ns() - t0) / 1e9 < timing.ttl_s
    assert again.epoch > electors[1].terms[0].epoch
    again.stop()
    await tasks[0]
    assert board.leases == {}


async def test_resigned_leader_lets_another_lead_before_it_campaigns_again(
        board: LocalLeaseBoard, clock: ManualClock) -> None:
    a, b = Node(board, "a", clock), Node(board, "b", clock)
    await a.steps()
    await b.steps()
    a.elector.resign("its work did not start", hold_off_s=2.0)
    assert not a.elector.is_leader() and a.demoted == [(1, "its work did not start")]
    await run_for(clock, [a, b], 1.0)
    assert b.elector.is_leader() and b.elected == [2] and a.elected == [1]
    b.elector.lease.release()  # b goes too: a campaigns once its hold-off is over
    await run_for(clock, [a], 0.5)
    assert not a.elector.is_leader()
    await run_for(clock, [a], 1.0)
    assert a.elector.is_leader() and a.elected == [1, 3]


@pytest.mark.req("FM-2")
async def test_without_the_store_nobody_is_said_to_lead(board: LocalLeaseBoard,
                                                         clock: ManualClock) -> None:
    """etcd without a quorum: the leader's term ends, and a follower that cannot look
    does not go on naming it (the fronts would pass requests to a member that does not
    lead, and ``/v1/cluster`` would say it leads)."""
    a, b = Node(board, "a", clock), Node(board, "b", clock)
    await a.steps()
    await b.steps()
    await run_for(clock, [a, b], 1.0)
    assert b.elector.leader() == LeaderTerm("a", 1)
    a.lease.cut = b.lease.cut = True
    await run_for(clock, [a, b], TIMING.ttl_s)  # a's term is over by the clock
    assert a.elector.leader() is None and not a.elector.is_leader()
    await run_for(clock, [a, b], TIMING.follow_interval_s + 0.05)
    assert b.elector.leader() is None
    a.lease.cut = b.lease.cut = False
    await run_for(clock, [a, b], 3.0)
    assert [n.elector.is_leader() for n in (a, b)].count(True) == 1
    assert a.elector.leader() == b.elector.leader() is not None
