"""OPNFV Doctor inspector intake, so Doctor monitors report into nfvha unchanged.

Doctor's monitors (``doctor_tests/monitor/sample.py``, the collectd plugin) send
``PUT /events`` with a JSON list of events to the inspector, and the sample
inspector (``doctor_tests/inspector/sample.py``) answers 200 "OK".  Each event is::

    {"id": "monitor_sample_id1",            # optional
     "time": "2017-05-05T10:11:12.123456",  # datetime.now().isoformat(): naive local time
     "type": "compute.host.down",
     "details": {"hostname": "h1", "status": "down",
                 "monitor": "monitor_sample", "monitor_event_id": "monitor_sample_event1"}}

``compute.host.down`` is the one event type Doctor defines; its ``status`` is
"down" (raise) or "up" (clear, as Vitrage's Doctor datasource sends it).  A body
that is not such a list, an unknown type or a host that is not in the topology is
a 400 and nothing of the request is taken; the router answers 400, never 422.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from nfvha.api.masakari import AsciiJSONResponse
from nfvha.api.problems import MAX_PROBLEMS, summarize
from nfvha.api.timestamps import LocalDateTime, epoch_seconds
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.topology import Topology
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

Ingest = Callable[[list[Event]], Awaitable[None]]

HOST_DOWN_TYPE = "compute.host.down"
# One request (a monitor sends one event at a time); with their details, 64 events are
# 129 arrays and objects, within what the API takes in one body (ADR 0016).
MAX_EVENTS = 64
MAX_DETAILS = 32  # keys of an event's details, the monitor's own included

Text = Annotated[str, Field(max_length=255)]


class DoctorDetails(BaseModel):
    # Monitors may add their own keys; they are kept, as strings of bounded size.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    hostname: str = Field(min_length=1, max_length=255)
    status: Literal["down", "up"]
    monitor: Text | None = None
    monitor_event_id: Text | None = None

    @model_validator(mode="before")
    @classmethod
    def _few_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_DETAILS:
            raise ValueError(f"at most {MAX_DETAILS} details, got {len(data)}")
        return data


class DoctorEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Text | None = None
    time: LocalDateTime
    type: str = Field(min_length=1, max_length=255)
    details: DoctorDetails


# Bounded: validation stops at the first event too many instead of reporting each.
_EVENTS = TypeAdapter(Annotated[list[DoctorEvent], Field(max_length=MAX_EVENTS)],
                      config=ConfigDict(strict=True))


def _problems(e: ValidationError) -> str:
    out: list[str] = []
    for err in e.errors(include_url=False, include_input=False)[:MAX_PROBLEMS]:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        out.append(f"{path.lstrip('.') or '(body)'}: {err['msg']}")
    return summarize(out, e.error_count())


def _bad(message: str) -> Response:
    return AsciiJSONResponse({"detail": message}, status_code=400)


def _extra_details(d: DoctorDetails) -> dict[str, Any]:
    # Scalars only; no number JSON cannot store (1e999 reads as infinity).
    return {k: v for k, v in (d.model_extra or {}).items()
            if (isinstance(v, str | int | bool) or (isinstance(v, float) and math.isfinite(v)))
            and len(k) <= 255 and len(str(v)) <= 255}


def doctor_router(topology: Topology, ingest: Ingest, clock: Clock) -> APIRouter:
    """Doctor's inspector API: ``PUT /events``."""
    router = APIRouter(tags=["doctor"])
    hosts = set(topology.host_names())

    def to_event(ev: DoctorEvent, now_ns: int) -> Event:
        d = ev.details
        host = d.hostname
        down = d.status == "down"
        by = f" by {d.monitor}" if d.monitor else ""
        return Event(
            host=host, seq=0, origin="doctor",
            kind=Kind.HOST_DOWN if down else Kind.HOST_UP,
            entity=f"host/{host}",
            severity=Severity.CRITICAL if down else Severity.CLEARED,
            event_type=EventType.EQUIPMENT_ALARM, probable_cause="host-failure",
            description=f"Doctor monitor{by} reports host {host} {d.status}",
            clears=not down,
            # Doctor's sample monitor stamps datetime.now(): a naive time is local time.
            event_time=epoch_seconds(ev.time, naive_is_utc=False),
            detected_mono_ns=now_ns,
            details={"doctor_event_id": ev.id, "monitor": d.monitor,
                     "monitor_event_id": d.monitor_event_id, "reported_time": ev.time.isoformat(),
                     **({"monitor_details": extra} if (extra := _extra_details(d)) else {})},
        )

    @router.put("/events")
    async def put_events(request: Request) -> Response:
        """Take a list of Doctor events; all or nothing."""
        try:
            events = _EVENTS.validate_json(await request.body())
        except ValidationError as e:
            return _bad(f"not a list of Doctor events: {_problems(e)}")
        for i, ev in enumerate(events):
            if ev.type != HOST_DOWN_TYPE:
                return _bad(f"[{i}].type: unknown event type '{ev.type}'; this inspector takes"
                            f" '{HOST_DOWN_TYPE}'")
            if ev.details.hostname not in hosts:
                return _bad(f"[{i}].details.hostname: no host named '{ev.details.hostname}';"
                            f" valid: {', '.join(sorted(hosts))}")
        if events:
            now_ns = clock.mono_ns()
            try:
                await ingest([to_event(ev, now_ns) for ev in events])
            except Exception as e:
                log.exception("could not take %d Doctor event(s)", len(events))
                return AsciiJSONResponse({"detail": f"nfvha could not store the events: {e}"},
                                         status_code=503)
        return PlainTextResponse("OK")

    return router
