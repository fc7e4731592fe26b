"""Helpers for the load balancer tests: counter members and LBs as processes, STATS,
and a paced UDP load with per-request accounting.

The fake AM and the process wrapper are the SDK tests' (tests/amf_sdk), reused by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "amf_sdk"))

from amf_sdk_testutil import (
    LOOPBACK,
    AmConn,
    CounterProc,
    FakeAM,
    UdpClient,
    counter_argv,
    free_port,
    in_netns,
    ip,
    udp_ask,
)

__all__ = [
    "LOOPBACK",
    "AmConn",
    "CounterProc",
    "FakeAM",
    "Load",
    "Members",
    "Start",
    "Stats",
    "UdpClient",
    "counter_argv",
    "free_port",
    "in_netns",
    "ip",
    "lb_argv",
    "member_argv",
    "run_load",
    "udp_ask",
]


Start = Callable[[list[str]], Awaitable[CounterProc]]
"""Start a process (argv) that the test's fixture kills afterwards."""


def member_argv(name: str, port: int) -> list[str]:
    return [sys.executable, "-m", "nfvha.samples.counter", "--name", name, "--port", str(port),
            "--bind", LOOPBACK]


def lb_argv(name: str, port: int, members: dict[str, int], *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "nfvha.samples.lb", "--name", name, "--port", str(port),
            "--bind", LOOPBACK]
    for member, member_port in members.items():
        argv += ["--member", f"{member}={LOOPBACK}:{member_port}"]
    return argv + list(extra)


class Members:
    """Counter processes by name; ``ports`` is what an LB's --member flags need."""

    def __init__(self, start: Start) -> None:
        self._start = start
        self.ports: dict[str, int] = {}
        self.procs: dict[str, CounterProc] = {}

    async def run(self, name: str, port: int | None = None) -> CounterProc:
        port = self.ports.get(name, port) or free_port()
        self.ports[name] = port
        proc = self.procs[name] = await self._start(member_argv(name, port))
        await proc.wait_line("serving")
        return proc


class Stats:
    """The LB's STATS answer, asked over one UDP socket."""

    def __init__(self, client: UdpClient) -> None:
        self.client = client

    @classmethod
    async def open(cls, port: int) -> Stats:
        return cls(await UdpClient.open(LOOPBACK, port))

    async def get(self) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(await self.client.ask("STATS")))

    async def wait(self, what: str, check: Any, within_s: float = 5.0) -> dict[str, Any]:
        """Ask until ``check(stats)`` holds (every 2 ms: the answer is the event)."""
        deadline = time.monotonic() + within_s
        while True:
            stats = await self.get()
            if check(stats):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} within {within_s}s: {stats}")
            await asyncio.sleep(0.002)

    async def member_state(self, member: str, state: str, within_s: float = 5.0
                           ) -> dict[str, Any]:
        return await self.wait(f"{member} {state}",
                               lambda s: s["members"][member]["state"] == state, within_s)

    def close(self) -> None:
        self.client.close()


class _Answers(asyncio.DatagramProtocol):
    def __init__(self, load: Load) -> None:
        self.load = load

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        words = data.decode(errors="replace").split()
        load = self.load
        if len(words) == 4 and words[0] == "OK":  # OK <session> <value> <member>
            load.answered.setdefault(words[1], (time.monotonic(), words[3]))
            if load.sending_done and len(load.answered) >= len(load.sent):
                load.all_answered.set()
        else:
            load.other.append(data)


@dataclass
class Load:
    """INC of a fresh session per request, so every answer names its request."""

    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, tuple[float, str]] = field(default_factory=dict)
    other: list[bytes] = field(default_factory=list)
    sending_done: bool = False
    all_answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def unanswered(self) -> list[str]:
        return [s for s in self.sent if s not in self.answered]

    def members_after(self, t: float) -> set[str]:
        return {m for s, (at, m) in self.answered.items() if self.sent[s] >= t}


async def run_load(port: int, *, period_s: float = 0.002, duration_s: float = 2.0,
                   grace_s: float = 0.5, events: dict[float, Any] | None = None) -> Load:
    """Send a request every ``period_s`` for ``duration_s``; ``events`` maps an offset
    in seconds to a callable run once then (a fault). Then wait up to ``grace_s`` for
    the last answers."""
    load = Load()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Answers(load),
                                                       remote_addr=(LOOPBACK, port))
    todo = sorted((events or {}).items())
    try:
        start = time.monotonic()
        i = 0
        while (now := time.monotonic()) - start < duration_s:
            while todo and now - start >= todo[0][0]:
                todo.pop(0)[1]()
            session = f"r{i}"
            load.sent[session] = now
            transport.sendto(f"INC {session}".encode())
            i += 1
            await asyncio.sleep(max(0.0, start + i * period_s - time.monotonic()))
        load.sending_done = True
        if load.unanswered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(load.all_answered.wait(), grace_s)
    finally:
        transport.close()
    return load
