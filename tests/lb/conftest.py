"""Fixtures for the LB tests: every process started is killed by its pid after the test,
even when it fails; three counter members on loopback; a fake AM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from lb_testutil import CounterProc, FakeAM, Members, Start


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[CounterProc] = []

    async def run(argv: list[str]) -> CounterProc:
        proc = await CounterProc.start(argv)
        started.append(proc)
        return proc

    try:
        yield run
    finally:
        for proc in started:
            await proc.kill()


@pytest.fixture
async def members(start: Start) -> Members:
    m = Members(start)
    await asyncio.gather(*(m.run(name) for name in ("w1", "w2", "w3")))
    return m


@pytest.fixture
async def am() -> AsyncIterator[FakeAM]:
    fake = await FakeAM(ping_interval_ms=100).start()  # pings keep the active's lease
    try:
        yield fake
    finally:
        await fake.stop()
