"""The event bus's group commit and the agent stream's pipelined, in-order acks."""

from __future__ import annotations

import asyncio
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
