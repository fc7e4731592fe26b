"""Fixtures for the notification tests: a temp dir ``/tmp/nfvha-test-*`` for the
outbox, loopback receivers and notifiers that are closed (and the dir removed)
after each test, even when it fails."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from notify_testutil import NotifierFactory, Receiver, Respond, accept

from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.util.clock import SYSTEM_CLOCK


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nfvha-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def outbox_path(workdir: Path) -> Path:
    return workdir / "fm" / "outbox.db"


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    made: list[Receiver] = []

    async def make(respond: Respond = accept) -> Receiver:
        r = Receiver(respond)
        made.append(r)
        return await r.start()

    try:
        yield make
    finally:
        for r in made:
            await r.close()


@pytest.fixture
async def notifiers(outbox_path: Path) -> AsyncIterator[NotifierFactory]:
    """``await notifiers(**kwargs)``: a started Notifier on the test's outbox file.
    Each call opens its own Outbox on the same file (as a restarted controller)."""
    made: list[tuple[Notifier, Outbox]] = []

    async def make(**kwargs: Any) -> Notifier:
        outbox = Outbox(outbox_path)
        n = Notifier(outbox, SYSTEM_CLOCK, **kwargs)
        made.append((n, outbox))
        await n.start()
        return n

    try:
        yield make
    finally:
        for n, outbox in made:
            await n.close()
            outbox.close()
