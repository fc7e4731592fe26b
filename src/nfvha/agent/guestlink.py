"""The agent's end of a VM's guest channel (unix socket, like virtio-serial).

A VM first boots: until its guest says it is up (``booted``, or a ``state`` that says
so), the VM is starting, not hung - a guest busy launching its VNFCs on a loaded host
answers no heartbeat for a while. Booting has its own time limit (``boot_timeout_s``,
from the VM's launch spec), counted from the link's start (the VM's spawn); a VM that
does not boot within it is reported as such, never as hung. Its VNFCs all running
also counts as booted (the VM manager says so: ``mark_booted``).

After boot, heartbeat challenge/response detects a hung VM: a numbered ping every interval;
a pong answers its ping and every earlier one. The VM is hung when ``misses``
consecutive pings are unanswered, the newest of them for a quarter interval (a
guest answers in well under a millisecond; p95 4.6 ms measured), so a hang is
declared about ``misses`` intervals after the VM stopped answering. Judging by
pings actually sent (not by the time since the last pong) means a stalled agent,
which sent no pings while it stalled, never takes its own delay for a hung VM. The guest also
reports its VNFCs' starts and exits; those reports are acknowledged only
after the agent has spooled them, so none is lost across an agent restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from nfvha.util.clock import Clock

log = logging.getLogger(__name__)


class GuestVnfc(BaseModel):
    model_config = ConfigDict(extra="ignore")
    pid: int | None = None
    start_ticks: int | None = None
    state: Literal["running", "exited", "stopped"]
    exit_status: int | None = None
    exit_desc: str | None = None


class GuestEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")
    seq: int
    kind: Literal["vnfc-started", "vnfc-exited"]
    vnfc: str
    pid: int | None = None
    start_ticks: int | None = None
    exit_status: int | None = None
    exit_desc: str | None = None
    expected: bool = False
    mono_ns: int


class GuestHandler(Protocol):
    """What a guest link tells the VM manager."""

    async def guest_event(self, vm: str, event: GuestEvent) -> None: ...

    def guest_state(self, vm: str, vnfcs: dict[str, GuestVnfc]) -> None: ...

    def guest_hung(self, vm: str, detected_mono_ns: int) -> None: ...

    def guest_responsive(self, vm: str) -> None: ...

    def guest_booted(self, vm: str) -> None: ...

    def guest_boot_timeout(self, vm: str, detected_mono_ns: int) -> None: ...

    def guest_watchdog(self, vm: str, do: str, timeout_ms: int | None) -> None:
        """A VNFC armed (``timeout_ms``), kicked or disarmed the VM's watchdog; also
        ``arm``/``disarm`` from a guest's ``state`` when the link (re)connects."""
        ...


