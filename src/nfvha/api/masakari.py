"""Masakari (instance HA) v1 intake, so masakari-monitors report into nfvha unchanged.

The subset of the Masakari API that masakari-monitors and openstacksdk's
``instance_ha`` proxy use: ``POST/GET /notifications``, ``GET /notifications/{id}``,
the read side of ``/segments`` and ``/segments/{id}/hosts``, and the v1 version
document that keystoneauth reads for microversion discovery.  The lead mounts the
router at ``/v1``.

What was taken from Masakari (openstack/masakari) and how it is mirrored here:

* request schema: ``api/openstack/ha/schemas/notifications.py`` (``type``,
  ``hostname``, ``generated_time``, ``payload``; no other keys),
  ``api/validation/parameter_types.py`` (hostname ``^[a-zA-Z0-9-._]*$``, 1..255;
  payload: keys ``^[a-zA-Z0-9-_:. ]{1,255}$``, values strings of at most 255) and the
  per-type payload schemas of ``schemas/payload.py``: COMPUTE_HOST ``event``
  STARTED|STOPPED (required), ``host_status`` NORMAL|UNKNOWN, ``cluster_status``
  ONLINE|OFFLINE; PROCESS ``process_name`` (1..4096) and ``event`` STARTED|STOPPED;
  VM ``instance_uuid`` (uuid), ``vir_domain_event`` and ``event`` (1..255 each),
  enums from ``objects/fields.py``.  A schema error is a 400 whose message names
  the field path, as Masakari's validator does.
* duplicates (``ha/api.py``): the same type, host and payload while an earlier one
  is still being handled is a 409.  Masakari measures the window on the senders'
  ``generated_time``; we measure it on our own clock at receipt (``dedup_window_s``),
  which a sender's clock skew cannot defeat.
* which VM events are failures: Masakari's engine (``engine/instance_events.py``)
  recovers only LIFECYCLE/STOPPED_FAILED and IO_ERROR/IO_ERROR_REPORT and marks
  every other VM notification "ignored"; we do the same, and map the introspective
  instance monitor's QEMU_GUEST_AGENT_ERROR (the guest agent stopped answering) to a
  hung VM.  A guest reboot or a clean shutdown is not a fault.
* responses and errors: ``doc/api_samples`` field names; faults shaped as
  ``{"badRequest": {"code": 400, "message": ...}}`` (openstacksdk reads ``message``);
  messages from ``exception.py``; microversions 1.0..1.2 via ``OpenStack-API-Version:
  instance-ha X.Y`` (``api/api_version_request.py``).

Segments and hosts come from the topology: one failover segment per site, its
hosts from the site's racks, with ids that are uuid5 of the name (stable across
restarts).  A VM's ``instance_uuid`` is ``vm_uuid(name)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import reprlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from nfvha.api.problems import MAX_PROBLEMS, summarize
from nfvha.api.timestamps import UtcDateTime, check_usable, epoch_seconds, parse_iso8601
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.topology import Topology
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

Ingest = Callable[[list[Event]], Awaitable[None]]

# -- stable identifiers --------------------------------------------------------------

# Fixed, so that every controller of every run names a host, VM or site alike.
NFVHA_UUID_NAMESPACE = uuid.UUID("5a0c3f0e-8e1f-5b7c-9d4e-6e6676686100")


def host_uuid(name: str) -> str:
    return str(uuid.uuid5(NFVHA_UUID_NAMESPACE, f"host/{name}"))


def vm_uuid(name: str) -> str:
    """The ``instance_uuid`` a monitor uses for the topology's VM ``name``."""
    return str(uuid.uuid5(NFVHA_UUID_NAMESPACE, f"vm/{name}"))


def segment_uuid(site: str) -> str:
    return str(uuid.uuid5(NFVHA_UUID_NAMESPACE, f"segment/{site}"))


# -- time ----------------------------------------------------------------------------


