"""Fault management inside the controller: every stored event goes through the
alarm manager; its changes go to the notifier; ageing and latent-fault expiry run
periodically."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Sequence

from nfvha.faults.manager import AlarmChange, AlarmManager
from nfvha.faults.model import NotificationType
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import StoredEvent
from nfvha.model.settings import Settings
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import EventStore, StoreUnavailable
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)


def _stream_payload(c: AlarmChange) -> str:
    if c.notification == NotificationType.ALARM_LIST_REBUILT:
        return json.dumps({"notificationType": c.notification.value})
    return json.dumps({"notificationType": c.notification.value,
                       "alarm": c.alarm.model_dump(mode="json", by_alias=True,
                                                   exclude_none=True)})

ChangeSink = Callable[[list[AlarmChange]], None]


class FaultManagement:
    def __init__(self, alarms: AlarmManager, ager: SqliteAlarmStore, settings: Settings,
                 clock: Clock) -> None:
        """``ager`` is a connection of its own: ageing runs in a worker thread, and a
        SQLite connection must not be used by two threads at once."""
        self.alarms = alarms
        self._ager = ager
        self._settings = settings
        self._clock = clock
        self._sinks: list[ChangeSink] = []
        self._batched: Callable[[], contextlib.AbstractContextManager[None]] = \
            contextlib.nullcontext
        self._events: EventStore | None = None  # for deciding again (``replay``)
        self._undecided = False  # a decision was dropped; its events wait for _redecide

    def add_sink(self, sink: ChangeSink) -> None:
        self._sinks.append(sink)

    def notify_through(self, notifier: Notifier, stream: AlarmStream, api_root: str) -> None:
        """Every alarm change goes to the subscribers (durably queued first) and to the
        live SSE consumers."""

        def sink(changes: list[AlarmChange]) -> None:
            for c in changes:
                rebuilt = c.notification == NotificationType.ALARM_LIST_REBUILT
                alarm = None if rebuilt else c.alarm
                notifier.publish(c.notification, alarm, api_root=api_root,
                                 alarm_cleared_time=c.alarm.alarmClearedTime,
                                 change_id=c.change_id)
                stream.publish(c.notification, functools.partial(_stream_payload, c), alarm)

        self.add_sink(sink)
        self._batched = notifier.batched

    def _dispatch(self, changes: list[AlarmChange]) -> None:
        if not changes:
            return
        for sink in self._sinks:
            try:
                sink(changes)
            except StoreUnavailable:
                raise  # the durable queue: the decision cannot be kept without it
            except Exception:  # one broken consumer must not stop alarm handling
                log.exception("alarm change consumer failed")

    def _decided(self, changes: list[AlarmChange], processed_event_id: int | None) -> bool:
        """Queue the notifications durably (one outbox commit), then store the alarms
        (one commit). If the queue cannot be written, the decision is dropped - the
        alarms taken back from the store - and its events decided again later
        (``_redecide``): an alarm stored without its notification queued would never
        be notified. False then."""
        try:
            with self._batched():
                self._dispatch(changes)
        except StoreUnavailable as e:
            log.error("notifications of %d alarm change(s) not queued (%s); deciding"
                      " their events again once the store answers", len(changes), e)
            self._undecided = True
            # Taken back at once where the store answers: an acknowledgement must not
            # store an alarm whose notification is not queued.
            with contextlib.suppress(StoreUnavailable):
                self.alarms.reload()
            return False
        try:
            self.alarms.commit(processed_event_id)
        except StoreUnavailable:
            # the notifications are queued: the next commit stores these alarms
            log.exception("alarm store unavailable; alarms of events up to %s not stored",
                          processed_event_id)
        return True

    def _redecide(self) -> bool:
        """After a dropped decision: take the stored alarms and decide again every event
        stored after the last one decided (same notification ids: none twice). True
        once done; False while the store does not answer."""
        if not self._undecided:
            return True
        try:
            self.alarms.reload()
        except StoreUnavailable:
            return False
        self._undecided = False
        if self._events is not None:
            try:
                self.replay(self._events)
            except StoreUnavailable:
                self._undecided = True
                return False
        return not self._undecided

    def on_events(self, events: Sequence[StoredEvent]) -> None:
        """Decide a group commit's events, queue their notifications, store the alarms.
        A crash in between is repaired by replaying the events (same ids; known ones
        ignored), a store that failed in between by deciding them again."""
        if self._undecided:
            self._redecide()  # these events are stored: the replay decides them too
            return
        changes: list[AlarmChange] = []
        for event in events:
            try:
                changes.extend(self.alarms.on_event(event))
            except Exception:  # one undecidable event must not cost the others theirs
                log.exception("alarm decision failed for event %d", event.id)
        self._decided(changes, events[-1].id if events else None)

    def on_event(self, event: StoredEvent) -> None:
        self.on_events([event])

    def replay(self, events: EventStore, page: int = 1000) -> int:
        """Decide again the events stored after the last one whose alarms were stored
        (a controller that died in between). Before the agents are let in. The store
        is kept for deciding again after a dropped decision."""
        self._events = events
        replayed = 0
        after = self.alarms.processed_event_id
        while batch := events.events(after=after, limit=page):
            self.on_events(batch)
            if self._undecided:
                return replayed  # dropped: decided again from the start later
            after = batch[-1].id
            replayed += len(batch)
        if replayed:
            log.info("replayed %d event(s) stored after the alarms of event %d", replayed,
                     self.alarms.processed_event_id)
        return replayed

    async def run(self) -> None:
        self._decided(self.alarms.rebuilt(), None)
        next_ageing = 0.0
        while True:
            await asyncio.sleep(1.0)
            if not self._redecide():
                continue
            self._decided(self.alarms.tick(), None)
            now = self._clock.wall()
            if now >= next_ageing:
                next_ageing = now + self._settings.fm_ageing_interval_s
                s = self._settings
                retention = {str(k): v for k, v in s.fm_cleared_alarm_retention_s.items()}
                alarms, events = await asyncio.to_thread(
                    self._ager.age, now, retention, s.fm_event_retention_s)
                if alarms or events:
                    log.info("ageing removed %d cleared alarm(s) and %d event(s)",
                             alarms, events)
