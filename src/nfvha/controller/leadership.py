"""The controllers' HA loop (Patroni style): at most one leader decides recovery.

Every controller runs a ``LeaderElector`` over the leader lease (``store.leader``:
etcd in a cluster). Each cycle takes one snapshot - the clock, our term, who the
store last said leads - and makes one decision from it (``decide``): acquire the
lease, renew it, demote, look at who leads, or wait. Nothing else changes the
role, so the role cannot flap within a cycle.

Rules (ADR 0013):
- the timing is checked before the first cycle: renew interval + 2 x retry
  timeout < TTL (``check_lease_timing``), so a leader can miss one renewal and
  retry twice before its term could end;
- the leader decides only while ``is_leader()``: our term, and the clock before
  ``valid_until - margin``. ``valid_until`` counts from the moment the renewing
  request was sent, so it ends before the store's own expiry: the next leader
  can only be elected after we stopped. The check is the clock's, at each
  decision; the loop's demotion (``on_demoted``: tear the leader's work down)
  follows at the same instant, or as soon as an in-flight store call returns;
- a demotion is final for its term: the term is released (forgotten if the store
  cannot be reached), so a leader that was cut off acts again only after a new
  election, under a new, higher epoch;
- followers look at the leader key every ``follow_interval_s`` and campaign when
  it is free; a watch (``watch``: the lease's, on etcd) wakes them at once.

Store calls are synchronous (ADR 0012) and run through ``call`` (a worker thread
by default) so the event loop keeps serving while etcd answers slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from nfvha.store.base import StoreUnavailable
from nfvha.store.leader import LeaderLease, LeaderTerm, check_lease_timing
from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
StoreCall = Callable[[Callable[[], Any]], Awaitable[Any]]
TermListener = Callable[[LeaderTerm], None]
DemotionListener = Callable[[LeaderTerm, str], None]


class LeaderGate(Protocol):
    """What acts on the leader's behalf asks, at the moment it acts (ADR 0013)."""

    def is_leader(self) -> bool: ...

    @property
    def epoch(self) -> int:
        """The deciding term's epoch (the fencing token its actions carry); 0: none."""
        ...


class NotLeader(ConnectionError):
    """This controller does not lead (any more): it sends nothing on the leader's behalf."""


class Role(StrEnum):
    FOLLOWER = "follower"
    LEADER = "leader"


class Action(StrEnum):
    ACQUIRE = "acquire"  # the key is free (or unknown): campaign
    RENEW = "renew"
    DEMOTE = "demote"  # our term is over: stop deciding, release it
    LOOK = "look"  # read who leads
    WAIT = "wait"


@dataclass(frozen=True)
class LeaderTiming:
    ttl_s: float = 1.0
    renew_interval_s: float = 0.2
    retry_timeout_s: float = 0.3
    follow_interval_s: float = 0.25
    # Stop deciding this long before the term's end: an action checked just before
    # the end still has to reach its target.
    margin_s: float = 0.1
    # After a store call failed, try again this soon (bounded by the retry timeout).
    retry_pause_s: float = 0.05

    def check(self, granted_ttl_s: float | None = None) -> None:
        """ValueError unless a leader can miss a renewal and still retry twice in time.
        ``granted_ttl_s``: the TTL the lease really runs with (etcd: whole seconds)."""
        ttl = self.ttl_s if granted_ttl_s is None else granted_ttl_s
        check_lease_timing(ttl, self.renew_interval_s, self.retry_timeout_s)
        if not 0 <= self.margin_s < ttl - self.renew_interval_s:
            raise ValueError(f"leader margin {self.margin_s} s must be below TTL {ttl} s -"
                             f" renew interval {self.renew_interval_s} s")
        if self.follow_interval_s <= 0 or self.retry_pause_s <= 0:
            raise ValueError("follow interval and retry pause must be positive")


@dataclass(frozen=True)
class Snapshot:
    """What one cycle decides from."""

    now_ns: int
    acting: bool  # we have announced leadership (and not withdrawn it)
    term: LeaderTerm | None  # the lease's idea of our term
    valid_until_ns: int
    must_release: bool  # a term ended (by the clock) and is not yet given up
    last_renew_ns: int  # when the last successful acquire/renew was sent; 0: never
    last_failure_ns: int  # when the last store call failed; 0: not since the last success
    leader_seen: LeaderTerm | None  # who the store last said leads (None: free)
    looked_ns: int  # when we last learnt who leads; 0: not since our last term
    campaign_after_ns: int = 0  # resigned: no campaign before this


