"""A controller that dies after an event is stored (and acknowledged to its agent)
but before the alarms it raises are stored loses neither alarm nor notification."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from test_alarm_manager import topology

from nfvha.controller.bus import EventBus
from nfvha.controller.faults import FaultManagement
from nfvha.faults.manager import AlarmManager
from nfvha.faults.model import FmSubscriptionRequest
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import StoreUnavailable
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import ManualClock


class Crash(BaseException):
    """The process dying: nothing after it runs."""


def outbox_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return sorted(r[0] for r in db.execute("SELECT notification_id FROM outbox"))


async def controller(tmp: Path, clock: ManualClock
                     ) -> tuple[EventBus, FaultManagement, Notifier, list[object]]:
    store = SqliteEventStore(tmp / "events.db")
    alarms = SqliteAlarmStore(tmp / "events.db")
    ager = SqliteAlarmStore(tmp / "events.db")
    outbox = Outbox(tmp / "notifications.db")
    bus = EventBus(store, clock)
    fm = FaultManagement(AlarmManager(topology(), alarms, clock, topology().settings), ager,
                         topology().settings, clock)
    notifier = Notifier(outbox, clock)
    await notifier.start()
    fm.notify_through(notifier, AlarmStream(), "http://t/vnffm/v1")
    return bus, fm, notifier, [outbox, ager, alarms, store]


@pytest.mark.req("FM-7")
async def test_crash_between_event_commit_and_alarm_commit_is_repaired_by_replay(
        tmp_path: Path) -> None:
    clock = ManualClock()
    bus, fm, notifier, closers = await controller(tmp_path, clock)
    notifier.subscribe(FmSubscriptionRequest(callbackUri="http://127.0.0.1:9/cb"), "http://t")

    def crash(processed_event_id: int | None = None) -> None:
        raise Crash

    fm.alarms.commit = crash  # type: ignore[method-assign]
    bus.subscribe(fm.on_events)
    ev = Event(host="h1", seq=1, kind=Kind.VM_CRASHED, entity="vm/vm-a",
               severity=Severity.CRITICAL, event_type=EventType.PROCESSING_ERROR_ALARM,
               probable_cause="vm-crash", event_time=1.8e9, detected_mono_ns=1)
    with pytest.raises(Crash):
        await bus.publish([ev])
    queued = outbox_ids(tmp_path / "notifications.db")
    assert len(queued) == 1  # the VM alarm's notification: queued, the alarm not stored
    await notifier.close()
    for c in closers:
        c.close()  # type: ignore[attr-defined]

    # The next controller: the event is in the store, its alarms are not.
    _, fm2, notifier2, closers2 = await controller(tmp_path, clock)
    assert fm2.alarms.all_alarms() == []
    assert fm2.replay(SqliteEventStore(tmp_path / "events.db")) == 1
    [alarm] = fm2.alarms.active_for("vm/vm-a", "vm-failure")
    # Same decision, same ids: the notifications already queued are not queued twice.
    assert outbox_ids(tmp_path / "notifications.db") == queued
    assert fm2.alarms.processed_event_id == 1
    assert fm2.replay(SqliteEventStore(tmp_path / "events.db")) == 0  # nothing left
    assert alarm.faultType == "vm-failure"
    await notifier2.close()
    for c in closers2:
        c.close()  # type: ignore[attr-defined]


def vm_event(seq: int, vm: str) -> Event:
    return Event(host="h1", seq=seq, kind=Kind.VM_CRASHED, entity=f"vm/{vm}",
                 severity=Severity.CRITICAL, event_type=EventType.PROCESSING_ERROR_ALARM,
                 probable_cause="vm-crash", event_time=1.8e9, detected_mono_ns=seq)


@pytest.mark.req("FM-7")
async def test_outbox_unavailable_the_decision_is_dropped_and_made_again(
        tmp_path: Path) -> None:
    """The notification queue fails for one decision (its database restarting): the
    alarm is not kept without its notification; once the store answers, the event is
    decided again - alarm stored, notification queued, once."""
    clock = ManualClock()
    bus, fm, notifier, closers = await controller(tmp_path, clock)
    events = SqliteEventStore(tmp_path / "events.db")
    fm.replay(events)  # as at start: the store to decide again from
    notifier.subscribe(FmSubscriptionRequest(callbackUri="http://127.0.0.1:9/cb"), "http://t")
    bus.subscribe(fm.on_events)
    real_enqueue = notifier.outbox.enqueue

    def down(items: object) -> None:
        raise StoreUnavailable("PostgreSQL: connection refused")

    notifier.outbox.enqueue = down  # type: ignore[method-assign]
    await bus.publish([vm_event(1, "vm-a")])
    assert outbox_ids(tmp_path / "notifications.db") == []
    assert fm.alarms.all_alarms() == []  # taken back: not kept without its notification
    assert fm.alarms.processed_event_id == 0
    # Back: the next event brings the dropped one's decision with it.
    notifier.outbox.enqueue = real_enqueue  # type: ignore[method-assign]
    await bus.publish([vm_event(2, "vm-b")])
    assert len(fm.alarms.active_for("vm/vm-a", "vm-failure")) == 1
    assert len(fm.alarms.active_for("vm/vm-b", "vm-failure")) == 1
    assert len(outbox_ids(tmp_path / "notifications.db")) == 2
    stored = SqliteAlarmStore(tmp_path / "events.db")
    assert {r.entity for r in stored.all()} == {"vm/vm-a", "vm/vm-b"}
    stored.close()
    await notifier.close()
    events.close()
    for c in closers:
        c.close()  # type: ignore[attr-defined]
