"""etcd's quorum as one member sees it: since when it is lost, and the outages that
ended (FM-2, VIM-4; ADR 0013).

Without a quorum no controller can lead, so nobody can raise an alarm while it
lasts: every member's control-plane watch keeps the outage itself - when it saw the
quorum go (the alarm's detection time) and come back - and logs it at ERROR, the
operators' last resort while nothing can be stored. ``/v1/cluster`` shows it live on
every front; the first leader after it raises and clears the alarm
(``controlplane.ControlPlaneAlarms``).

An outage counts after ``confirm_looks`` looks in a row without a quorum, like any
other part's failure (one slow answer on a busy machine is not an outage); its
start is the first of those looks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from nfvha.store.health import StoreHealth
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

ETCD_ENTITY = "control/etcd"


def iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class EtcdOutage:
    since_mono_ns: int
    since_wall: float
    reason: str  # the latest look's
    answering: tuple[str, ...]  # the members that answered at the latest look
    looks: int = 1
    until_mono_ns: int | None = None  # the first look that found the quorum again
    until_wall: float | None = None

    def duration_s(self, now_ns: int) -> float:
        end = self.until_mono_ns if self.until_mono_ns is not None else now_ns
        return max(0.0, (end - self.since_mono_ns) / 1e9)

    def as_dict(self, now_ns: int) -> dict[str, Any]:
        return {"since": iso(self.since_wall), "since_mono_ns": self.since_mono_ns,
                "for_s": round(self.duration_s(now_ns), 3),
                "until": None if self.until_wall is None else iso(self.until_wall),
                "answering": list(self.answering), "reason": self.reason}


class QuorumWatch:
    """Fed every look at etcd's health (``look``); ``current``: the outage going on
    (also before it is confirmed), ``ended``: the last ``keep`` confirmed ones."""

    def __init__(self, member: str, clock: Clock, *, confirm_looks: int = 2,
                 keep: int = 16) -> None:
        self._member = member
        self._clock = clock
        self._confirm = confirm_looks
        self._keep = keep
        self.current: EtcdOutage | None = None
        self.ended: tuple[EtcdOutage, ...] = ()

    def look(self, health: StoreHealth) -> None:
        now_ns, wall = self._clock.mono_ns(), self._clock.wall()
        o = self.current
        if not health.quorum:
            o = EtcdOutage(now_ns, wall, health.reason, tuple(health.answering)) if o is None \
                else replace(o, looks=o.looks + 1, reason=health.reason,
                             answering=tuple(health.answering))
            self.current = o
            if o.looks == self._confirm:
                log.error("etcd has no quorum (as %s sees it) since %s: %s. No controller can"
                          " lead or decide, and no alarm can be raised until it is back",
                          self._member, iso(o.since_wall), o.reason)
            return
        if o is None:
            return
        self.current = None
        if o.looks < self._confirm:
            log.info("etcd without a quorum for %d look(s) only (as %s sees it): %s",
                     o.looks, self._member, o.reason)
            return
        done = replace(o, until_mono_ns=now_ns, until_wall=wall)
        self.ended = (*self.ended, done)[-self._keep:]
        log.warning("etcd has a quorum again (as %s sees it), after %.1f s without (since %s)",
                    self._member, done.duration_s(now_ns), iso(o.since_wall))

    def status(self) -> dict[str, Any]:
        """For ``/v1/cluster``: the outage going on, and the last one that ended."""
        now = self._clock.mono_ns()
        return {"no_quorum": None if self.current is None else self.current.as_dict(now),
                "last_outage": self.ended[-1].as_dict(now) if self.ended else None}