def decide(s: Snapshot, t: LeaderTiming) -> tuple[Action, int]:
    """One decision, and the clock time of the next cycle if it is to wait."""
    end = s.valid_until_ns - int(t.margin_s * 1e9)
    if s.must_release or (s.acting and (s.term is None or s.now_ns >= end)):
        return Action.DEMOTE, s.now_ns
    if s.last_failure_ns:
        retry_at = s.last_failure_ns + int(t.retry_pause_s * 1e9)
        if s.now_ns < retry_at:
            return Action.WAIT, min(retry_at, end) if s.acting else retry_at
    if s.term is not None:
        due = s.last_renew_ns + int(t.renew_interval_s * 1e9)
        if s.last_failure_ns or s.now_ns >= due:
            return Action.RENEW, s.now_ns
        return Action.WAIT, min(due, end) if s.acting else due
    follow_at = s.looked_ns + int(t.follow_interval_s * 1e9)
    if s.looked_ns and s.leader_seen is None:
        if s.now_ns >= s.campaign_after_ns:
            return Action.ACQUIRE, s.now_ns
        return Action.WAIT, min(s.campaign_after_ns, max(follow_at, s.now_ns))
    if s.looked_ns == 0 or s.now_ns >= follow_at:
        return Action.LOOK, s.now_ns
    return Action.WAIT, follow_at


@dataclass
class TermRecord:
    """One of our terms, for the API and the tests (monotonic clock times)."""

    epoch: int
    started_ns: int
    ended_ns: int | None = None
    end_reason: str = ""


@dataclass
class _State:
    acting: LeaderTerm | None = None
    must_release: bool = False
    last_renew_ns: int = 0
    last_failure_ns: int = 0
    leader_seen: LeaderTerm | None = None
    looked_ns: int = 0
    campaign_after_ns: int = 0
    terms: list[TermRecord] = field(default_factory=list)


async def _in_thread(fn: Callable[[], Any]) -> Any:
    return await asyncio.to_thread(fn)


