"""Events in the controller: stored first, then published to waiting readers.

Group commit: every arrival submitted while the event loop is busy goes into the
next flush, which stores them all in one transaction and hands the listeners the
whole batch. A flush is scheduled with ``call_soon`` on the first submission, so it
runs after every callback already ready in this loop iteration - the agent streams
that have frames waiting - and a lone event is never held back by a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nfvha.model.events import Event, StoredEvent
from nfvha.store.base import EventStore, StoreUnavailable
from nfvha.util.clock import Clock

# Called with every flush's newly stored events, in id order.
BatchListener = Callable[[Sequence[StoredEvent]], None]
log = logging.getLogger(__name__)


@dataclass
class _Arrival:
    events: list[Event]
    received_time: float
    received_mono_ns: int
    done: asyncio.Future[list[StoredEvent]]


class EventBus:
    def __init__(self, store: EventStore, clock: Clock, max_batch_events: int = 256) -> None:
        """``max_batch_events`` bounds one group commit, and so how long it keeps
        the event loop."""
        self.store = store
        self._max_batch_events = max_batch_events
        self._clock = clock
        self._listeners: list[BatchListener] = []
        self._pending: list[_Arrival] = []
        self._flush_scheduled = False
        self._stored = asyncio.Event()
        self.last_id = store.max_id()
        self.flushes = 0  # commits, for the benchmark's batch-size figure
        self._closed = False

    def subscribe(self, listener: BatchListener) -> None:
        self._listeners.append(listener)

    def submit(self, events: Sequence[Event], received_mono_ns: int | None = None
               ) -> asyncio.Future[list[StoredEvent]]:
        """Queue events for the next group commit. The future resolves, after the
        commit and the listeners, to the newly stored ones - or fails with
        ``StoreUnavailable``. Futures resolve in submission order."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[StoredEvent]] = loop.create_future()
        if self._closed:
            done.set_exception(StoreUnavailable("the event bus is closed"))
            return done
        if not events:
            done.set_result([])
            return done
        self._pending.append(_Arrival(list(events), self._clock.wall(),
                                      received_mono_ns or self._clock.mono_ns(), done))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return done

    async def publish(self, events: Sequence[Event], received_mono_ns: int | None = None
                      ) -> list[StoredEvent]:
        """Commit, then tell listeners and wake long-pollers. Raises StoreUnavailable."""
        return await self.submit(events, received_mono_ns)

    def close(self) -> None:
        """Store what is still queued, then refuse more: call before closing the
        stores and consumers the listeners write to."""
        while self._pending:
            self._flush()
        self._closed = True

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return  # flushed by close()
        batch = self._take_batch()
        if self._pending:
            # The rest in a later flush: in between, the loop serves heartbeats, the API
            # and deliveries instead of disappearing into one long transaction.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        try:
            groups = self.store.append_groups(
                [(a.events, a.received_time, a.received_mono_ns) for a in batch])
        except StoreUnavailable as e:
            for a in batch:
                if not a.done.done():
                    a.done.set_exception(StoreUnavailable(str(e)))
            return
        self.flushes += 1
        stored = [ev for group in groups for ev in group]
        if stored:
            self.last_id = max(self.last_id, stored[-1].id)
            try:
                self._tell_listeners(stored)
            except BaseException as e:
                # Not a consumer's bug but the process going down (or a test standing
                # in for it): the submitters must not wait forever for their answer.
                for a in batch:
                    if not a.done.done():
                        a.done.set_exception(e)
                if isinstance(e, (SystemExit, KeyboardInterrupt)):
                    raise
                return
            self._stored.set()
            self._stored = asyncio.Event()
        for a, group in zip(batch, groups, strict=True):
            if not a.done.done():
                a.done.set_result(group)

    def _take_batch(self) -> list[_Arrival]:
        n = events = 0
        for a in self._pending:
            if n and events + len(a.events) > self._max_batch_events:
                break
            n += 1
            events += len(a.events)
        batch, self._pending = self._pending[:n], self._pending[n:]
        return batch

    def _tell_listeners(self, stored: list[StoredEvent]) -> None:
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:  # stored is stored: a consumer's bug must not undo it
                log.exception("event listener failed on events %d..%d",
                              stored[0].id, stored[-1].id)

    async def wait_after(self, after: int, timeout_s: float) -> None:
        """Return when an event with id > ``after`` exists, or after the timeout."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.last_id <= after:
            remaining = end - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._stored.wait(), remaining)
            except TimeoutError:
                return
