"""The event bus's group commit and the agent stream's pipelined, in-order acks."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.store.base import Arrival, StoreUnavailable
from nfvha.store.sqlite import SqliteEventStore
from nfvha.testbed.deploy import free_tcp_port
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import CONTROLLER_FRAME, Ack, EventFrame, Hello, encode


def event(host: str, seq: int) -> Event:
    return Event(host=host, seq=seq, kind=Kind.VNFC_CRASHED, entity="vnfc/c1",
                 severity=Severity.MAJOR, event_type=EventType.PROCESSING_ERROR_ALARM,
                 probable_cause="bench", event_time=1.8e9, detected_mono_ns=1)


class CountingStore(SqliteEventStore):
    """The real store, counting transactions; it can be told to fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions: list[int] = []  # arrivals per transaction
        self.fail_after: int | None = None  # fail every transaction once this many ran

    def append_groups(self, groups: Sequence[Arrival]) -> list[list[StoredEvent]]:
        if self.fail_after is not None and len(self.transactions) >= self.fail_after:
            raise StoreUnavailable("disk on fire")
        self.transactions.append(len(groups))
        return super().append_groups(groups)


async def test_concurrent_arrivals_share_one_commit_and_resolve_in_order(
        tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock())
    seen: list[list[int]] = []
    bus.subscribe(lambda batch: seen.append([e.id for e in batch]))
    results = await asyncio.gather(*(bus.publish([event("h1", i)]) for i in range(1, 6)))
    assert store.transactions == [5]  # five arrivals, one transaction
    assert [[e.seq for e in r] for r in results] == [[1], [2], [3], [4], [5]]
    assert seen == [[1, 2, 3, 4, 5]]
    assert bus.last_id == 5 and store.last_seq("h1") == 5


async def test_a_commit_is_bounded_and_the_rest_follows(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock(), max_batch_events=3)
    await asyncio.gather(*(bus.publish([event("h1", i)]) for i in range(1, 9)))
    assert store.transactions == [3, 3, 2]
    assert [e.seq for e in store.events()] == list(range(1, 9))


