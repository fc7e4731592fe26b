"""Host liveness (ADR 0015): up -> suspect -> confirmed down, with work proportional
to what changed.

A missing heartbeat only makes a host *suspect*. It is declared down only on a second,
independent signal (HV-1): its fence device reports power off, or - for a host
without one - the witnesses the director asked to ping it on the data network all
say it did not answer. A cut management link or a slow network between the director
and a host therefore never declares a live host dead.

Cost per call, whatever the number of hosts:
- ``heartbeat``: O(1) (the host moves to the end of the order of last heartbeats);
- ``tick``: the overdue head of that order, the suspects whose confirmation round is
  due, and - once, at the end of the boot grace - the hosts never heard of;
- choosing witnesses: O(witnesses) draws from an index of the hosts up, per rack
  (at worst one pass over the racks, never over the hosts).

Pure logic over an injected clock: the director feeds heartbeats and probe results,
calls ``tick`` periodically, sends the ``ProbeRequest``s it returns and publishes the
transitions.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nfvha.model.hosts import HostState
from nfvha.model.settings import Settings
from nfvha.util.clock import Clock

PowerStatus = Callable[[str], Literal["on", "off"] | None]  # None: no fence device / unknown


class RackedHost(Protocol):
    """A host and its rack (the controller config's ``HostEntry`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def rack(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Transition:
    host: str
    old: HostState
    new: HostState
    reason: str
    at_mono_ns: int


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """Ask ``witness`` to ping ``target`` on the data network (a PROBE_REQUEST)."""

    witness: str
    target: str
    nonce: int


@dataclass(frozen=True, slots=True)
class TickResult:
    transitions: list[Transition] = field(default_factory=list)
    probes: list[ProbeRequest] = field(default_factory=list)


@dataclass(slots=True)
class HostRecord:
    rack: str = ""
    state: HostState = HostState.UNKNOWN
    last_hb_mono_ns: int = 0  # meaningful once boot is not None
    boot: int | None = None  # the supervisor's boot id; None: never heard of
    seq: int = 0
    reason: str = ""
    since_mono_ns: int = 0


@dataclass(slots=True)
class _Suspicion:
    """A suspect host's confirmation: the current round's nonce and witnesses."""

    generation: int
    nonce: int = 0  # 0: no round asked witnesses (fence answered, or nobody to ask)
    asked: tuple[str, ...] = ()
    not_reached: set[str] = field(default_factory=set)
    reached: bool = False


class _IndexedSet:
    """Insert, remove and pick the i-th element, all O(1) (order is not kept)."""

    __slots__ = ("index", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item: str) -> bool:
        return item in self.index

    def add(self, item: str) -> None:
        if item not in self.index:
            self.index[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        i = self.index.pop(item, None)
        if i is None:
            return
        last = self.items.pop()
        if last != item:
            self.items[i] = last
            self.index[last] = i


class _UpHosts:
    """The hosts that are up, as a whole and per rack: where witnesses are drawn from."""

    # Draws from all up hosts before falling back to a pass over the racks: with the
    # target's rack at most half of them, 8 draws per witness almost never fall short.
    DRAWS_PER_WITNESS = 8

    def __init__(self, racks: Iterable[str]) -> None:
        self.all = _IndexedSet()
        self.by_rack: dict[str, _IndexedSet] = {r: _IndexedSet() for r in racks}

    def add(self, host: str, rack: str) -> None:
        self.all.add(host)
        self.by_rack[rack].add(host)

    def discard(self, host: str, rack: str) -> None:
        self.all.discard(host)
        self.by_rack[rack].discard(host)

    def choose(self, target: str, rack: str, k: int, rack_of: Callable[[str], str],
               rng: random.Random) -> list[str]:
        """Up to ``k`` random up hosts other than ``target``, from other racks than
        ``rack`` first, then from ``rack``."""
        same = self.by_rack[rack]
        others = len(self.all) - len(same)
        chosen = self._from_other_racks(rack, min(k, others), rack_of, rng) if others else []
        missing = k - len(chosen)
        if missing > 0 and len(same):
            draw = rng.sample(same.items, min(len(same), missing + 1))
            chosen += [h for h in draw if h != target][:missing]
        return [h for h in chosen if h != target]

    def _from_other_racks(self, rack: str, n: int, rack_of: Callable[[str], str],
                          rng: random.Random) -> list[str]:
        everyone = self.all.items
        if (len(everyone) - len(self.by_rack[rack])) * 2 >= len(everyone):
            picked: dict[str, None] = {}
            for _ in range(self.DRAWS_PER_WITNESS * n):
                h = everyone[rng.randrange(len(everyone))]
                if rack_of(h) != rack:
                    picked[h] = None
                    if len(picked) == n:
                        return list(picked)
        # The target's rack holds most of the up hosts (or the draws were unlucky):
        # pick positions among the other racks' hosts and find them rack by rack.
        others = len(everyone) - len(self.by_rack[rack])
        positions = sorted(rng.sample(range(others), n))
        out: list[str] = []
        base = 0
        for name, members in self.by_rack.items():
            if name == rack or not len(members):
                continue
            while len(out) < n and positions[len(out)] < base + len(members):
                out.append(members.items[positions[len(out)] - base])
            if len(out) == n:
                break
            base += len(members)
        return out


class HostLiveness:
    def __init__(self, hosts: Iterable[str | RackedHost], settings: Settings, clock: Clock,
                 power_status: PowerStatus | None = None, *,
                 rng: random.Random | None = None) -> None:
        """``hosts``: names, or entries with their rack (witnesses are taken from other
        racks first). ``power_status``: the fence devices' (None: no host has one).
        ``rng``: for witness choice and nonces (tests pass a seeded one)."""
        self._clock = clock
        self._power_status = power_status
        self._rng = rng or random.Random()
        self._suspect_after_ns = settings.host_suspect_after_ms * 1_000_000
        self._confirm_retry_ns = settings.host_confirm_retry_ms * 1_000_000
        self._witnesses = settings.host_probe_witnesses
        self._grace_s = settings.host_boot_grace_s
        self.hosts: dict[str, HostRecord] = {}
        for h in hosts:
            name, rack = (h, "") if isinstance(h, str) else (h.name, h.rack)
            self.hosts[name] = HostRecord(rack=rack)
        # Where each host is, by state: UNKNOWN in _never_heard, UP in _by_last_heartbeat
        # (oldest first) and _up, SUSPECT in _suspects, DOWN nowhere.
        self._never_heard: dict[str, None] = dict.fromkeys(self.hosts)
        self._grace_end_ns = clock.mono_ns() + int(self._grace_s * 1e9)
        self._by_last_heartbeat: dict[str, None] = {}
        self._up = _UpHosts(r.rack for r in self.hosts.values())
        self._suspects: dict[str, _Suspicion] = {}
        # (due, generation, host): suspects whose next confirmation round is due. An
        # entry whose generation is not the host's current suspicion's is stale.
        self._due: list[tuple[int, int, str]] = []
        self._generations = itertools.count(1)
        # Suspects whose reason changed without a transition (a confirmation round's
        # outcome): the director passes them on, then clears this.
        self.reasons_changed: dict[str, None] = {}

    # -- inputs ------------------------------------------------------------------------
    def heartbeat(self, host: str, boot: int, seq: int) -> list[Transition]:
        rec = self.hosts.get(host)
        if rec is None:
            return []  # not a host of this deployment: ignored
        now = self._clock.mono_ns()
        rebooted = rec.boot is not None and boot != rec.boot
        rec.last_hb_mono_ns, rec.boot, rec.seq = now, boot, seq
        reason = "heartbeat received" + (" (host rebooted)" if rebooted else "")
        if rec.state == HostState.UP:
            # Re-inserting moves it to the end: the order stays oldest heartbeat first.
            del self._by_last_heartbeat[host]
            self._by_last_heartbeat[host] = None
            return [self._move(host, rec, HostState.UP, reason, now)] if rebooted else []
        if rec.state == HostState.UNKNOWN:
            del self._never_heard[host]
        elif rec.state == HostState.SUSPECT:
            del self._suspects[host]  # its entry in _due is stale from now on
        self._by_last_heartbeat[host] = None
        self._up.add(host, rec.rack)
        return [self._move(host, rec, HostState.UP, reason, now)]

    def probe_result(self, witness: str, target: str, nonce: int,
                     reached: bool) -> list[Transition]:
        """A witness's answer; counted only for the current round of a suspect
        (matching nonce) and from a witness that round asked."""
        s = self._suspects.get(target)
        if s is None or not s.nonce or nonce != s.nonce or witness not in s.asked:
            return []
        rec = self.hosts[target]
        if reached:
            s.reached = True
            self._note(target, rec, f"unreachable from the controller, but {witness} reaches it")
            return []
        s.not_reached.add(witness)
        if s.reached or len(s.not_reached) < len(s.asked):
            return []
        del self._suspects[target]
        why = f"witnesses {', '.join(s.asked)} could not reach it"
        return [self._move(target, rec, HostState.DOWN, why, self._clock.mono_ns())]

    def tick(self, now_ns: int | None = None) -> TickResult:
        now = self._clock.mono_ns() if now_ns is None else now_ns
        out = TickResult()
        if self._never_heard and now > self._grace_end_ns:
            never, self._never_heard = self._never_heard, {}
            for host in never:
                self._suspect(host, f"no heartbeat since the director started"
                                    f" {self._grace_s:g} s ago", now, out)
        while self._by_last_heartbeat:
            host = next(iter(self._by_last_heartbeat))
            silent = now - self.hosts[host].last_hb_mono_ns
            if silent <= self._suspect_after_ns:
                break  # the rest heard from more recently still
            del self._by_last_heartbeat[host]
            self._up.discard(host, self.hosts[host].rack)
            self._suspect(host, f"no heartbeat for {silent // 1_000_000} ms", now, out)
        while self._due and self._due[0][0] <= now:
            _, generation, host = heapq.heappop(self._due)
            s = self._suspects.get(host)
            if s is not None and s.generation == generation:
                self._confirm(host, s, now, out)
        return out

    # -- reading -----------------------------------------------------------------------
    def state(self, host: str) -> HostRecord:
        return self.hosts[host]

    # -- internals ---------------------------------------------------------------------
    def _move(self, host: str, rec: HostRecord, new: HostState, reason: str,
              now: int) -> Transition:
        t = Transition(host, rec.state, new, reason, now)
        rec.state, rec.reason, rec.since_mono_ns = new, reason, now
        return t

    def _note(self, host: str, rec: HostRecord, reason: str) -> None:
        if rec.reason != reason:
            rec.reason = reason
            self.reasons_changed[host] = None

    def _suspect(self, host: str, reason: str, now: int, out: TickResult) -> None:
        out.transitions.append(self._move(host, self.hosts[host], HostState.SUSPECT, reason,
                                          now))
        s = _Suspicion(generation=next(self._generations))
        self._suspects[host] = s
        heapq.heappush(self._due, (now, s.generation, host))  # confirmed in this tick

    def _confirm(self, host: str, s: _Suspicion, now: int, out: TickResult) -> None:
        """One confirmation round: the fence device, else witnesses; the next round is
        due after the retry interval unless this one settles it."""
        rec = self.hosts[host]
        power = self._power_status(host) if self._power_status is not None else None
        if power == "off":
            del self._suspects[host]
            out.transitions.append(self._move(host, rec, HostState.DOWN,
                                              "fence device reports power off", now))
            return
        heapq.heappush(self._due, (now + self._confirm_retry_ns, s.generation, host))
        s.nonce, s.asked, s.not_reached, s.reached = 0, (), set(), False
        if power == "on":
            self._note(host, rec, "unreachable, but its fence device reports power on")
            return
        witnesses = self._up.choose(host, rec.rack, self._witnesses, self._rack_of, self._rng)
        if not witnesses:
            self._note(host, rec, "unreachable; no fence device and no peer up to confirm")
            return
        s.nonce = self._rng.getrandbits(64) or 1
        s.asked = tuple(witnesses)
        out.probes.extend(ProbeRequest(w, host, s.nonce) for w in witnesses)

    def _rack_of(self, host: str) -> str:
        return self.hosts[host].rack
