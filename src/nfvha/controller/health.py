"""Compute-node health as published to MANO (FM-9).

A host's health follows from its liveness and the active alarms on the host
itself: FAILED when it is confirmed down, DEGRADED while it is suspect or has any
other host-level fault (hypervisor, host software, hardware, link, suspected latent
fault), UNKNOWN before it was ever heard of, HEALTHY otherwise. Every change is
notified (HostHealthChangeNotification, to subscriptions that ask for it) and
streamed.

Work is proportional to change: a host's health is computed again only when its
alarms changed (``on_changes``, from the alarm manager's decisions) or its liveness
did (``on_host_state``, from whoever sees liveness transitions: today the agent
server, with ADR 0014 the mirror of the HA director's host states). Nothing walks
every host periodically.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Protocol

from nfvha.faults.manager import AlarmChange, AlarmManager
from nfvha.faults.model import HostHealth, NotificationType
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import Severity
from nfvha.model.hosts import HostState
from nfvha.util.clock import Clock


class HostStatus(Protocol):
    """A host's liveness as health reads it."""

    @property
    def state(self) -> HostState: ...

    @property
    def reason(self) -> str: ...


class LivenessView(Protocol):
    """Where host health reads liveness from: the controller's mirror of
    the HA director's host states (ADR 0014)."""

    def state(self, host: str) -> HostStatus: ...


def host_health(host: str, liveness: LivenessView, alarms: AlarmManager,
                now: datetime) -> HostHealth:
    active = alarms.active_for(f"host/{host}")
    reasons = [f"{a.faultType}: {a.probableCause}" for a in active]
    ids = sorted(a.id for a in active)
    down = any(a.faultType == "host-failure" and a.perceivedSeverity == Severity.CRITICAL
               for a in active)
    state = liveness.state(host).state
    if down or state == HostState.DOWN:
        status = "FAILED"
    elif active or state == HostState.SUSPECT:
        status = "DEGRADED"
        if state == HostState.SUSPECT and not active:
            reasons.append(f"unreachable: {liveness.state(host).reason}")
    elif state == HostState.UNKNOWN:
        status = "UNKNOWN"
    else:
        status = "HEALTHY"
    return HostHealth(hostName=host, healthStatus=status,
                      reasons=reasons, alarmIds=ids, changedTime=now)


class HealthPublisher:
    """Recomputes the health of a host whose alarms (``on_changes``, an alarm-change
    sink) or liveness (``on_host_state``) changed."""

    def __init__(self, hosts: list[str], liveness: LivenessView, alarms: AlarmManager,
                 notifier: Notifier, stream: AlarmStream, api_root: str, clock: Clock) -> None:
        self._liveness = liveness
        self._alarms = alarms
        self._notifier = notifier
        self._stream = stream
        self._api_root = api_root
        self._clock = clock
        now = self._now()
        self.current = {h: host_health(h, liveness, alarms, now) for h in hosts}

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.wall(), UTC)

    def on_changes(self, changes: list[AlarmChange]) -> None:
        hosts = {c.alarm.managedObjectId.removeprefix("host/") for c in changes
                 if c.alarm.managedObjectId.startswith("host/")}
        for host in sorted(h for h in hosts if h in self.current):
            self.refresh(host, cause=changes[0].change_id)

    def on_host_state(self, host: str) -> None:
        """``host``'s liveness changed (a first heartbeat, suspect, down, up again):
        its health follows at once. Called after the liveness view (``state(host)``)
        shows the new state; hosts not of this deployment are ignored."""
        if host in self.current:
            self.refresh(host)

    def refresh(self, host: str, cause: str | None = None) -> None:
        before = self.current[host]
        now = host_health(host, self._liveness, self._alarms, self._now())
        if (now.healthStatus, now.reasons) == (before.healthStatus, before.reasons):
            return
        self.current[host] = now
        if now.healthStatus == before.healthStatus:
            return  # the reasons changed, the status did not: not news for MANO
        change_id = f"health|{host}|{cause or uuid.uuid4()}|{now.healthStatus}"
        self._notifier.publish_host_health(now, before.healthStatus, api_root=self._api_root,
                                           change_id=change_id)
        self._stream.publish(NotificationType.HOST_HEALTH_CHANGE, now.model_dump_json(), None)
