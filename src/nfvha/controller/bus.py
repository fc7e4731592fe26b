"""Events in the controller: stored first, then published to waiting readers.

Group commit: every arrival submitted while a commit is under way, or in the same
loop iteration, goes into the next commit, which stores them all in one transaction
and hands the listeners the whole batch. A hand-over is scheduled with ``call_soon``
on the first submission, so it runs after every callback already ready in this loop
iteration - the agent streams that have frames waiting - and a lone event is never
held back by a timer.

The commits run in one writer thread of the bus: a transaction (SQLite's fsync, or
PostgreSQL's network round trip in a cluster) never holds the event loop. Everything
else stays on the loop: the listeners are called there, with each commit's stored
events in id order, and each submission's future resolves there, after its commit and
the listeners, in submission order (one writer, commits in queue order, their results
taken back in the same order).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nfvha.model.events import Event, StoredEvent
from nfvha.store.base import EventStore, StoreUnavailable
from nfvha.util.clock import Clock

# Called with every flush's newly stored events, in id order.
BatchListener = Callable[[Sequence[StoredEvent]], None]
log = logging.getLogger(__name__)
# Events queued for commit beyond which the agent streams stop reading until the
# store catches up (``has_room``/``room``): the kernel's socket buffers hold the rest.
MAX_QUEUED_BATCHES = 64


@dataclass
class _Arrival:
    events: list[Event]
    received_time: float
    received_mono_ns: int
    done: asyncio.Future[list[StoredEvent]]


# What a commit came to: the stored events per arrival, or why not.
_Outcome = list[list[StoredEvent]] | BaseException


class EventBus:
    def __init__(self, store: EventStore, clock: Clock, max_batch_events: int = 256) -> None:
        """``max_batch_events`` bounds one group commit, and so how long its listeners
        keep the event loop."""
        self.store = store
        self._max_batch_events = max_batch_events
        self._max_queued_events = max_batch_events * MAX_QUEUED_BATCHES
        self._clock = clock
        self._listeners: list[BatchListener] = []
        self._pending: list[_Arrival] = []  # on the loop, not yet handed to the writer
        self._flush_scheduled = False
        self._stored = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.last_id = store.max_id()
        self.flushes = 0  # commits, for the benchmark's batch-size figure
        self._closed = False
        self._queued_events = 0  # submitted, not yet completed (loop side)
        # Shared with the writer thread, under _lock: what it is to commit, in order,
        # and what it committed, in the same order, for the loop to complete.
        self._lock = threading.Condition()
        self._queue: collections.deque[_Arrival] = collections.deque()
        self._outcomes: collections.deque[tuple[list[_Arrival], _Outcome]] = \
            collections.deque()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: threading.Thread | None = None

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
        self._start_writer(loop)
        self._pending.append(_Arrival(list(events), self._clock.wall(),
                                      received_mono_ns or self._clock.mono_ns(), done))
        self._queued_events += len(events)
        if self._queued_events >= self._max_queued_events:
            self._room.clear()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._hand_over)
        return done

    async def publish(self, events: Sequence[Event], received_mono_ns: int | None = None
                      ) -> list[StoredEvent]:
        """Commit, then tell listeners and wake long-pollers. Raises StoreUnavailable."""
        return await self.submit(events, received_mono_ns)

    def has_room(self) -> bool:
        """False while more events wait for their commit than the bus holds for a
        slow store; a producer that can wait should (``room``)."""
        return self._room.is_set()

    async def room(self) -> None:
        await self._room.wait()

    def close(self) -> None:
        """Store what is still queued (waiting for the writer), then refuse more: call
        before closing the stores and consumers the listeners write to. The listeners
        and futures of those commits are done before this returns."""
        self._closed = True
        self._hand_over()
        writer = self._writer
        if writer is not None:
            with self._lock:
                self._stopping = True
                self._lock.notify()
            writer.join()
        self._complete_outcomes()

    # -- the loop's side -------------------------------------------------------------
    def _start_writer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._writer is None:
            self._loop = loop
            self._writer = threading.Thread(target=self._write, name="event-bus-writer",
                                            daemon=True)
            self._writer.start()

    def _hand_over(self) -> None:
        """Everything submitted so far goes to the writer at once: it commits them in
        as few bounded transactions as it can."""
        self._flush_scheduled = False
        if not self._pending:
            return
        with self._lock:
            self._queue.extend(self._pending)
            self._lock.notify()
        self._pending = []

    def _complete_outcomes(self) -> None:
        """Complete every commit the writer finished, in its order (on the loop)."""
        while True:
            with self._lock:
                if not self._outcomes:
                    return
                batch, outcome = self._outcomes.popleft()
            try:
                self._complete(batch, outcome)
            except BaseException:
                # The process is going down (SystemExit from a listener): the commits
                # after this one still complete, on the next loop iteration.
                if self._loop is not None and self._outcomes:
                    self._loop.call_soon(self._complete_outcomes)
                raise

    def _complete(self, batch: list[_Arrival], outcome: _Outcome) -> None:
        self._queued_events -= sum(len(a.events) for a in batch)
        if self._queued_events < self._max_queued_events:
            self._room.set()
        if isinstance(outcome, BaseException):
            for a in batch:
                if not a.done.done():
                    a.done.set_exception(StoreUnavailable(str(outcome)))
            return
        self.flushes += 1
        stored = [ev for group in outcome for ev in group]
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
        for a, group in zip(batch, outcome, strict=True):
            if not a.done.done():
                a.done.set_result(group)

    def _tell_listeners(self, stored: list[StoredEvent]) -> None:
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:  # stored is stored: a consumer's bug must not undo it
                log.exception("event listener failed on events %d..%d",
                              stored[0].id, stored[-1].id)

    # -- the writer thread ---------------------------------------------------------
    def _write(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._lock.wait()
                if not self._queue:
                    return  # stopping, and everything handed over is committed
                batch = self._take_batch()
            outcome: _Outcome
            try:
                outcome = self.store.append_groups(
                    [(a.events, a.received_time, a.received_mono_ns) for a in batch])
            except StoreUnavailable as e:
                outcome = e
            except Exception as e:  # a store's bug must not leave submitters waiting
                log.exception("event store failed on a commit of %d arrival(s)", len(batch))
                outcome = e
            with self._lock:
                self._outcomes.append((batch, outcome))
                stopping = self._stopping
            if not stopping:  # close() completes them itself, after joining
                self._wake_loop()

    def _wake_loop(self) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._complete_outcomes)
        except RuntimeError:  # the loop is closed: nobody waits for these any more
            log.warning("event loop closed; %d commit(s) not completed on it",
                        len(self._outcomes))

    def _take_batch(self) -> list[_Arrival]:
        """The oldest arrivals, up to ``max_batch_events`` (at least one). Under _lock."""
        batch: list[_Arrival] = []
        events = 0
        while self._queue:
            a = self._queue[0]
            if batch and events + len(a.events) > self._max_batch_events:
                break
            batch.append(self._queue.popleft())
            events += len(a.events)
        return batch

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
