"""Helpers for the guest and sample-program tests: ports, waiting, the guest channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.testbed.services import free_tcp_udp_port as free_port
from nfvha.util.procs import is_same_process, kill_pid, start_ticks

LOOPBACK = "127.0.0.1"
Message = dict[str, Any]



def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "it") -> None:
    """Poll ``condition`` with a short back-off; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


async def async_wait_until(
    condition: Callable[[], bool], within_s: float = 5.0, what: str = "it"
) -> None:
    deadline = time.monotonic() + within_s
    delay = 0.002
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def is_dead(pid: int, ticks: int | None) -> bool:
    return ticks is None or not is_same_process(pid, ticks)


def counter_argv(name: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nfvha.samples.counter",
        "--name",
        name,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
    ]


def udp_request(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request`` until an answer comes back (the server may still be binding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        deadline = time.monotonic() + timeout
        while True:
            s.sendto(request, (LOOPBACK, port))
            try:
                return s.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no UDP answer on port {port} in {timeout}s") from None


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


class GuestChannel:
    """A client of the guest channel: newline-delimited JSON over a unix socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: Path | str) -> GuestChannel:
        reader, writer = await asyncio.open_unix_connection(str(path))
        return cls(reader, writer)

    async def send(self, message: Message) -> None:
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, within_s: float = 5.0) -> Message:
        line = await asyncio.wait_for(self.reader.readline(), within_s)
        if not line:
            raise EOFError("the guest closed the channel")
        message: Message = json.loads(line)
        return message

    async def recv_until(self, match: Callable[[Message], bool], within_s: float = 5.0) -> Message:
        """The next message matching ``match``, skipping others."""
        deadline = time.monotonic() + within_s
        while True:
            message = await self.recv(max(0.0, deadline - time.monotonic()))
            if match(message):
                return message

    async def hello(self) -> tuple[Message, list[Message]]:
        """Say hello; return the state and the re-sent events (up to a ping's pong)."""
        await self.send({"op": "hello"})
        state = await self.recv()
        assert state["op"] == "state", state
        # The guest answers in order: a pong after hello marks the end of the re-sent events.
        await self.send({"op": "ping", "n": -1})
        events: list[Message] = []
        while True:
            message = await self.recv()
            if message == {"op": "pong", "n": -1}:
                return state, events
            assert message["op"] == "event", message
            events.append(message)

    async def ack(self, seq: int) -> None:
        """Acknowledge up to ``seq``; return once the guest has processed it.

        (A ping round-trip after the ack: the guest handles one client's messages in order,
        and a client that closes at once could be replaced before its ack is read.)
        """
        await self.send({"op": "ack", "seq": seq})
        await self.send({"op": "ping", "n": -2})
        await self.recv_until(lambda m: m == {"op": "pong", "n": -2})

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


@dataclass
class ProcessTracker:
    """Processes a test started, killed by (pid, start time) at teardown."""

    popens: list[subprocess.Popen[bytes]] = field(default_factory=list)
    others: set[tuple[int, int]] = field(default_factory=set)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kwargs)
        self.popens.append(proc)
        return proc

    def track(self, pid: int | None, ticks: int | None = None) -> None:
        """Remember a process we did not start ourselves (a VNFC, child of the guest)."""
        ticks = start_ticks(pid) if pid is not None and ticks is None else ticks
        if pid is not None and ticks is not None:
            self.others.add((pid, ticks))

    def cleanup(self) -> None:
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for pid, ticks in self.others:
            kill_pid(pid, signal.SIGKILL, ticks=ticks)


@dataclass
class RunningGuest:
    vm_dir: Path
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    tracker: ProcessTracker

    @property
    def socket_path(self) -> Path:
        return self.vm_dir / "guest.sock"

    @property
    def console(self) -> Path:
        return self.vm_dir / "console.log"

    def vnfcs(self) -> dict[str, dict[str, Any]]:
        state: dict[str, dict[str, Any]] = read_json(self.vm_dir / "vnfcs.json")
        for record in state.values():  # every incarnation gets killed at teardown
            self.tracker.track(record["pid"], record["start_ticks"])
        return state

    def wait_vnfc_state(self, name: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        wait_until(lambda: self._has_state(name, state), timeout, f"vnfc {name} to be {state}")
        return self.vnfcs()[name]

    def _has_state(self, name: str, state: str) -> bool:
        try:
            return bool(self.vnfcs()[name]["state"] == state)
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            return False


@dataclass
class GuestLauncher:
    workdir: Path
    tracker: ProcessTracker
    started: list[RunningGuest] = field(default_factory=list)

    def start(
        self,
        vnfcs: list[str] | None = None,
        *,
        extra: list[dict[str, Any]] | None = None,
        vm_dir: Path | None = None,
        wait_running: bool = True,
        **popen_kwargs: Any,
    ) -> RunningGuest:
        """Boot a guest whose VNFCs are counters named ``vnfcs`` (plus raw ``extra`` specs)."""
        vm_dir = vm_dir or self.workdir / "vm"
        vm_dir.mkdir(parents=True, exist_ok=True)
        names = vnfcs if vnfcs is not None else ["gw-a", "gw-b"]
        ports = {name: free_port() for name in names}
        specs: list[dict[str, Any]] = [
            {"name": name, "argv": counter_argv(name, port), "env": None}
            for name, port in ports.items()
        ]
        specs += extra or []
        config = {"vm": "vm1", "vnfcs": specs, "memory_hog_chunk_mb": 16}
        (vm_dir / "guest.json").write_text(json.dumps(config))
        with open(self.workdir / "guest.out", "ab") as out:
            proc = self.tracker.popen(
                [sys.executable, "-m", "nfvha.nfvi.guest", "--vm-dir", str(vm_dir)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # detached, as the agent starts it
                **popen_kwargs,
            )
        guest = RunningGuest(vm_dir=vm_dir, proc=proc, ports=ports, tracker=self.tracker)
        self.started.append(guest)
        if wait_running:
            for name in names:
                guest.wait_vnfc_state(name, "running")
            wait_until(lambda: guest.socket_path.exists(), 5.0, "the guest channel")
        return guest