def masakari_time(t: datetime) -> str:
    """Masakari prints times as naive UTC with microseconds: 2017-04-24T06:22:47.569979."""
    if t.tzinfo is not None:
        with contextlib.suppress(OverflowError):  # at datetime's edges: keep the given clock
            t = t.astimezone(UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds")


def _wall_time(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


# -- request schema ------------------------------------------------------------------

NotificationType = Literal["COMPUTE_HOST", "VM", "PROCESS"]
MasakariEvent = Literal["STARTED", "STOPPED"]  # fields.EventType.ALL

PayloadKey = Annotated[str, Field(pattern=r"^[a-zA-Z0-9_:. -]{1,255}$")]
PayloadValue = Annotated[str, Field(max_length=255)]
# Masakari's payloads have at most three keys; a few more are tolerated.
MAX_PAYLOAD_KEYS = 16


def _few_keys(payload: object) -> object:
    # Before its keys are checked: thousands of bad keys would be thousands of errors.
    if isinstance(payload, dict) and len(payload) > MAX_PAYLOAD_KEYS:
        raise ValueError(f"at most {MAX_PAYLOAD_KEYS} keys, got {len(payload)}")
    return payload


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NotificationIn(_Strict):
    type: NotificationType
    hostname: str = Field(min_length=1, max_length=255, pattern=r"^[a-zA-Z0-9._-]+$")
    generated_time: UtcDateTime
    payload: Annotated[dict[PayloadKey, PayloadValue], BeforeValidator(_few_keys)]


class CreateNotificationRequest(_Strict):
    notification: NotificationIn


class ComputeHostPayload(_Strict):
    event: MasakariEvent
    host_status: Literal["NORMAL", "UNKNOWN"] | None = None
    cluster_status: Literal["ONLINE", "OFFLINE"] | None = None


class ProcessPayload(_Strict):
    process_name: str = Field(min_length=1, max_length=4096)
    event: MasakariEvent


def _uuid_like(value: str) -> str:
    # Masakari's 'uuid' format is oslo's is_uuid_like: any spelling uuid.UUID reads.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError("not a UUID") from None


class VmPayload(_Strict):
    instance_uuid: Annotated[str, Field(max_length=64), AfterValidator(_uuid_like)]
    vir_domain_event: str = Field(min_length=1, max_length=255)
    event: str = Field(min_length=1, max_length=255)


PAYLOAD_MODELS: dict[str, type[_Strict]] = {
    "COMPUTE_HOST": ComputeHostPayload,
    "PROCESS": ProcessPayload,
    "VM": VmPayload,
}

# Masakari engine's INSTANCE_EVENTS, plus the introspective monitor's guest-agent check.
VM_FAILURES: dict[tuple[str, str], Kind] = {
    ("LIFECYCLE", "STOPPED_FAILED"): Kind.VM_CRASHED,
    ("IO_ERROR", "IO_ERROR_REPORT"): Kind.VM_CRASHED,
}
VM_HANG_EVENTS = frozenset({"QEMU_GUEST_AGENT_ERROR"})


# -- faults --------------------------------------------------------------------------

_FAULT_NAMES = {
    400: "badRequest",
    404: "itemNotFound",
    406: "notAcceptable",
    409: "conflictingRequest",
    415: "badMediaType",
    503: "serviceUnavailable",
}


# A bad value is quoted in the message, shortened without printing it whole first.
_short_repr = reprlib.Repr()
_short_repr.maxlevel, _short_repr.maxdict, _short_repr.maxlist = 2, 4, 4
_short_repr.maxstring, _short_repr.maxlong, _short_repr.maxother = 60, 40, 60


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: nothing a client sent can fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class MasakariFault(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def response(self) -> Response:
        name = _FAULT_NAMES.get(self.code, "computeFault")
        return AsciiJSONResponse({name: {"code": self.code, "message": self.message}},
                                 status_code=self.code)


def validation_messages(e: ValidationError, prefix: Sequence[str | int] = ()) -> list[str]:
    """One line per problem (the first few), with the path of the bad field, as
    Masakari words it."""
    out: list[str] = []
    for err in e.errors(include_url=False)[:MAX_PROBLEMS]:
        path = "/".join(str(p) for p in (*prefix, *err["loc"]))
        if err["type"] == "json_invalid":
            out.append(f"Malformed request body: {err['msg']}")
            continue
        value = _short_repr.repr(err.get("input"))
        out.append(f"Invalid input for field/attribute {path or '(body)'}. Value: {value}."
                   f" {err['msg']}")
    return out


def bad_request(e: ValidationError, prefix: Sequence[str | int] = ()) -> MasakariFault:
    return MasakariFault(400, summarize(validation_messages(e, prefix), e.error_count()))


# -- microversions -------------------------------------------------------------------

MIN_VERSION = (1, 0)
MAX_VERSION = (1, 2)
VERSION_HEADER = "OpenStack-API-Version"
SERVICE_TYPE = "instance-ha"
_VERSION_RE = re.compile(r"^([1-9]\d{0,3})\.([1-9]\d{0,3}|0)$")


def _fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


def requested_version(header: str | None) -> tuple[int, int]:
    """The microversion asked for; none means the minimum, as in Masakari."""
    if not header:
        return MIN_VERSION
    for part in header.split(","):
        service, _, wanted = part.strip().partition(" ")
        if service.lower() != SERVICE_TYPE:
            continue
        wanted = wanted.strip()
        if wanted.lower() == "latest":
            return MAX_VERSION
        m = _VERSION_RE.match(wanted)
        if m is None:
            raise MasakariFault(400, f"API Version String {wanted} is of invalid format. Must"
                                     " be of format MajorNum.MinorNum.")
        v = (int(m.group(1)), int(m.group(2)))
        if not MIN_VERSION <= v <= MAX_VERSION:
            raise MasakariFault(406, f"Version {wanted} is not supported by the API. Minimum"
                                     f" is {_fmt(MIN_VERSION)} and maximum is"
                                     f" {_fmt(MAX_VERSION)}.")
        return v
    return MIN_VERSION


class MasakariRoute(APIRoute):
    """Every answer in Masakari's shape: negotiated microversion headers, faults as
    ``{"badRequest": {...}}`` and a 400 (never FastAPI's 422) for any bad input."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def masakari_handler(request: Request) -> Response:
            try:
                version = requested_version(request.headers.get(VERSION_HEADER))
                request.state.api_version = version
                response = await handler(request)
            except MasakariFault as f:
                return f.response()
            except RequestValidationError as e:
                return MasakariFault(400, f"Invalid input: {_describe(e.errors())}").response()
            except HTTPException as e:
                return MasakariFault(e.status_code, str(e.detail)).response()
            response.headers[VERSION_HEADER] = f"{SERVICE_TYPE} {_fmt(version)}"
            response.headers["Vary"] = VERSION_HEADER
            return response

        return masakari_handler


def _describe(errors: Sequence[Any]) -> str:
    return summarize((f"{'/'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}"
                      for e in errors), len(errors))


# -- query parameters ----------------------------------------------------------------

MAX_LIMIT = 1000  # Masakari's osapi_max_limit


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return MAX_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise MasakariFault(400, "limit param must be an integer") from None
    if limit < 0:
        raise MasakariFault(400, "limit param must be positive")
    return min(MAX_LIMIT, limit or MAX_LIMIT)


def _bool_param(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    low = raw.strip().lower()
    if low in ("1", "t", "true", "on", "y", "yes"):
        return True
    if low in ("0", "f", "false", "off", "n", "no"):
        return False
    raise MasakariFault(400, f"Invalid value for {name}: '{raw}' is not a boolean")


def _matches(item: dict[str, Any], key: str) -> bool:
    """Either spelling of a resource id: the uuid, or the integer id openstacksdk uses
    when it is handed a resource object (its ``id`` attribute is Masakari's ``id``)."""
    return key in (item.get("uuid"), item.get("notification_uuid"), str(item["id"]))


def _page(items: list[dict[str, Any]], request: Request) -> list[dict[str, Any]]:
    limit = _limit(request)
    marker = request.query_params.get("marker")
    if marker is not None:
        at = next((i for i, it in enumerate(items) if _matches(it, marker)), None)
        if at is None:
            raise MasakariFault(400, f"Marker {marker} could not be found.")
        items = items[at + 1:]
    return items[:limit]


def _sorted(items: list[dict[str, Any]], request: Request, keys: Iterable[str],
            default_key: str, default_dir: str) -> list[dict[str, Any]]:
    key = request.query_params.get("sort_key", default_key)
    direction = request.query_params.get("sort_dir", default_dir)
    if key not in keys:
        raise MasakariFault(400, "Sort key supplied was not valid.")
    if direction not in ("asc", "desc"):
        raise MasakariFault(400, "Sort direction supplied was not valid.")
    return sorted(items, key=lambda it: (it.get(key) is not None, it.get(key) or "", it["id"]),
                  reverse=direction == "desc")


# -- inventory: segments and hosts from the topology ---------------------------------


def _segments_and_hosts(topology: Topology, created_at: str
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    segments: list[dict[str, Any]] = []
    hosts: list[dict[str, Any]] = []
    by_site: dict[str, dict[str, Any]] = {}
    for i, site in enumerate(topology.sites, start=1):
        seg = {
            "id": i,
            "uuid": segment_uuid(site.name),
            "name": site.name,
            "description": f"nfvha site {site.name}",
            "service_type": "COMPUTE",
            "recovery_method": "auto",
            "enabled": True,
            "created_at": created_at,
            "updated_at": None,
            "deleted": False,
            "deleted_at": None,
        }
        segments.append(seg)
        by_site[site.name] = seg
    for i, (site, _rack, host) in enumerate(topology.hosts(), start=1):
        seg = by_site[site.name]
        hosts.append({
            "id": i,
            "uuid": host_uuid(host.name),
            "name": host.name,
            "type": "COMPUTE",
            "control_attributes": "SSH",
            "reserved": False,
            "on_maintenance": False,
            "failover_segment_id": seg["uuid"],
            "failover_segment": seg,
            "created_at": created_at,
            "updated_at": None,
            "deleted": False,
            "deleted_at": None,
        })
    return segments, hosts


# -- notifications -------------------------------------------------------------------


@dataclass
class StoredNotification:
    id: int
    notification_uuid: str
    type: str
    hostname: str
    source_host_uuid: str
    generated_time: datetime
    payload: dict[str, str]
    status: str  # "new" once handed to nfvha; "ignored" when it is no fault
    created_at: datetime
    received_mono_ns: int

    def view(self, api_version: tuple[int, int], *, detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "notification_uuid": self.notification_uuid,
            "generated_time": masakari_time(self.generated_time),
            "source_host_uuid": self.source_host_uuid,
            "type": self.type,
            "payload": dict(self.payload),
            "status": self.status,
            "created_at": masakari_time(self.created_at),
            "updated_at": None,
            "deleted": False,
            "deleted_at": None,
        }
        if detail and api_version >= (1, 1):
            # nfvha's recovery is not a Masakari workflow: there are no workflow steps.
            out["recovery_workflow_details"] = []
        return out


@dataclass
class NotificationLog:
    """The notifications received, newest last, bounded so a long run cannot grow it
    without limit."""

    keep: int
    items: deque[StoredNotification] = field(init=False)
    next_id: int = 1

    def __post_init__(self) -> None:
        self.items = deque(maxlen=self.keep)

    def duplicate_of(self, n: NotificationIn, now_mono_ns: int, window_ns: int
                     ) -> StoredNotification | None:
        for old in reversed(self.items):
            if now_mono_ns - old.received_mono_ns > window_ns:
                return None
            if (old.status == "new" and old.type == n.type and old.hostname == n.hostname
                    and old.payload == n.payload):
                return old
        return None

    def find(self, key: str) -> StoredNotification | None:
        for n in self.items:
            if key in (n.notification_uuid, str(n.id)):
                return n
        return None


# -- notification -> nfvha event ----------------------------------------------------


@dataclass(frozen=True)
class Mapped:
    kind: Kind
    entity: str
    severity: Severity
    event_type: EventType
    probable_cause: str
    description: str
    clears: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def map_notification(n: NotificationIn, payload: _Strict, vm_by_uuid: dict[str, str]
                     ) -> Mapped | None:
    """The nfvha event a notification stands for, or None when it reports no fault and
    no recovery (Masakari marks those "ignored")."""
    host = n.hostname
    if isinstance(payload, ComputeHostPayload):
        states = f"host_status={payload.host_status}, cluster_status={payload.cluster_status}"
        if payload.event == "STOPPED":
            return Mapped(Kind.HOST_DOWN, f"host/{host}", Severity.CRITICAL,
                          EventType.EQUIPMENT_ALARM, "host-failure",
                          f"Masakari monitor reports host {host} stopped ({states})")
        return Mapped(Kind.HOST_UP, f"host/{host}", Severity.CLEARED,
                      EventType.EQUIPMENT_ALARM, "host-failure",
                      f"Masakari monitor reports host {host} started ({states})", clears=True)
    if isinstance(payload, ProcessPayload):
        name = payload.process_name
        if payload.event == "STOPPED":
            return Mapped(Kind.HOST_PROCESS_FAILED, f"host/{host}", Severity.MAJOR,
                          EventType.PROCESSING_ERROR_ALARM, "host-software-failure",
                          f"Masakari monitor reports process {name} on {host} stopped",
                          details={"process": name})
        return Mapped(Kind.HOST_PROCESS_RESTARTED, f"host/{host}", Severity.CLEARED,
                      EventType.PROCESSING_ERROR_ALARM, "host-software-failure",
                      f"Masakari monitor reports process {name} on {host} started",
                      clears=True, details={"process": name})
    assert isinstance(payload, VmPayload)
    vm = vm_by_uuid.get(payload.instance_uuid)
    entity = f"vm/{vm}" if vm is not None else f"vm/{payload.instance_uuid}"
    what = f"{payload.event}/{payload.vir_domain_event}"
    details = {"instance_uuid": payload.instance_uuid}
    if payload.event in VM_HANG_EVENTS:
        return Mapped(Kind.VM_HUNG, entity, Severity.CRITICAL, EventType.PROCESSING_ERROR_ALARM,
                      "vm-hang", f"Masakari monitor reports {entity} on {host} hung ({what})",
                      details=details)
    kind = VM_FAILURES.get((payload.event, payload.vir_domain_event))
    if kind is None:
        return None
    return Mapped(kind, entity, Severity.CRITICAL, EventType.PROCESSING_ERROR_ALARM, "vm-crash",
                  f"Masakari monitor reports {entity} on {host} failed ({what})",
                  details=details)


def to_event(n: NotificationIn, mapped: Mapped, notification_uuid: str, now_ns: int) -> Event:
    return Event(
        host=n.hostname, seq=0, origin="masakari", kind=mapped.kind,
        entity=mapped.entity, severity=mapped.severity,
        event_type=mapped.event_type, probable_cause=mapped.probable_cause,
        description=mapped.description, clears=mapped.clears,
        # The monitor's detection time is known only on its wall clock: generated_time,
        # naive UTC as oslo's timeutils.utcnow() prints it.  Monotonic time is ours, at
        # receipt.
        event_time=epoch_seconds(n.generated_time, naive_is_utc=True),
        detected_mono_ns=now_ns,
        details={**mapped.details, "notification_uuid": notification_uuid,
                 "masakari_type": n.type, "payload": dict(n.payload),
                 "generated_time": n.generated_time.isoformat()},
    )


# -- the router ----------------------------------------------------------------------


def masakari_router(topology: Topology, ingest: Ingest, clock: Clock, *,
                    dedup_window_s: float = 180.0, keep: int = 10_000) -> APIRouter:
    """Masakari v1 intake; mount with ``prefix="/v1"``."""
    router = APIRouter(route_class=MasakariRoute, tags=["masakari"])
    created_at = masakari_time(_wall_time(clock.wall()))
    segments, hosts = _segments_and_hosts(topology, created_at)
    host_by_name = {h["name"]: h for h in hosts}
    vm_by_uuid = {vm_uuid(v.name): v.name for v in topology.vms}
    notifications = NotificationLog(keep=keep)
    window_ns = int(dedup_window_s * 1e9)
    # One at a time from duplicate check to record, so two identical notifications
    # sent at once cannot both pass the check.
    accepting = asyncio.Lock()

    def version_doc(request: Request) -> Response:
        base = str(request.url).split("?", 1)[0].rstrip("/") + "/"
        return AsciiJSONResponse({"version": {
            "id": "v1",
            "status": "CURRENT",
            "version": _fmt(MAX_VERSION),
            "min_version": _fmt(MIN_VERSION),
            "updated": "2016-07-01T11:33:21Z",
            "links": [{"rel": "self", "href": base}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.masakari+json;version=1"}],
        }})

    @router.get("", include_in_schema=False)
    async def version_no_slash(request: Request) -> Response:
        return version_doc(request)

    @router.get("/")
    async def version(request: Request) -> Response:
        """The v1 version document (keystoneauth reads it for microversion discovery)."""
        return version_doc(request)

    @router.post("/notifications", status_code=202)
    async def create_notification(request: Request) -> Response:
        body = await request.body()
        try:
            req = CreateNotificationRequest.model_validate_json(body)
        except ValidationError as e:
            raise bad_request(e) from None
        n = req.notification
        try:
            payload = PAYLOAD_MODELS[n.type].model_validate(n.payload)
        except ValidationError as e:
            raise bad_request(e, ("notification", "payload")) from None
        host = host_by_name.get(n.hostname)
        if host is None:
            raise MasakariFault(400, f"Host with name {n.hostname} could not be found.")
        mapped = map_notification(n, payload, vm_by_uuid)
        async with accepting:
            now_ns = clock.mono_ns()
            if notifications.duplicate_of(n, now_ns, window_ns) is not None:
                raise MasakariFault(409, f"Notification received from host {n.hostname} of"
                                         f" type '{n.type}' is duplicate.")
            stored = StoredNotification(
                id=notifications.next_id, notification_uuid=str(uuid.uuid4()), type=n.type,
                hostname=n.hostname, source_host_uuid=host["uuid"], generated_time=n.generated_time,
                payload=dict(n.payload), status="new" if mapped else "ignored",
                created_at=_wall_time(clock.wall()), received_mono_ns=now_ns,
            )
            if mapped is not None:
                event = to_event(n, mapped, stored.notification_uuid, now_ns)
                try:
                    await ingest([event])
                except Exception as e:
                    # Not recorded: the monitor's retry must not be refused as a duplicate.
                    log.exception("could not take Masakari notification %s", n.type)
                    raise MasakariFault(503, f"nfvha could not store the event: {e}") from None
            notifications.items.append(stored)
            notifications.next_id += 1
        return AsciiJSONResponse(
            {"notification": stored.view(request.state.api_version)}, status_code=202)

    @router.get("/notifications")
    async def list_notifications(request: Request) -> Response:
        q = request.query_params
        items = list(notifications.items)
        for name in ("status", "source_host_uuid", "type"):
            if name in q:
                items = [n for n in items if getattr(n, name) == q[name]]
        if "generated-since" in q:
            try:  # Masakari's words; out of range as well (ADR 0016)
                since = check_usable(parse_iso8601(q["generated-since"]), naive_is_utc=True)
            except ValueError:
                raise MasakariFault(400, "Invalid generated-since value") from None
            since_s = epoch_seconds(since, naive_is_utc=True)
            items = [n for n in items
                     if epoch_seconds(n.generated_time, naive_is_utc=True) >= since_s]
        views = [n.view(request.state.api_version) for n in items]
        views = _sorted(views, request,
                        ("created_at", "updated_at", "generated_time", "type", "status",
                         "source_host_uuid", "notification_uuid", "id"),
                        "created_at", "desc")
        return AsciiJSONResponse({"notifications": _page(views, request)})

    @router.get("/notifications/{notification_id}")
    async def show_notification(notification_id: str, request: Request) -> Response:
        n = notifications.find(notification_id)
        if n is None:
            raise MasakariFault(404, f"No notification with id {notification_id}.")
        return AsciiJSONResponse(
            {"notification": n.view(request.state.api_version, detail=True)})

    def segment(segment_id: str) -> dict[str, Any]:
        for s in segments:
            if _matches(s, segment_id):
                return s
        raise MasakariFault(404, f"No failover segment with id {segment_id}.")

    @router.get("/segments")
    async def list_segments(request: Request) -> Response:
        q = request.query_params
        items = list(segments)
        for name in ("recovery_method", "service_type"):
            if name in q:
                items = [s for s in items if s[name] == q[name]]
        enabled = _bool_param(request, "enabled")
        if enabled is not None:
            items = [s for s in items if s["enabled"] is enabled]
        items = _sorted(items, request, ("id", "name", "created_at", "updated_at",
                                         "recovery_method", "service_type"), "id", "asc")
        return AsciiJSONResponse({"segments": _page(items, request)})

    @router.get("/segments/{segment_id}")
    async def show_segment(segment_id: str) -> Response:
        return AsciiJSONResponse({"segment": segment(segment_id)})

    @router.get("/segments/{segment_id}/hosts")
    async def list_hosts(segment_id: str, request: Request) -> Response:
        seg = segment(segment_id)
        q = request.query_params
        items = [h for h in hosts if h["failover_segment_id"] == seg["uuid"]]
        if "type" in q:
            items = [h for h in items if h["type"] == q["type"]]
        for name in ("on_maintenance", "reserved"):
            flag = _bool_param(request, name)
            if flag is not None:
                items = [h for h in items if h[name] is flag]
        items = _sorted(items, request, ("id", "name", "type", "created_at", "updated_at"),
                        "id", "asc")
        return AsciiJSONResponse({"hosts": _page(items, request)})

    @router.get("/segments/{segment_id}/hosts/{host_id}")
    async def show_host(segment_id: str, host_id: str) -> Response:
        seg = segment(segment_id)
        for h in hosts:
            if h["failover_segment_id"] == seg["uuid"] and _matches(h, host_id):
                return AsciiJSONResponse({"host": h})
        raise MasakariFault(404, f"No host with id {host_id}.")

    return router
