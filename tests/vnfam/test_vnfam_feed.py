"""The VNF-level AM's event feed over the VIM's long poll: every event handed on once,
in order, through refused connections, 503s and answers lost on the way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from vnfam_testutil import TOKEN, FakeVim, until

from nfvha.amf.own.feed import EventFeed
from nfvha.amf.own.vim import VimClient, VimError
from nfvha.model.events import Kind, StoredEvent


class Sink:
    def __init__(self) -> None:
        self.got: list[StoredEvent] = []
        self.batches = 0

    def __call__(self, events: Sequence[StoredEvent]) -> None:
        self.batches += 1
        self.got.extend(events)

    def ids(self) -> list[int]:
        return [e.id for e in self.got]


@pytest.fixture
async def vim() -> AsyncIterator[tuple[FakeVim, VimClient]]:
    fake = FakeVim()
    client = VimClient("http://vim.test", TOKEN, transport=fake.client_transport())
    try:
        yield fake, client
    finally:
        await client.close()


async def test_each_event_is_handed_on_once_in_order_through_every_kind_of_failure(
        vim: tuple[FakeVim, VimClient]) -> None:
    fake, client = vim
    for i in range(3):
        await fake.publish(Kind.VNFC_CRASHED, f"vnfc/c{i}")
    sink = Sink()
    feed = EventFeed(client, sink, after=1, wait_s=0.5, retry_min_s=0.001, retry_max_s=0.01)
    # The VIM away, then busy, then an answer (events 2..3) lost after it was made.
    fake.faults["/v1/events"] = ["refused", 503, "lost"]
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: sink.ids() == [2, 3], "events 2..3 never arrived")
        assert feed.failures == 3
        await fake.publish(Kind.VM_CRASHED, "vm/vm1")
        await until(lambda: sink.ids() == [2, 3, 4], "event 4 never arrived")
    finally:
        task.cancel()
    assert feed.after == 4
    # The lost answer was asked again after the same cursor, not after its contents.
    polls = [int(c.params["after"]) for c in fake.calls if c.path == "/v1/events"]
    assert polls[:2] == [1, 1]


async def test_a_long_poll_returns_an_event_as_soon_as_it_is_stored(
        vim: tuple[FakeVim, VimClient]) -> None:
    fake, client = vim
    sink = Sink()
    feed = EventFeed(client, sink, after=0, wait_s=30.0)
    poll = asyncio.create_task(feed.poll_once())
    await until(lambda: any(c.path == "/v1/events" for c in fake.calls), "no poll")
    assert not poll.done()  # waiting on the VIM, not returning empty
    await fake.publish(Kind.HOST_DOWN, "host/h1")
    got = await asyncio.wait_for(poll, 5.0)  # far below the 30 s wait
    assert [e.entity for e in got] == ["host/h1"] and sink.ids() == [1]


async def test_events_at_or_below_the_cursor_are_never_handed_on_again(
        vim: tuple[FakeVim, VimClient]) -> None:
    fake, client = vim
    for i in range(4):
        await fake.publish(Kind.VNFC_STARTED, f"vnfc/c{i}")
    sink = Sink()
    feed = EventFeed(client, sink, after=2, wait_s=0)
    assert [e.id for e in await feed.poll_once()] == [3, 4]
    await fake.publish(Kind.VNFC_STARTED, "vnfc/c4")
    fake.faults["/v1/events"] = ["replay"]  # a VIM answering with its whole log
    assert [e.id for e in await feed.poll_once()] == [5]
    assert sink.ids() == [3, 4, 5]


async def test_a_failing_sink_does_not_get_the_same_events_again(
        vim: tuple[FakeVim, VimClient]) -> None:
    fake, client = vim
    await fake.publish(Kind.VM_HUNG, "vm/vm1")
    calls: list[int] = []

    def sink(events: Sequence[StoredEvent]) -> None:
        calls.extend(e.id for e in events)
        raise RuntimeError("a bug in the handler")

    feed = EventFeed(client, sink, after=0, wait_s=0)
    await feed.poll_once()
    await feed.poll_once()
    assert calls == [1] and feed.after == 1


async def test_without_the_operator_token_the_vim_answers_401(
        vim: tuple[FakeVim, VimClient]) -> None:
    fake, _ = vim
    bad = VimClient("http://vim.test", "wrong", transport=fake.client_transport())
    try:
        with pytest.raises(VimError) as err:
            await bad.events(0)
        assert err.value.status == 401 and err.value.sent
    finally:
        await bad.close()