async def test_store_failure_fails_every_arrival_of_that_commit(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    store.fail_after = 0
    bus = EventBus(store, ManualClock())
    results = await asyncio.gather(*(bus.publish([event("h1", i)]) for i in (1, 2)),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert store.events() == []


async def test_close_stores_what_is_queued_then_refuses(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock())
    queued = bus.submit([event("h1", 1)])
    bus.close()
    assert [e.seq for e in await queued] == [1]
    with pytest.raises(StoreUnavailable):
        await bus.publish([event("h1", 2)])


async def _stream(port: int, frames: list[bytes]) -> tuple[list[int], bool]:
    """Send hello and frames at once; return the acks read until the stream ends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Hello(host="h1", agent_pid=1, incarnation="i", started_time=1.0)))
    await reader.readline()
    writer.write(b"".join(frames))
    acks: list[int] = []
    while line := await reader.readline():
        frame = CONTROLLER_FRAME.validate_json(line)
        if isinstance(frame, Ack):
            acks.append(frame.seq)
            if frame.seq == len(frames):
                break
    writer.close()
    return acks, not line


async def test_agent_stream_acks_pipelined_events_in_order(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock())
    server = AgentServer(("127.0.0.1", free_tcp_port()), bus,
                         HostStates(["h1"], ManualClock()), ManualClock())
    await server.start()
    try:
        frames = [encode(EventFrame(event=event("h1", i))) for i in range(1, 201)]
        acks, _ = await asyncio.wait_for(_stream(server._listen[1], frames), 30)
    finally:
        await server.close()
    assert acks == sorted(acks) and acks[-1] == 200
    assert len(store.transactions) < 200  # grouped, not one commit per event


async def test_agent_stream_is_closed_not_acked_past_an_unstored_event(
        tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "e.db")
    store.fail_after = 0
    bus = EventBus(store, ManualClock())
    server = AgentServer(("127.0.0.1", free_tcp_port()), bus,
                         HostStates(["h1"], ManualClock()), ManualClock())
    await server.start()
    try:
        frames = [encode(EventFrame(event=event("h1", i))) for i in range(1, 4)]
        acks, closed = await asyncio.wait_for(_stream(server._listen[1], frames), 30)
    finally:
        await server.close()
    assert acks == [] and closed  # nothing acknowledged; the agent re-sends after reconnect


class GatedStore(SqliteEventStore):
    """The real store, but each commit first waits until the test opens the gate (or
    sleeps ``delay_s``); it notes which thread committed."""

    def __init__(self, path: Path, delay_s: float = 0.0) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.delay_s = delay_s
        if delay_s:
            self.gate.set()
        self.entered = threading.Event()
        self.threads: set[int] = set()
        self.batch_sizes: list[int] = []
        self.fail_with: Exception | None = None

    def append_groups(self, groups: Sequence[Arrival]) -> list[list[StoredEvent]]:
        self.entered.set()
        self.threads.add(threading.get_ident())
        if not self.gate.wait(30):
            raise StoreUnavailable("gate never opened: the event loop was held")
        time.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        self.batch_sizes.append(sum(len(events) for events, _, _ in groups))
        return super().append_groups(groups)


async def test_a_commit_in_progress_does_not_hold_the_event_loop(tmp_path: Path) -> None:
    """The store does not answer until the loop has run timers meanwhile: with the
    commit on the loop, it never would (the store gives up after 30 s)."""
    store = GatedStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock())
    published = asyncio.create_task(bus.publish([event("h1", 1)]))
    ticks_during_commit = 0
    assert await asyncio.to_thread(store.entered.wait, 30)
    while ticks_during_commit < 5:  # a timer on the loop, while the commit waits
        await asyncio.sleep(0.01)
        ticks_during_commit += 1
    assert not published.done()  # acknowledged only after the commit
    store.gate.set()
    [stored] = await asyncio.wait_for(published, 30)
    assert stored.seq == 1 and bus.last_id == stored.id
    assert threading.get_ident() not in store.threads  # committed in the writer thread
    bus.close()


async def test_a_slow_store_lets_the_loop_keep_its_timers(tmp_path: Path) -> None:
    """A store that takes 200 ms per commit: a 10 ms timer keeps firing meanwhile."""
    store = GatedStore(tmp_path / "e.db", delay_s=0.2)
    bus = EventBus(store, ManualClock())
    fired = 0

    async def timer() -> None:
        nonlocal fired
        while True:
            await asyncio.sleep(0.01)
            fired += 1

    ticking = asyncio.create_task(timer())
    try:
        await bus.publish([event("h1", 1)])
    finally:
        ticking.cancel()
    # 200 ms of commit: ~20 firings on an idle machine; none if the loop were held.
    assert fired >= 3, fired
    bus.close()


async def test_concurrent_submissions_complete_in_order_after_commit_and_listeners(
        tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "e.db", delay_s=0.002)
    bus = EventBus(store, ManualClock(), max_batch_events=16)
    heard: list[int] = []
    bus.subscribe(lambda batch: heard.extend(e.id for e in batch))
    submitted: list[tuple[str, int]] = []
    completed: list[tuple[str, int]] = []
    heard_first: list[bool] = []

    def done(key: tuple[str, int], fut: asyncio.Future[list[StoredEvent]]) -> None:
        completed.append(key)
        [stored] = fut.result()
        assert (stored.host, stored.seq) == key
        heard_first.append(stored.id in heard)  # the listeners had it before the ack

    futures: list[asyncio.Future[list[StoredEvent]]] = []

    async def agent(host: str) -> None:
        for seq in range(1, 31):
            submitted.append((host, seq))
            futures.append(bus.submit([event(host, seq)]))
            futures[-1].add_done_callback(functools.partial(done, (host, seq)))
            if seq % 3 == 0:
                await asyncio.sleep(0.001)  # arrivals spread over several commits

    await asyncio.gather(*(agent(f"h{i}") for i in range(10)))
    await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert completed == submitted  # submission order, across hosts and commits
    assert all(heard_first)
    assert heard == sorted(heard) == list(range(1, len(submitted) + 1))  # in id order
    assert len(store.batch_sizes) > 1 and max(store.batch_sizes) <= 16
    assert [(e.host, e.seq) for e in store.events(limit=1000)] == submitted
    bus.close()


async def test_close_waits_for_the_commit_under_way_and_stores_the_queue(
        tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock(), max_batch_events=1)
    heard: list[int] = []
    bus.subscribe(lambda batch: heard.extend(e.seq for e in batch))
    first = bus.submit([event("h1", 1)])
    # The writer has the first, waiting on the store.
    assert await asyncio.to_thread(store.entered.wait, 30)
    rest = [bus.submit([event("h1", i)]) for i in (2, 3)]  # not handed over yet
    threading.Timer(0.1, store.gate.set).start()
    bus.close()  # blocks until all three are stored and told
    assert heard == [1, 2, 3] and first.done() and all(f.done() for f in rest)
    assert [e.seq for e in await first] == [1]
    with pytest.raises(StoreUnavailable):
        await bus.publish([event("h1", 4)])


async def test_a_store_bug_fails_the_commit_instead_of_hanging_it(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "e.db", delay_s=0.001)
    store.fail_with = RuntimeError("a bug in the store")
    bus = EventBus(store, ManualClock())
    with pytest.raises(StoreUnavailable, match="a bug in the store"):
        await asyncio.wait_for(bus.publish([event("h1", 1)]), 30)
    store.fail_with = None
    assert [e.seq for e in await bus.publish([event("h1", 2)])] == [2]  # then goes on
    bus.close()


async def test_a_backlog_past_the_bound_asks_producers_to_wait(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "e.db")
    bus = EventBus(store, ManualClock(), max_batch_events=1)  # bound: 64 events
    futures = [bus.submit([event("h1", i)]) for i in range(1, 70)]
    assert not bus.has_room()
    room = asyncio.create_task(bus.room())
    await asyncio.sleep(0.05)
    assert not room.done()
    store.gate.set()
    await asyncio.wait_for(room, 30)
    await asyncio.gather(*futures)
    assert bus.has_room()
    bus.close()