class LeaderElector:
    def __init__(self, lease: LeaderLease, timing: LeaderTiming | None = None,
                 clock: Clock = SYSTEM_CLOCK, *, call: StoreCall = _in_thread,
                 watch: Callable[[], AsyncIterator[LeaderTerm | None]] | None = None) -> None:
        """``lease.ttl_s`` is what the timing is checked against (etcd rounds the TTL up
        to whole seconds); ``call`` runs one synchronous store call."""
        self.lease = lease
        self.timing = timing or LeaderTiming(ttl_s=lease.ttl_s)
        self.timing.check(lease.ttl_s)
        self._clock = clock
        self._call = call
        self._watch = watch
        self._s = _State()
        self._elected: list[TermListener] = []
        self._demoted: list[DemotionListener] = []
        self._wake: asyncio.Event | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._running = False
        self._stopping = False
        self.cycles = 0

    # -- what others ask ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.lease.holder

    @property
    def role(self) -> Role:
        return Role.LEADER if self.is_leader() else Role.FOLLOWER

    def is_leader(self) -> bool:
        """May we decide now? A term we announced, and the clock before its end."""
        term = self._s.acting
        return term is not None and self.lease.term == term and self._in_time()

    @property
    def epoch(self) -> int:
        """The epoch of the term we decide in; 0 when we do not lead."""
        term = self._s.acting
        return term.epoch if term is not None and self.is_leader() else 0

    @property
    def valid_until_ns(self) -> int:
        """When we stop deciding (the clock's); 0 when not leading."""
        if self._s.acting is None:
            return 0
        return max(0, self.lease.valid_until_ns - int(self.timing.margin_s * 1e9))

    def leader(self) -> LeaderTerm | None:
        """Who leads: we, or who the store said at a look of the last TTL (never our own
        ended term). An older answer is no answer: a follower that cannot read the
        store (etcd without quorum) cannot tell whether that leader still holds its
        term - it cannot have renewed it without etcd - and the fronts must not pass
        requests to it as if it did."""
        if self.is_leader():
            return self._s.acting
        seen = self._s.leader_seen
        fresh_ns = int((self.timing.ttl_s + self.timing.follow_interval_s) * 1e9)
        if seen is None or seen.holder == self.name or \
                self._clock.mono_ns() - self._s.looked_ns > fresh_ns:
            return None
        return seen

    @property
    def terms(self) -> list[TermRecord]:
        return list(self._s.terms)

    def on_elected(self, listener: TermListener) -> None:
        """Called once per term, when it starts (its epoch fences what it does)."""
        self._elected.append(listener)

    def on_demoted(self, listener: DemotionListener) -> None:
        """Called once per term, when it ends: (term, why). Decisions stopped already."""
        self._demoted.append(listener)

    def resign(self, why: str, hold_off_s: float) -> None:
        """End our term now (the leader's work could not start, say) and let another
        controller lead: no campaign of ours for ``hold_off_s``."""
        self._s.campaign_after_ns = self._clock.mono_ns() + int(hold_off_s * 1e9)
        self._end_term(why)
        if self._wake is not None:
            self._wake.set()

    # -- one cycle ------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        s = self._s
        return Snapshot(now_ns=self._clock.mono_ns(), acting=s.acting is not None,
                        term=self.lease.term, valid_until_ns=self.lease.valid_until_ns,
                        must_release=s.must_release, last_renew_ns=s.last_renew_ns,
                        last_failure_ns=s.last_failure_ns, leader_seen=s.leader_seen,
                        looked_ns=s.looked_ns, campaign_after_ns=s.campaign_after_ns)

    async def step(self) -> int:
        """One cycle: snapshot, decide, act, announce. Returns when to run the next."""
        self.cycles += 1
        snap = self.snapshot()
        action, wake_at = decide(snap, self.timing)
        if action is Action.DEMOTE:
            self._end_term("not renewed in time" if snap.term is not None
                           else "the lease is no longer ours")
            await self._release()
        elif action is Action.RENEW:
            ok = await self._store(self.lease.renew, snap.now_ns)
            if ok is True:
                self._s.last_renew_ns = snap.now_ns
            elif ok is False:
                self._end_term("renewal refused: the lease is gone")
        elif action is Action.ACQUIRE:
            ok = await self._store(self.lease.acquire, snap.now_ns)
            if ok is True:
                self._s.last_renew_ns = snap.now_ns
            elif ok is False:
                await self._look(snap.now_ns)
        elif action is Action.LOOK:
            await self._look(snap.now_ns)
        self._announce()
        return wake_at if action is Action.WAIT else self._clock.mono_ns()

    async def _look(self, now_ns: int) -> None:
        seen = await self._store(self.lease.leader, now_ns, default=...)
        if seen is not ...:
            self._s.leader_seen = seen
            self._s.looked_ns = now_ns

    async def _store(self, fn: Callable[[], Any], sent_ns: int, default: Any = None) -> Any:
        try:
            result = await self._call(fn)
        except StoreUnavailable as e:
            log.warning("leader lease of %s: store unavailable (%s)", self.name, e)
            self._s.last_failure_ns = sent_ns or 1
            return default
        self._s.last_failure_ns = 0
        return result

    def _in_time(self) -> bool:
        end = self.lease.valid_until_ns - int(self.timing.margin_s * 1e9)
        return self._clock.mono_ns() < end

    def _announce(self) -> None:
        """Start a term we now hold, once; arm the deadline of the one we lead."""
        s = self._s
        term = self.lease.term
        if s.acting is None and term is not None and not s.must_release and self._in_time():
            s.acting = term
            s.leader_seen = term
            s.looked_ns = self._clock.mono_ns()
            s.terms.append(TermRecord(term.epoch, self._clock.mono_ns()))
            log.info("%s leads (epoch %d)", self.name, term.epoch)
            for listener in self._elected:
                listener(term)
        if s.acting is not None:
            self._arm_deadline()

    def _arm_deadline(self) -> None:
        """End the term at its deadline even while a store call is in flight (the loop
        waits for it); decisions have stopped by then anyway (``is_leader``)."""
        if not self._running:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        delay = (self.valid_until_ns - self._clock.mono_ns()) / 1e9
        self._deadline = asyncio.get_running_loop().call_later(max(0.0, delay), self._expire)

    def _expire(self) -> None:
        self._deadline = None
        if self._s.acting is not None and not self.is_leader():
            self._end_term("not renewed in time")
            if self._wake is not None:
                self._wake.set()

    def _end_term(self, why: str) -> None:
        """Decisions end here; the term is given up next (``_release``): final."""
        s = self._s
        s.must_release = True
        term, s.acting = s.acting, None
        if term is None:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        rec = s.terms[-1]
        rec.ended_ns, rec.end_reason = self._clock.mono_ns(), why
        log.warning("%s stops leading (epoch %d): %s", self.name, term.epoch, why)
        for listener in self._demoted:
            listener(term, why)

    async def _release(self) -> None:
        """Give the ended term up: ``release()`` forgets it first, then tells the store;
        when the store cannot be reached, its own expiry ends the term there."""
        s = self._s
        with contextlib.suppress(StoreUnavailable):
            await self._call(self.lease.release)
        s.must_release = False
        s.leader_seen = None
        s.looked_ns = 0
        s.last_renew_ns = 0

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Cycle until ``stop()``; then give the lease up (the next leader need not wait)."""
        self._running = True
        self._wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch_loop(), name="leader-watch") \
            if self._watch is not None else None
        try:
            while not self._stopping:
                wake_at = await self.step()
                await self._sleep_until(wake_at)
        finally:
            self._running = False
            if watcher is not None:
                watcher.cancel()
            self._end_term("shutting down")
            await self._release()

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def _sleep_until(self, wake_at: int) -> None:
        assert self._wake is not None
        delay = (wake_at - self._clock.mono_ns()) / 1e9
        if delay > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
        else:
            await asyncio.sleep(0)
        self._wake.clear()

    async def _watch_loop(self) -> None:
        assert self._watch is not None and self._wake is not None
        while True:
            try:
                async for seen in self._watch():
                    if self._s.acting is None and not self._s.must_release:
                        self._s.leader_seen = seen
                        self._s.looked_ns = self._clock.mono_ns()
                        self._wake.set()
            except StoreUnavailable as e:
                log.warning("leader watch of %s: %s; watching again", self.name, e)
            except Exception:  # compacted history, a bug: the polling goes on regardless
                log.exception("leader watch of %s failed; watching again", self.name)
            await asyncio.sleep(self.timing.follow_interval_s)
