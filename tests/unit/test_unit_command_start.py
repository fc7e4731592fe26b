"""A command's time limit counts from when its agent starts it (issue 11): the agent
says ``started`` when it begins; until then the controller waits a bounded queueing
time, not the command's own limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from nfvha.controller.agents import AgentServer, AgentSession
from nfvha.controller.hoststates import HostStates
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import (
    CONTROLLER_FRAME,
    Command,
    Hello,
    Reply,
    Started,
    encode,
)


@dataclass
class FakeWriter:
    """The controller's end of an agent stream: what it wrote."""

    frames: list[bytes] = field(default_factory=list)
    written: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        self.frames.append(data)
        self.written.set()

    def close(self) -> None: ...


@dataclass
class Stream:
    server: AgentServer
    writer: FakeWriter
    reader: asyncio.StreamReader

    async def next_command(self) -> Command:
        while not self.writer.frames:
            self.writer.written.clear()
            await asyncio.wait_for(self.writer.written.wait(), 5.0)
        frame = CONTROLLER_FRAME.validate_json(self.writer.frames.pop(0))
        assert isinstance(frame, Command)
        return frame

    def agent_sends(self, frame: Started | Reply) -> None:
        self.reader.feed_data(encode(frame))


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    clock = ManualClock()
    server = AgentServer(("127.0.0.1", 0), None, HostStates(["h1"], clock),  # type: ignore[arg-type]
                         clock, command_queue_timeout_s=5.0)
    writer, reader = FakeWriter(), asyncio.StreamReader()
    session = AgentSession(Hello(host="h1", agent_pid=1, incarnation="i", started_time=0.0),
                           writer, 0.0)  # type: ignore[arg-type]
    server.sessions["h1"] = session
    reading = asyncio.create_task(server._read_stream("h1", session, reader, writer))  # type: ignore[arg-type]
    try:
        yield Stream(server, writer, reader)
    finally:
        reading.cancel()


async def test_a_command_queued_at_its_agent_is_not_late(stream: Stream) -> None:
    call = asyncio.create_task(stream.server.command("h1", "vm.start", "vm1", timeout_s=0.3))
    cmd = await stream.next_command()
    assert cmd.timeout_s == 0.3  # the agent answers within it
    # The agent is busy: it starts the command only after more than its time limit.
    await asyncio.sleep(0.6)
    assert not call.done()
    stream.agent_sends(Started(id=cmd.id))
    await asyncio.sleep(0.1)
    stream.agent_sends(Reply(id=cmd.id, ok=True, result={"vm": "vm1"}))
    reply = await asyncio.wait_for(call, 5.0)
    assert reply.ok and reply.result == {"vm": "vm1"}
    assert not stream.server.sessions["h1"].replies
    assert not stream.server.sessions["h1"].started


async def test_its_own_limit_counts_from_the_start(stream: Stream) -> None:
    call = asyncio.create_task(stream.server.command("h1", "vm.start", "vm1", timeout_s=0.2))
    cmd = await stream.next_command()
    stream.agent_sends(Started(id=cmd.id))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, 5.0)


async def test_the_queueing_time_is_bounded(stream: Stream) -> None:
    call = asyncio.create_task(stream.server.command("h1", "vm.stop", "vm1", timeout_s=10.0,
                                                     queue_timeout_s=0.2))
    await stream.next_command()
    with pytest.raises(TimeoutError, match=r"did not start vm\.stop vm1 within 0\.2 s"):
        await asyncio.wait_for(call, 5.0)


async def test_a_reply_without_a_start_is_taken(stream: Stream) -> None:
    """An agent that does not say ``started`` (an older one) still gets its reply read."""
    call = asyncio.create_task(stream.server.command("h1", "vnfc.stop", "c1"))
    cmd = await stream.next_command()
    stream.agent_sends(Reply(id=cmd.id, ok=False, error="no VNFC 'c1'"))
    reply = await asyncio.wait_for(call, 5.0)
    assert not reply.ok and reply.error == "no VNFC 'c1'"
