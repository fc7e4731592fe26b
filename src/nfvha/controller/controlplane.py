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

etcd without a quorum is the same, one step further: no controller can lead, so no
alarm can even be decided while it lasts. Every member's watch keeps the outage as
it saw it (``quorum.QuorumWatch``); the first leader after it raises the alarm on
``control/etcd`` with the detection time of its own watch and clears it at once.
The next leaders do not again: an alarm on ``control/etcd`` whose time (raised ..
cleared, or now) overlaps the outage is that outage's, whoever raised it - the
members saw the same outage at slightly different times.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nfvha.controller.cluster import Watched
from nfvha.controller.quorum import ETCD_ENTITY, EtcdOutage, iso
from nfvha.faults.catalog import CONTROL_PLANE_FAILURE
from nfvha.faults.manager import AlarmManager
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

Publish = Callable[[list[Event]], Awaitable[object]]
QUORUM_CAUSE = "etcd-quorum-lost"


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
    # The quorum as a whole: raised live only by a leader whose watch finds none (its
    # term ends soon anyway); what matters is that a later leader clears it.
    if w.etcd is not None:
        out.append(Part(ETCD_ENTITY, not w.etcd.quorum, Severity.CRITICAL, QUORUM_CAUSE,
                        w.etcd.reason))
    state = w.postgres.get("state")
    if state in ("up", "unavailable"):
        out.append(Part("control/postgresql", state != "up", Severity.CRITICAL,
                        "postgresql-unavailable", str(state)))
    return out


class ControlPlaneAlarms:
    def __init__(self, observer: str, watched: Callable[[], Watched], alarms: AlarmManager,
                 publish: Publish, clock: Clock, allowed: Callable[[], bool], *,
                 confirm_looks: int = 2, poll_s: float = 0.2,
                 report_within_s: float = 3600.0) -> None:
        """``watched``: the latest look; ``allowed``: the term's gate;
        ``report_within_s``: etcd outages that ended longer ago are not raised any more
        (their alarm may have aged out of the history: it would be raised twice)."""
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
        self._report_within_s = report_within_s
        self._outages_done: set[int] = set()  # by since_mono_ns: in the history

    async def run(self) -> None:
        while True:
            w = self._watched()
            if w.at_ns != self._last_at:
                self._last_at = w.at_ns
                await self.look(w)
            await asyncio.sleep(self._poll_s)

    async def look(self, w: Watched) -> None:
        await self._report_outages(w.etcd_outages)
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

    async def _report_outages(self, outages: tuple[EtcdOutage, ...]) -> None:
        """Raise and clear, once, the alarm of each etcd outage this member saw end."""
        for o in outages:
            if o.since_mono_ns in self._outages_done or o.until_wall is None:
                continue
            if self._clock.wall() - o.until_wall > self._report_within_s or \
                    self._alarmed(o.since_wall, o.until_wall):
                self._outages_done.add(o.since_mono_ns)
                continue
            if await self._send(self._outage_events(o)):
                self._outages_done.add(o.since_mono_ns)
                log.warning("etcd's quorum outage from %s (%.1f s) raised and cleared",
                            iso(o.since_wall), o.duration_s(0))

    def _alarmed(self, since: float, until: float) -> bool:
        now = self._clock.wall()
        for a in self._alarms.all_alarms():
            r = a.rootCauseFaultyResource
            if a.faultType != CONTROL_PLANE_FAILURE.name or r is None or \
                    r.faultyResource.resourceId != ETCD_ENTITY:
                continue
            cleared = a.alarmClearedTime.timestamp() if a.alarmClearedTime else math.inf
            if a.eventTime.timestamp() <= until and min(cleared, now) >= since:
                return True
        return False

    def _outage_events(self, o: EtcdOutage) -> list[Event]:
        assert o.until_wall is not None and o.until_mono_ns is not None
        took = o.duration_s(0)
        common = {"host": self._observer, "seq": 0, "origin": "controller",
                  "entity": ETCD_ENTITY, "event_type": EventType.PROCESSING_ERROR_ALARM,
                  "probable_cause": QUORUM_CAUSE}
        return [
            Event(**common, kind=Kind.CONTROL_SERVICE_FAILED, severity=Severity.CRITICAL,
                  description=f"etcd had no quorum for {took:.1f} s, from"
                              f" {iso(o.since_wall)} (seen by {self._observer}): {o.reason}",
                  clears=False, event_time=o.since_wall, detected_mono_ns=o.since_mono_ns,
                  details={"reason": o.reason, "until": iso(o.until_wall)}),
            Event(**common, kind=Kind.CONTROL_SERVICE_RESTORED, severity=Severity.CLEARED,
                  description=f"etcd has a quorum again, since {iso(o.until_wall)}",
                  clears=True, event_time=o.until_wall, detected_mono_ns=o.until_mono_ns,
                  details={"reason": "quorum"}),
        ]

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
