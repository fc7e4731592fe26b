"""Making events: sequence numbers, times, and the agent's host name."""

from __future__ import annotations

from typing import Any

from nfvha.agent.notices import NoticeSender
from nfvha.agent.spool import EventSpool
from nfvha.agent.uplink import ControllerLink
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.util.clock import Clock


class Emitter:
    def __init__(self, host: str, clock: Clock, spool: EventSpool) -> None:
        self.host = host
        self._clock = clock
        self._spool = spool
        self.link: ControllerLink | None = None
        self.notices: NoticeSender | None = None  # to the HA director (ADR 0014)

    def emit(
        self,
        kind: Kind,
        entity: str,
        *,
        severity: Severity,
        event_type: EventType,
        probable_cause: str,
        description: str = "",
        clears: bool = False,
        informational: bool = False,
        detected_mono_ns: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        ev = Event(
            host=self.host,
            seq=self._spool.next_seq(),
            kind=kind,
            entity=entity,
            severity=Severity.CLEARED if clears else severity,
            event_type=event_type,
            probable_cause=probable_cause,
            description=description,
            clears=clears,
            informational=informational,
            event_time=self._clock.wall(),
            detected_mono_ns=detected_mono_ns or self._clock.mono_ns(),
            details=details or {},
        )
        if self.notices is not None:
            self.notices.maybe_send(ev)  # first: the failover must not wait for the rest
        if self.link is not None:
            self.link.send_event(ev)
        else:
            self._spool.append(ev)
        return ev
