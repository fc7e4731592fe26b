"""Fixtures for the SDK tests: a fake AM on loopback and counter processes, all stopped
(by the pid we started) after each test, even when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from amf_sdk_testutil import CounterProc, FakeAM, StartCounter


@pytest.fixture
async def am() -> AsyncIterator[FakeAM]:
    # Pings keep the actives' leases alive however long a test takes.
    fake = await FakeAM(ping_interval_ms=200).start()
    try:
        yield fake
    finally:
        await fake.stop()




@pytest.fixture
async def start_counter() -> AsyncIterator[StartCounter]:
    started: list[CounterProc] = []

    async def start(argv: list[str]) -> CounterProc:
        proc = await CounterProc.start(argv)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            await proc.kill()
