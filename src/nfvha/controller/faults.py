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
            except Exception:  # one broken consumer must not stop alarm handling
                log.exception("alarm change consumer failed")

    def on_events(self, events: Sequence[StoredEvent]) -> None:
        """Decide a group commit's events, queue their notifications durably (one
        outbox commit), then store the alarms (one commit). A crash in between is
        repaired by replaying the events (same ids; known ones ignored)."""
        changes: list[AlarmChange] = []
        for event in events:
            try:
                changes.extend(self.alarms.on_event(event))
            except Exception:  # one undecidable event must not cost the others theirs
                log.exception("alarm decision failed for event %d", event.id)
        with self._batched():
            self._dispatch(changes)
        try:
            self.alarms.commit(events[-1].id if events else None)
        except StoreUnavailable:
            log.exception("alarm store unavailable; alarms of events up to %d not stored",
                          events[-1].id)

    def on_event(self, event: StoredEvent) -> None:
        self.on_events([event])

    def replay(self, events: EventStore, page: int = 1000) -> int:
        """Decide again the events stored after the last one whose alarms were stored
        (a controller that died in between). Before the agents are let in."""
        replayed = 0
        after = self.alarms.processed_event_id
        while batch := events.events(after=after, limit=page):
            self.on_events(batch)
            after = batch[-1].id
            replayed += len(batch)
        if replayed:
            log.info("replayed %d event(s) stored after the alarms of event %d", replayed,
                     self.alarms.processed_event_id)
        return replayed

    async def run(self) -> None:
        self._dispatch(self.alarms.rebuilt())
        next_ageing = 0.0
        while True:
            await asyncio.sleep(1.0)
            self._dispatch(self.alarms.tick())
            self.alarms.commit()
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
