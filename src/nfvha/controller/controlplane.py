"""Alarms for the control plane's own parts (FM-2, VIM-4; ADR 0013).

Every member watches the other members, etcd's members and PostgreSQL
(``cluster.ClusterController``'s control-plane watch). The leader's work turns what
the watch sees into events through the event bus - origin ``controller``, entity
``control/<part>`` - so the alarms are raised, correlated, stored and notified like
any other (``faults.catalog.CONTROL_PLANE_FAILURE``). Only the leader publishes:
every member sees the same failures, and N publishers would raise N alarms.

A part is failed after ``confirm_looks`` looks in a row (one slow answer on a busy
machine is not a failure) and back at the first look that finds it well. Whether an
alarm is active is asked of the alarm manager, not remembered: a new leader clears
the alarms of an earlier term whose part is back, and raises none twice.

An alarm about PostgreSQL cannot be stored while PostgreSQL is down (events and
alarms live there): its raise is kept and published once the database answers, with
its detection time, followed by the clear - the outage is in the alarm history;
meanwhile ``/v1/cluster`` shows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nfvha.controller.cluster import Watched
from nfvha.faults.catalog import CONTROL_PLANE_FAILURE
from nfvha.faults.manager import AlarmManager
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

Publish = Callable[[list[Event]], Awaitable[object]]


@dataclass(frozen=True)
class Part:
    """One part of the control plane as the last look found it."""

    entity: str  # "control/controller:c2", "control/etcd:m1", "control/postgresql"
    failed: bool
    severity: Severity  # of its failure
    cause: str  # probableCause
    reason: str


def parts(w: Watched, observer: str) -> list[Part]:
    """The parts a look found (the observer itself is not one: it answers)."""
    if w.at_ns == 0:
        return []  # not looked yet
    out: list[Part] = []
    for name, m in sorted(w.members.items()):
        if name != observer:
            failed = m.get("state") != "up"
            out.append(Part(f"control/controller:{name}", failed, Severity.MAJOR,
                            "controller-unreachable",
                            str(m.get("error") or m.get("state")) if failed else "answers"))
    # With no member answering, etcd lists endpoints, not members: nothing to tell them
    # by (and a leader without etcd loses its term anyway).
    if w.etcd is not None and all(mh.id for mh in w.etcd.members):
        for mh in w.etcd.members:
            why = ("unreachable" if not mh.reachable else "no raft leader"
                   if not mh.has_leader else ", ".join(mh.errors))
            out.append(Part(f"control/etcd:{mh.name}", bool(why), Severity.MAJOR,
                            "etcd-member-unhealthy", why or "healthy"))
    state = w.postgres.get("state")
    if state in ("up", "unavailable"):
        out.append(Part("control/postgresql", state != "up", Severity.CRITICAL,
                        "postgresql-unavailable", str(state)))
    return out


class ControlPlaneAlarms:
    def __init__(self, observer: str, watched: Callable[[], Watched], alarms: AlarmManager,
                 publish: Publish, clock: Clock, allowed: Callable[[], bool], *,
                 confirm_looks: int = 2, poll_s: float = 0.2) -> None:
        """``watched``: the latest look; ``allowed``: the term's gate."""
        self._observer = observer
        self._watched = watched
        self._alarms = alarms
        self._publish = publish
        self._clock = clock
        self._allowed = allowed
        self._confirm = confirm_looks
        self._poll_s = poll_s
        self._failed_looks: dict[str, int] = {}
        self._unstored: dict[str, Event] = {}  # raises the store refused, by entity
        self._last_at = 0

    async def run(self) -> None:
        while True:
            w = self._watched()
            if w.at_ns != self._last_at:
                self._last_at = w.at_ns
                await self.look(w)
            await asyncio.sleep(self._poll_s)

    async def look(self, w: Watched) -> None:
        for p in parts(w, self._observer):
            n = self._failed_looks[p.entity] = \
                self._failed_looks.get(p.entity, 0) + 1 if p.failed else 0
            active = bool(self._alarms.active_for(p.entity, CONTROL_PLANE_FAILURE.name))
            pending = self._unstored.get(p.entity)
            if p.failed:
                if n < self._confirm or active:
                    continue
                raised = pending or self._event(p)
                if await self._send([raised]):
                    self._unstored.pop(p.entity, None)
                else:
                    self._unstored[p.entity] = raised
            elif (active or pending is not None) and \
                    await self._send(([pending] if pending else []) + [self._event(p)]):
                self._unstored.pop(p.entity, None)

    def _event(self, p: Part) -> Event:
        what = p.entity.removeprefix("control/")
        return Event(
            host=self._observer, seq=0, origin="controller",
            kind=Kind.CONTROL_SERVICE_FAILED if p.failed else Kind.CONTROL_SERVICE_RESTORED,
            entity=p.entity, severity=p.severity if p.failed else Severity.CLEARED,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause=p.cause,
            description=f"{what} {'failed' if p.failed else 'is back'}: {p.reason}",
            clears=not p.failed, event_time=self._clock.wall(),
            detected_mono_ns=self._clock.mono_ns(), details={"reason": p.reason})

    async def _send(self, events: list[Event]) -> bool:
        if not self._allowed():
            return False
        try:
            await self._publish(events)
        except StoreUnavailable as e:
            log.warning("control-plane events not stored (%s): %s",
                        ", ".join(ev.description for ev in events), e)
            return False
        return True
