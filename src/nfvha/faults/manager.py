"""The alarm manager: events in, ETSI alarms and their notifications out.

One decision per event, from the current alarm table:
- a fault event raises an alarm, or updates the active one with the same key
  (storms collapse into a count, and only a severity change is notified);
- a recovery event clears the alarms it ends;
- correlation on the containment graph: an alarm whose container (its VM, its
  host) has a failure alarm — active, or cleared within the correlation window,
  for faults reported late — is a consequence: ``isRootCause=false`` and it
  carries the root's id in ``correlatedAlarmIds``. A host that goes down is the
  root cause of alarms raised for all its VMs and VNFCs (their agent cannot
  report them any more);
- failures of several co-located VMs within a window raise a "suspected latent
  host fault" alarm on their host (VNFHA-6), cleared when the window passes
  without another failure (``tick``).
Time comes from the injected clock; nothing here sleeps or does I/O but the store.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nfvha.faults.catalog import (
    CLEARS,
    HOST_FAILURE,
    LATENT_HOST_FAULT,
    RAISES,
    ROOT_TYPES,
    VM_FAILURE,
    VM_HANG,
    VNFC_FAILURE,
    AlarmType,
    alarm_key,
    part_of,
)
from nfvha.faults.model import (
    AckState,
    Alarm,
    AlarmLinks,
    FaultyResourceInfo,
    Link,
    NotificationType,
    ResourceHandle,
)
from nfvha.model.containment import ContainmentGraph, EntityRef
from nfvha.model.events import Event, EventType, Severity
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology
from nfvha.store.alarms import AlarmRow, SqliteAlarmStore
from nfvha.util.clock import Clock

SEVERITY_RANK = {Severity.CLEARED: 0, Severity.INDETERMINATE: 1, Severity.WARNING: 2,
                 Severity.MINOR: 3, Severity.MAJOR: 4, Severity.CRITICAL: 5}
_TYPES = {t.name: t for t in (*RAISES.values(), LATENT_HOST_FAULT)}


class AlarmNotFound(KeyError):
    pass


class AlreadyInState(ValueError):
    pass


@dataclass
class AlarmState:
    alarm: Alarm
    key: str
    type: AlarmType
    entity: EntityRef
    host: str
    raised_wall: float
    changed_wall: float
    worst: Severity
    count: int = 1
    members: list[str] = field(default_factory=list)  # latent-fault alarms only
    member_vms: set[EntityRef] = field(default_factory=set)  # latent-fault alarms only

    @property
    def active(self) -> bool:
        return self.alarm.alarmClearedTime is None

    @property
    def can_be_root(self) -> bool:
        """A merely suspect host may be a partition: only a confirmed failure is a root."""
        return self.type in ROOT_TYPES and (
            self.type is not HOST_FAILURE or self.worst == Severity.CRITICAL)


@dataclass(frozen=True)
class AlarmChange:
    notification: NotificationType
    alarm: Alarm
    change_id: str  # derived from the cause: the same event replayed gives the same id


ALARM_NAMESPACE = uuid.UUID("0b7d3f62-9a51-4f0e-8c2d-5e6a7b8c9d01")
# Events that change no alarm still move the watermark, every this many, so a
# restart after a quiet week does not replay a week of condition reports.
WATERMARK_EVERY = 500
# A suspected latent fault lists at most this many (the latest) of its member alarms.
MAX_CORRELATED = 100


def _ts(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, UTC)


class AlarmManager:
    def __init__(self, topology: Topology, store: SqliteAlarmStore, clock: Clock,
                 settings: Settings, api_root: str = "/vnffm/v1") -> None:
        self._t = topology
        self._graph = ContainmentGraph.from_topology(topology)
        self._store = store
        self._clock = clock
        self._api_root = api_root
        self._window_s = settings.fm_correlation_window_s
        self._latent_window_s = settings.fm_latent_fault_window_s
        self._latent_min_vms = settings.fm_latent_fault_min_vms
        self._vnf_of: dict[str, str] = {c.name: v.name for v, c in topology.components()}
        self._cause = ""  # what the current decision is about (ids derive from it)
        self.reload()

    def reload(self) -> None:
        """Forget every decision not stored and take the store's alarms: after a
        decision whose notifications could not be queued (they must not be lost, so
        neither may the decision be kept; its events are decided again)."""
        rows = self._store.all()
        watermark = self._store.processed_event_id()
        self.alarms: dict[str, AlarmState] = {}
        self._active: dict[str, str] = {}  # key -> alarm id
        # Indexes, so that one decision or query costs what its entity's neighbourhood
        # holds, not what the whole alarm history holds. Entities are parsed once, when
        # an alarm is raised or loaded.
        self._by_entity: dict[EntityRef, list[AlarmState]] = {}  # in raise order
        # entity -> its active alarms' ids, in the order they became active (a dict
        # as an ordered set: ``active_for`` answers in that order)
        self._active_on: dict[EntityRef, dict[str, None]] = {}
        self._active_latent: dict[str, None] = {}  # keys of active latent-fault alarms
        self._last_cleared_root: dict[EntityRef, AlarmState] = {}
        self._touched: set[str] = set()  # alarm ids changed by the current decision
        self._watermark_written = watermark
        for row in rows:
            self._load(row)

    def _index(self, st: AlarmState) -> None:
        self.alarms[st.alarm.id] = st
        self._by_entity.setdefault(st.entity, []).append(st)

    def _activate(self, st: AlarmState) -> None:
        self._active[st.key] = st.alarm.id
        self._active_on.setdefault(st.entity, {})[st.alarm.id] = None
        if st.type is LATENT_HOST_FAULT:
            self._active_latent[st.key] = None

    def _deactivate(self, st: AlarmState) -> None:
        self._active.pop(st.key, None)
        on = self._active_on.get(st.entity)
        if on is not None:
            on.pop(st.alarm.id, None)
            if not on:
                del self._active_on[st.entity]
        self._active_latent.pop(st.key, None)

    def _recent(self, entity: EntityRef, window_s: float) -> list[AlarmState]:
        """Alarms of ``entity`` raised within the window, newest first."""
        now = self._clock.wall()
        out = []
        for st in reversed(self._by_entity.get(entity, [])):
            if now - st.raised_wall > window_s:
                break
            out.append(st)
        return out

    # -- persistence -------------------------------------------------------------
    def _load(self, row: AlarmRow) -> None:
        alarm = Alarm.model_validate_json(row.body)
        t = _TYPES.get(alarm.faultType or "")
        if t is None:
            return
        st = AlarmState(alarm, row.key, t, EntityRef.parse(row.entity), row.host,
                        row.raised_time, row.changed_time, Severity(row.severity))
        self._index(st)
        if row.active:
            self._activate(st)
        elif st.can_be_root:
            self._last_cleared_root[st.entity] = st

    def _row(self, st: AlarmState) -> AlarmRow:
        return AlarmRow(
            id=st.alarm.id, key=st.key, entity=str(st.entity), host=st.host,
            severity=st.worst.value, active=st.active, raised_time=st.raised_wall,
            changed_time=st.changed_wall,
            body=st.alarm.model_dump_json(by_alias=True, exclude_none=True),
        )

    # -- queries -----------------------------------------------------------------
    def get(self, alarm_id: str) -> Alarm:
        st = self.alarms.get(alarm_id)
        if st is None:
            raise AlarmNotFound(alarm_id)
        return st.alarm

    def all_alarms(self) -> list[Alarm]:
        return [st.alarm for st in sorted(self.alarms.values(), key=lambda s: s.raised_wall)]

    def active_for(self, entity: str, type_name: str | None = None) -> list[Alarm]:
        """The active alarms of ``entity`` (of type ``type_name``), in the order they
        were raised: O(that entity's active alarms)."""
        try:
            ref = EntityRef.parse(entity)
        except ValueError:
            return []  # no alarm is raised for what is not an entity
        states = [self.alarms[i] for i in self._active_on.get(ref, ())]
        return [st.alarm for st in states
                if type_name is None or st.key.startswith(type_name + "|")]

    # -- commands ----------------------------------------------------------------
    def acknowledge(self, alarm_id: str, state: AckState) -> Alarm:
        st = self.alarms.get(alarm_id)
        if st is None:
            raise AlarmNotFound(alarm_id)
        if st.alarm.ackState == state:
            raise AlreadyInState(f"alarm {alarm_id} is already {state.value}")
        now = self._clock.wall()
        acked = dataclasses.replace(st, alarm=st.alarm.model_copy(update={
            "ackState": state,
            "alarmAcknowledgedTime": _ts(now) if state == AckState.ACKNOWLEDGED else None,
        }), changed_wall=now)
        # Stored first: an acknowledgement the store refused is not kept (nor answered).
        self._store.put([self._row(acked)])
        st.alarm, st.changed_wall = acked.alarm, acked.changed_wall
        return st.alarm

    def rebuilt(self) -> list[AlarmChange]:
        """After a restart: tell subscribers to re-read the list (it may have changed
        while no controller was there to notify them)."""
        if not self.alarms:
            return []
        return [AlarmChange(NotificationType.ALARM_LIST_REBUILT, self.all_alarms()[0],
                            f"rebuilt|{uuid.uuid4()}")]

    def _changes(self, changed: dict[str, NotificationType]) -> list[AlarmChange]:
        return [AlarmChange(n, self.alarms[i].alarm, f"{self._cause}|{i}|{n.value}")
                for i, n in changed.items()]

    def commit(self, processed_event_id: int | None = None) -> None:
        """Store what the last decision changed, with the id of the event decided.
        Separate from the decision so the caller can queue the notifications durably
        first: a crash in between is repaired by replaying the event (same ids),
        never by losing a notification."""
        due = processed_event_id is not None and \
            processed_event_id - self._watermark_written >= WATERMARK_EVERY
        if self._touched or due:
            # Cleared rows first: one commit may clear an alarm and raise its successor
            # for the same key, and only one active row per key may exist at a time.
            rows = sorted((self._row(self.alarms[i]) for i in self._touched),
                          key=lambda r: r.active)
            self._store.put(rows, processed_event_id)
            self._touched.clear()
            if processed_event_id is not None:
                self._watermark_written = processed_event_id

    @property
    def processed_event_id(self) -> int:
        return self._store.processed_event_id()

    # -- events ------------------------------------------------------------------
    def on_event(self, ev: Event) -> list[AlarmChange]:
        """Decide what ``ev`` changes; call ``commit`` to store it."""
        if ev.informational:
            return []
        self._cause = f"event|{ev.host}|{ev.origin}|{ev.seq}|{getattr(ev, 'id', '')}"
        if ev.seq == 0 and not hasattr(ev, "id"):
            self._cause += f"|{uuid.uuid4()}"  # no identity of its own: unique, not replayable
        changed: dict[str, NotificationType] = {}
        if ev.clears:
            for t in CLEARS.get(ev.kind, ()):
                self._clear(alarm_key(t, ev.entity, part_of(t, ev)), changed)
        else:
            raised = RAISES.get(ev.kind)
            if raised is not None:
                self._raise(raised, ev, changed)
        return self._changes(changed)

    def tick(self) -> list[AlarmChange]:
        """Clear latent-fault suspicions whose window passed without a new failure."""
        now = self._clock.wall()
        self._cause = f"expiry|{now}"
        changed: dict[str, NotificationType] = {}
        for key in list(self._active_latent):  # not every active alarm: only these expire
            st = self.alarms[self._active[key]]
            if now - st.changed_wall > self._latent_window_s:
                self._clear(key, changed)
        return self._changes(changed)

    def _touch(self, st: AlarmState) -> None:
        self._touched.add(st.alarm.id)

    # -- raising -------------------------------------------------------------------
    def _managed_object(self, entity: EntityRef) -> tuple[str, list[str] | None]:
        if entity.kind == "vnfc":
            return self._vnf_of.get(entity.name, str(entity)), [entity.name]
        if entity.kind == "vm":
            vnfcs = [c for c in self._graph.children.get(entity, []) if c.kind == "vnfc"]
            vnfs = sorted({self._vnf_of[c.name] for c in vnfcs if c.name in self._vnf_of})
            return (vnfs[0] if vnfs else str(entity)), [c.name for c in vnfcs] or None
        return str(entity), None

    def _raise(self, t: AlarmType, ev: Event, changed: dict[str, NotificationType],
               *, root: AlarmState | None = None, derived_from: str | None = None) -> None:
        entity = EntityRef.parse(ev.entity)
        key = alarm_key(t, ev.entity, part_of(t, ev))
        now = self._clock.wall()
        existing = self._active.get(key)
        if existing is not None:
            self._update(self.alarms[existing], ev, changed, root)
            return
        mo, vnfcs = self._managed_object(entity)
        root = root or self._root_for(entity)
        alarm_id = str(uuid.uuid5(ALARM_NAMESPACE, f"{self._cause}|{key}"))
        details = [ev.description] if ev.description else []
        details += [f"host={ev.host}", f"entity={ev.entity}", "count=1"]
        if derived_from:
            details.append(f"derived from {derived_from}")
        details += [f"{k}={v}" for k, v in ev.details.items()
                    if k in ("exit_desc", "pid", "process", "link", "sensor", "value", "reason")]
        alarm = Alarm(
            id=alarm_id, managedObjectId=mo, vnfcInstanceIds=vnfcs,
            rootCauseFaultyResource=FaultyResourceInfo(
                faultyResource=ResourceHandle(resourceId=ev.entity,
                                              vimLevelResourceType=entity.kind),
                faultyResourceType=t.resource_type),
            alarmRaisedTime=_ts(now), alarmChangedTime=_ts(now), perceivedSeverity=ev.severity,
            eventTime=_ts(ev.event_time), eventType=ev.event_type, faultType=t.name,
            probableCause=ev.probable_cause, isRootCause=root is None,
            correlatedAlarmIds=[root.alarm.id] if root is not None else None,
            faultDetails=details,
            links=AlarmLinks(self_=Link(href=f"{self._api_root}/alarms/{alarm_id}")),
        )
        st = AlarmState(alarm, key, t, entity, ev.host, now, now, ev.severity)
        self._index(st)
        self._activate(st)
        self._touch(st)
        changed[alarm_id] = NotificationType.ALARM
        if root is not None:
            self._link(root, st)
        if st.can_be_root:
            self._adopt_consequences(st, changed)
        if t is HOST_FAILURE and ev.severity == Severity.CRITICAL:
            self._host_down_consequences(st, ev, changed)
        if t in (VM_FAILURE, VM_HANG, VNFC_FAILURE) and root is None:
            self._latent_fault_check(st, ev, changed)

    def _update(self, st: AlarmState, ev: Event, changed: dict[str, NotificationType],
                root: AlarmState | None) -> None:
        now = self._clock.wall()
        st.count += 1
        st.changed_wall = now
        update: dict[str, object] = {
            "alarmChangedTime": _ts(now),
            "faultDetails": [d if not d.startswith("count=") else f"count={st.count}"
                             for d in (st.alarm.faultDetails or [])],
        }
        escalated = SEVERITY_RANK[ev.severity] > SEVERITY_RANK[st.alarm.perceivedSeverity]
        if escalated:
            update.update(perceivedSeverity=ev.severity, probableCause=ev.probable_cause,
                          eventTime=_ts(ev.event_time), eventType=ev.event_type)
            st.worst = ev.severity
        st.alarm = st.alarm.model_copy(update=update)
        if root is not None and st.alarm.isRootCause:
            self._link(root, st)
            changed.setdefault(st.alarm.id, NotificationType.ALARM)
        self._touch(st)
        if escalated:
            # Storms collapse: a repeat is counted silently; a worse one is news.
            changed[st.alarm.id] = NotificationType.ALARM
            if st.type is HOST_FAILURE and ev.severity == Severity.CRITICAL:
                self._adopt_consequences(st, changed)
                self._host_down_consequences(st, ev, changed)

    def _root_for(self, entity: EntityRef) -> AlarmState | None:
        """The failure alarm of the outermost container of ``entity``: active, or
        cleared within the correlation window (a fault reported late)."""
        now = self._clock.wall()
        outermost: AlarmState | None = None
        for ancestor in self._graph.ancestors(entity):  # inner to outer: a host beats a VM
            found = [st for i in self._active_on.get(ancestor, ())
                     if (st := self.alarms[i]).can_be_root]
            last = self._last_cleared_root.get(ancestor)
            if last is not None and now - last.changed_wall <= self._window_s:
                found.append(last)
            if found:
                outermost = max(found, key=lambda st: st.raised_wall)
        return outermost

    def _link(self, root: AlarmState, st: AlarmState) -> None:
        st.alarm = st.alarm.model_copy(update={
            "isRootCause": False,
            "correlatedAlarmIds": sorted({*(st.alarm.correlatedAlarmIds or []), root.alarm.id}),
        })
        root.alarm = root.alarm.model_copy(update={
            "correlatedAlarmIds": sorted({*(root.alarm.correlatedAlarmIds or []), st.alarm.id}),
        })
        self._touch(st)
        self._touch(root)

    def _adopt_consequences(self, root: AlarmState, changed: dict[str, NotificationType]) -> None:
        """Alarms of contained entities raised shortly before their container's."""
        for inside in self._graph.descendants(root.entity):
            for st in self._recent(inside, self._window_s):
                if st.active and st.alarm.isRootCause and st.type is not LATENT_HOST_FAULT:
                    self._link(root, st)
                    changed.setdefault(st.alarm.id, NotificationType.ALARM)

    def _host_down_consequences(self, root: AlarmState, ev: Event,
                                changed: dict[str, NotificationType]) -> None:
        """A down host takes its VMs and VNFCs with it; their agent cannot say so."""
        for vm in [c for c in self._graph.children.get(root.entity, []) if c.kind == "vm"]:
            for entity, t in [(vm, VM_FAILURE)] + [
                    (c, VNFC_FAILURE) for c in self._graph.children.get(vm, [])]:
                derived = Event(
                    host=root.host, seq=0, origin="controller", kind=ev.kind,
                    entity=str(entity), severity=Severity.CRITICAL
                    if t is VM_FAILURE else Severity.MAJOR,
                    event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="host-failure",
                    description=f"{entity} lost with its host {root.host}",
                    event_time=ev.event_time, detected_mono_ns=ev.detected_mono_ns,
                )
                self._raise(t, derived, changed, root=root, derived_from=root.alarm.id)

    def _latent_fault_check(self, st: AlarmState, ev: Event,
                            changed: dict[str, NotificationType]) -> None:
        host_ref = self._graph.container(st.entity, "host")
        vm_of = st.entity if st.entity.kind == "vm" else self._graph.container(st.entity, "vm")
        if host_ref is None or vm_of is None:
            return
        key = alarm_key(LATENT_HOST_FAULT, str(host_ref), None)
        active_id = self._active.get(key)
        if active_id is not None and self.alarms[active_id].member_vms:
            # Already suspected: this failure joins it (no rescan of the window).
            lst = self.alarms[active_id]
            new_members, vms = [st.alarm.id], lst.member_vms | {vm_of}
        else:
            members: list[str] = []
            vms = set()
            for vm_ref in [c for c in self._graph.children.get(host_ref, []) if c.kind == "vm"]:
                for e in [vm_ref, *self._graph.children.get(vm_ref, [])]:
                    for other in self._recent(e, self._latent_window_s):
                        if other.type in (VM_FAILURE, VM_HANG, VNFC_FAILURE) \
                                and other.alarm.isRootCause:
                            members.append(other.alarm.id)
                            vms.add(vm_ref)
            if len(vms) < self._latent_min_vms:
                return
            if active_id is None:
                self._raise(LATENT_HOST_FAULT, Event(
                    host=host_ref.name, seq=0, origin="controller", kind=ev.kind,
                    entity=str(host_ref), severity=Severity.MAJOR,
                    event_type=EventType.EQUIPMENT_ALARM,
                    probable_cause="suspected-latent-host-fault",
                    description=f"VMs on {host_ref.name} failed one after another within"
                    f" {self._latent_window_s:.0f} s: suspected latent fault of the host",
                    event_time=ev.event_time, detected_mono_ns=ev.detected_mono_ns,
                ), changed)
            lst = self.alarms[self._active[key]]
            new_members = members
        now = self._clock.wall()
        grew = len(vms) > len(lst.member_vms)
        lst.member_vms = set(vms)
        known = set(lst.members)
        lst.members = (lst.members + [m for m in new_members if m not in known])[-MAX_CORRELATED:]
        lst.count += len(new_members)
        lst.changed_wall = now
        lst.alarm = lst.alarm.model_copy(update={
            "correlatedAlarmIds": sorted(lst.members),
            "faultDetails": [d for d in (lst.alarm.faultDetails or [])
                             if not d.startswith(("vms=", "failures="))]
            + [f"vms={len(vms)}", f"failures={lst.count}"],
            "alarmChangedTime": _ts(now),
        })
        self._touch(lst)
        if grew:  # more VMs involved is news; one more failure of the same ones is not
            changed.setdefault(lst.alarm.id, NotificationType.ALARM)

    # -- clearing ------------------------------------------------------------------
    def _clear(self, key: str, changed: dict[str, NotificationType]) -> None:
        alarm_id = self._active.get(key)
        if alarm_id is None:
            return
        st = self.alarms[alarm_id]
        self._deactivate(st)
        if st.can_be_root:
            self._last_cleared_root[st.entity] = st
        now = self._clock.wall()
        st.changed_wall = now
        st.alarm = st.alarm.model_copy(update={
            "perceivedSeverity": Severity.CLEARED, "alarmClearedTime": _ts(now),
            "alarmChangedTime": _ts(now),
        })
        self._touch(st)
        changed[alarm_id] = NotificationType.ALARM_CLEARED