class GuestLink:
    def __init__(
        self,
        vm: str,
        socket_path: Path,
        clock: Clock,
        interval_ms: int,
        misses: int,
        handler: GuestHandler,
        boot_timeout_s: float = 60.0,
    ) -> None:
        self.vm = vm
        self._path = socket_path
        self._clock = clock
        self._interval_s = interval_ms / 1000
        self._handler = handler
        self._interval_ns = interval_ms * 1_000_000
        self._misses = misses
        self._writer: asyncio.StreamWriter | None = None
        self._unanswered: list[tuple[int, int]] = []  # (ping n, sent mono ns), oldest first
        self._n = 0
        self.hung = False
        self.connected = asyncio.Event()
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._boot_task: asyncio.Task[None] | None = None
        self.booted = False
        self.boot_timed_out = False
        self.boot_timeout_s = boot_timeout_s
        self._boot_deadline_ns = clock.mono_ns() + int(boot_timeout_s * 1e9)

    def start(self) -> None:
        self._boot_deadline_ns = self._clock.mono_ns() + int(self.boot_timeout_s * 1e9)
        self._task = asyncio.create_task(self._run(), name=f"guest-{self.vm}")
        self._boot_task = asyncio.create_task(self._boot_watch(), name=f"boot-{self.vm}")

    async def stop(self) -> None:
        for task in (self._task, self._boot_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._writer is not None:
            self._writer.close()

    def send(self, msg: dict[str, Any]) -> bool:
        w = self._writer
        if w is None or w.is_closing():
            return False
        w.write(json.dumps(msg).encode() + b"\n")
        return True

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self._path))
            except OSError:
                # The guest is still booting (socket not bound yet).
                await asyncio.sleep(0.02)
                continue
            self._writer = writer
            self._unanswered.clear()
            self.send({"op": "hello"})
            self.connected.set()
            pinger = asyncio.create_task(self._ping_loop())
            try:
                await self._read_loop(reader)
            except (OSError, ValueError) as e:
                log.info("guest channel of %s: %s", self.vm, e)
            except Exception:  # never let one bad message end this VM's watch
                log.exception("guest channel of %s failed; reconnecting", self.vm)
            finally:
                pinger.cancel()
                self.connected.clear()
                self._writer = None
                writer.close()
            await asyncio.sleep(0.05)

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionResetError("guest closed the channel")
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("guest %s sent a line that is not JSON; ignored", self.vm)
                continue
            if not isinstance(msg, dict):
                log.warning("guest %s sent a message that is not an object; ignored", self.vm)
                continue
            op = msg.get("op")
            if op == "pong":
                n = msg.get("n")
                if isinstance(n, int):
                    self._unanswered = [(k, t) for k, t in self._unanswered if k > n]
                if self.hung:
                    self.hung = False
                    self._handler.guest_responsive(self.vm)
            elif op == "event":
                try:
                    ev = GuestEvent.model_validate(msg)
                except ValidationError as e:
                    log.warning("bad guest event from %s: %s", self.vm, e)
                    continue
                await self._handler.guest_event(self.vm, ev)
                self.send({"op": "ack", "seq": ev.seq})
            elif op == "state":
                try:
                    vnfcs = {k: GuestVnfc.model_validate(v) for k, v in msg["vnfcs"].items()}
                except (ValidationError, KeyError, AttributeError) as e:
                    log.warning("bad guest state from %s: %s", self.vm, e)
                    continue
                self._handler.guest_state(self.vm, vnfcs)
                if msg.get("booted") is True:
                    self.mark_booted()
                wd = msg.get("watchdog")
                if isinstance(wd, dict):
                    armed, ms = wd.get("armed") is True, _timeout_ms(wd.get("timeout_ms"))
                    self._handler.guest_watchdog(self.vm, "arm" if armed and ms else "disarm",
                                                 ms)
            elif op == "watchdog":
                do, ms = msg.get("do"), _timeout_ms(msg.get("timeout_ms"))
                if do in ("kick", "disarm") or (do == "arm" and ms is not None):
                    self._handler.guest_watchdog(self.vm, str(do), ms)
                else:
                    log.warning("bad watchdog message from %s: %r", self.vm, msg)
            elif op == "booted":
                self.mark_booted()
            else:
                await self._replies.put(msg)

    # -- boot ------------------------------------------------------------------
    def mark_booted(self) -> None:
        """The guest is up: from now on it must answer its heartbeat."""
        if self.booted:
            return
        self.booted = True
        self._unanswered.clear()  # nothing sent while it booted counts against it
        self._handler.guest_booted(self.vm)

    def boot_overdue(self, now_ns: int) -> bool:
        """Still not booted at the end of its boot time."""
        return not self.booted and now_ns >= self._boot_deadline_ns

    async def _boot_watch(self) -> None:
        while not self.booted:
            now = self._clock.mono_ns()
            if self.boot_overdue(now):
                self.boot_timed_out = True
                log.warning("VM %s did not boot within %g s", self.vm, self.boot_timeout_s)
                self._handler.guest_boot_timeout(self.vm, now)
                return
            # Short steps: the clock is injected (it may not be the loop's).
            await asyncio.sleep(min(0.1, max(0.005, (self._boot_deadline_ns - now) / 1e9)))

    # -- heartbeat -------------------------------------------------------------
    async def _ping_loop(self) -> None:
        # Checked four times per interval so detection is not late by a whole interval.
        check_every = self._interval_s / 4
        next_ping = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self.booted:
                # Booting: no heartbeat yet (the boot watch bounds this time).
                await asyncio.sleep(check_every)
                continue
            now = loop.time()
            if now >= next_ping:
                self._n += 1
                if self.send({"op": "ping", "n": self._n}):
                    self._unanswered.append((self._n, self._clock.mono_ns()))
                next_ping = now + self._interval_s
            if not self.hung and self.missed_enough(self._clock.mono_ns()):
                self.hung = True
                self._handler.guest_hung(self.vm, self._clock.mono_ns())
            await asyncio.sleep(check_every)

    def missed_enough(self, now_ns: int) -> bool:
        """``misses`` consecutive pings unanswered, the newest for a quarter interval."""
        if len(self._unanswered) < self._misses:
            return False
        _, last_sent = self._unanswered[self._misses - 1]
        return now_ns - last_sent >= self._interval_ns // 4

    async def request(self, msg: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
        """Send a command and wait for the guest's first non-event reply."""
        while not self._replies.empty():
            self._replies.get_nowait()
        if not self.send(msg):
            raise ConnectionError(f"guest channel of {self.vm} is not connected")
        return await asyncio.wait_for(self._replies.get(), timeout_s)


def _timeout_ms(value: object) -> int | None:
    """A watchdog timeout as the guest bounds it (100 ms - 10 min), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 600_000:
        return value
    return None
