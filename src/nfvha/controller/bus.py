"""Events in the controller: stored first, then published to waiting readers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from nfvha.model.events import Event, StoredEvent
from nfvha.store.base import EventStore
from nfvha.util.clock import Clock

Listener = Callable[[StoredEvent], None]
log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
        self._cond = asyncio.Condition()
        self._listeners: list[Listener] = []
        self.last_id = store.max_id()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, events: Sequence[Event], received_mono_ns: int | None = None
                      ) -> list[StoredEvent]:
        """Commit, then tell listeners and wake long-pollers. Raises StoreUnavailable."""
        if not events:
            return []
        stored = self.store.append(events, self._clock.wall(),
                                   received_mono_ns or self._clock.mono_ns())
        for ev in stored:
            self.last_id = max(self.last_id, ev.id)
            for listener in self._listeners:
                try:
                    listener(ev)
                except Exception:  # stored is stored: a consumer's bug must not undo it
                    log.exception("event listener failed on event %d", ev.id)
        if stored:
            async with self._cond:
                self._cond.notify_all()
        return stored

    async def wait_after(self, after: int, timeout_s: float) -> None:
        """Return when an event with id > ``after`` exists, or after the timeout."""
        if self.last_id > after:
            return
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: self.last_id > after),
                                       timeout_s)
            except TimeoutError:
                return
