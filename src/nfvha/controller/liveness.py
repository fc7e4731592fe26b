"""Host liveness: up -> suspect -> confirmed down, from heartbeats.

A missing heartbeat only makes a host *suspect*. It is declared down when a
second signal confirms it: the host's fence device reports power off, or -
for hosts without a fence device - every peer that is itself up has lost the
host's heartbeat too. A slow or partitioned network between the controller
and a host therefore never declares a live host dead.

Pure logic over an injected clock: the controller feeds heartbeats and calls
``tick`` periodically; transitions come back as values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from nfvha.model.settings import Settings
from nfvha.util.clock import Clock
from nfvha.wire.frames import Heartbeat

PowerStatus = Callable[[str], Literal["on", "off"] | None]  # None: no fence device / unknown


class HostState(StrEnum):
    UNKNOWN = "unknown"  # never heard of since the controller started
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"


@dataclass(frozen=True)
class Transition:
    host: str
    old: HostState
    new: HostState
    reason: str
    at_mono_ns: int


@dataclass
class HostRecord:
    state: HostState = HostState.UNKNOWN
    last_hb_mono_ns: int = 0
    boot: str | None = None
    peers_seen_ms: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    since_mono_ns: int = 0


class HostLiveness:
    def __init__(self, hosts: list[str], settings: Settings, clock: Clock,
                 power_status: PowerStatus | None = None) -> None:
        self._clock = clock
        self._suspect_after_ns = settings.host_suspect_after_ms * 1_000_000
        self._confirm_retry_ns = settings.host_confirm_retry_ms * 1_000_000
        self._power_status = power_status
        self._next_confirm: dict[str, int] = {}
        # Hosts not heard of yet get a boot grace period from now, then are suspect too.
        grace_ns = int(settings.host_boot_grace_s * 1e9) - self._suspect_after_ns
        start = clock.mono_ns() + max(0, grace_ns)
        self.hosts: dict[str, HostRecord] = {h: HostRecord(last_hb_mono_ns=start)
                                             for h in hosts}

    def _move(self, host: str, rec: HostRecord, new: HostState, reason: str,
              now: int) -> Transition:
        t = Transition(host, rec.state, new, reason, now)
        rec.state, rec.reason, rec.since_mono_ns = new, reason, now
        return t

    def heartbeat(self, hb: Heartbeat) -> list[Transition]:
        rec = self.hosts.get(hb.host)
        if rec is None:
            return []  # not a host of this deployment: ignored
        now = self._clock.mono_ns()
        rebooted = rec.boot is not None and hb.boot != rec.boot
        rec.last_hb_mono_ns = now
        rec.boot = hb.boot
        rec.peers_seen_ms = dict(hb.peers_seen_ms)
        if rec.state == HostState.UP and not rebooted:
            return []
        reason = "heartbeat received" + (" (host rebooted)" if rebooted else "")
        return [self._move(hb.host, rec, HostState.UP, reason, now)]

    def tick(self) -> list[Transition]:
        now = self._clock.mono_ns()
        out: list[Transition] = []
        for host, rec in self.hosts.items():
            silent = now - rec.last_hb_mono_ns
            if rec.state in (HostState.UP, HostState.UNKNOWN) and silent > self._suspect_after_ns:
                out.append(self._move(host, rec, HostState.SUSPECT,
                                      f"no heartbeat for {silent // 1_000_000} ms", now))
                self._next_confirm[host] = now
            if rec.state == HostState.SUSPECT and now >= self._next_confirm.get(host, 0):
                self._next_confirm[host] = now + self._confirm_retry_ns
                confirmed, why = self._confirm(host, now)
                if confirmed:
                    out.append(self._move(host, rec, HostState.DOWN, why, now))
                else:
                    rec.reason = why
        return out

    def _confirm(self, host: str, now: int) -> tuple[bool, str]:
        power = self._power_status(host) if self._power_status is not None else None
        if power == "off":
            return True, "fence device reports power off"
        if power == "on":
            return False, "unreachable, but its fence device reports power on"
        # No fence device: ask the peers that are themselves up.
        witnesses = [h for h, r in self.hosts.items()
                     if h != host and r.state == HostState.UP]
        if not witnesses:
            return False, "unreachable; no fence device and no peer to confirm"
        lost_by = [w for w in witnesses
                   if self.hosts[w].peers_seen_ms.get(host, 1 << 30) * 1_000_000
                   > self._suspect_after_ns]
        if len(lost_by) == len(witnesses):
            return True, f"peers {', '.join(sorted(lost_by))} lost its heartbeat too"
        return False, "unreachable from the controller, but peers still hear it"

    def state(self, host: str) -> HostRecord:
        return self.hosts[host]
