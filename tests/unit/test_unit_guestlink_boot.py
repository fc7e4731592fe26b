"""Boot is not a hang: the guest link arms hang detection only once the guest says it
is up, and reports a VM that does not boot in time as such (never as hung)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.agent.guestlink import GuestEvent, GuestLink, GuestVnfc
from nfvha.util.clock import ManualClock


class Recorder:
    """The VM manager's side, recording what the link told it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def guest_event(self, vm: str, event: GuestEvent) -> None:
        self.calls.append("event")

    def guest_state(self, vm: str, vnfcs: dict[str, GuestVnfc]) -> None:
        self.calls.append("state")

    def guest_hung(self, vm: str, detected_mono_ns: int) -> None:
        self.calls.append("hung")

    def guest_responsive(self, vm: str) -> None:
        self.calls.append("responsive")

    def guest_booted(self, vm: str) -> None:
        self.calls.append("booted")

    def guest_boot_timeout(self, vm: str, detected_mono_ns: int) -> None:
        self.calls.append("boot-timeout")


class FakeGuest:
    """A guest channel that answers nothing unless told to: a guest busy booting."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.hello_state: dict[str, Any] | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.connected.set()
        while line := await reader.readline():
            msg = json.loads(line)
            self.received.append(msg)
            if msg.get("op") == "hello" and self.hello_state is not None:
                self.send(self.hello_state)

    def send(self, msg: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(json.dumps(msg).encode() + b"\n")

    def pings(self) -> int:
        return sum(1 for m in self.received if m.get("op") == "ping")


@pytest.fixture
async def fake_guest(tmp_path: Path) -> AsyncIterator[tuple[FakeGuest, Path]]:
    guest = FakeGuest()
    path = tmp_path / "guest.sock"
    server = await asyncio.start_unix_server(guest.serve, path=str(path))
    try:
        yield guest, path
    finally:
        server.close()


async def until(cond: Any, within_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not cond():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.005)


async def run_a_while(clock: ManualClock, seconds: float, steps: int = 20) -> None:
    """Let the link's loops run while the injected clock moves ``seconds``."""
    for _ in range(steps):
        clock.advance(seconds / steps)
        await asyncio.sleep(0.01)


@pytest.mark.req("HV-2")
async def test_a_booting_guest_that_answers_nothing_is_not_hung(
        fake_guest: tuple[FakeGuest, Path]) -> None:
    guest, path = fake_guest
    clock, rec = ManualClock(), Recorder()
    link = GuestLink("vm1", path, clock, 20, 3, rec, boot_timeout_s=60.0)  # type: ignore[arg-type]
    link.start()
    try:
        await asyncio.wait_for(guest.connected.wait(), 5.0)
        # Ten seconds of silence while booting: 500 heartbeat intervals.
        await run_a_while(clock, 10.0)
        assert "hung" not in rec.calls and "boot-timeout" not in rec.calls
        assert guest.pings() == 0, "no heartbeat is sent before the guest is up"
        guest.send({"op": "booted"})
        await until(lambda: link.booted)
        assert rec.calls.count("booted") == 1
        # Booted, and still silent: now that is a hang.
        await until(lambda: guest.pings() >= 3)
        await run_a_while(clock, 1.0)
        await until(lambda: "hung" in rec.calls)
        assert "boot-timeout" not in rec.calls
    finally:
        await link.stop()


@pytest.mark.req("HV-2")
async def test_a_guest_that_never_boots_is_reported_as_such_not_as_hung(
        fake_guest: tuple[FakeGuest, Path]) -> None:
    guest, path = fake_guest
    clock, rec = ManualClock(), Recorder()
    link = GuestLink("vm1", path, clock, 20, 3, rec, boot_timeout_s=5.0)  # type: ignore[arg-type]
    link.start()
    try:
        await asyncio.wait_for(guest.connected.wait(), 5.0)
        await run_a_while(clock, 4.0)
        assert rec.calls == []
        await run_a_while(clock, 2.0)
        await until(lambda: "boot-timeout" in rec.calls)
        assert rec.calls.count("boot-timeout") == 1 and "hung" not in rec.calls
        assert link.boot_timed_out and not link.booted
        # It comes up after all: from then on it is watched as any other.
        guest.send({"op": "booted"})
        await until(lambda: link.booted)
        assert "booted" in rec.calls
    finally:
        await link.stop()


async def test_a_guest_already_up_says_so_in_its_state(
        fake_guest: tuple[FakeGuest, Path]) -> None:
    """An agent that reconnects (restarted) learns it from the state: armed at once."""
    guest, path = fake_guest
    guest.hello_state = {"op": "state", "vm": "vm1", "vnfcs": {}, "booted": True}
    clock, rec = ManualClock(), Recorder()
    link = GuestLink("vm1", path, clock, 20, 3, rec)  # type: ignore[arg-type]
    link.start()
    try:
        await until(lambda: link.booted)
        assert rec.calls[:2] == ["state", "booted"]
        await until(lambda: guest.pings() >= 1)
    finally:
        await link.stop()


def test_boot_time_counts_from_the_link_start() -> None:
    clock = ManualClock()
    link = GuestLink("vm1", Path("/nonexistent"), clock, 100, 3, Recorder(),  # type: ignore[arg-type]
                     boot_timeout_s=30.0)
    t0 = clock.mono_ns()
    assert not link.boot_overdue(t0 + 29_999_000_000)
    assert link.boot_overdue(t0 + 30_000_000_000)
    link.booted = True
    assert not link.boot_overdue(t0 + 100_000_000_000)
