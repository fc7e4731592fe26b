"""The guest: the main process of a local-NFVI VM.

``python -m nfvha.nfvi.guest --vm-dir DIR``

The host agent starts the guest detached, inside the VM's network namespace and
cgroup, so the guest (and with it the VM) outlives an agent crash.  The guest plays
the part of the VM's operating system:

- boots the VNFCs listed in ``DIR/guest.json`` as its children::

      {"vm": "vm1", "vnfcs": [{"name": "gw-a", "argv": [...], "env": {...} | null}],
       "memory_hog_chunk_mb": 16}

  ``env`` (if given) is laid over the guest's own environment.  Each VNFC runs with
  ``DIR`` as working directory, stdin from /dev/null and stdout/stderr appended to the
  VM console, and with PR_SET_PDEATHSIG=SIGKILL: when the guest dies, everything in
  the VM dies with it, as in a real VM crash;
- writes console lines ``[<UTC ISO time>] <text>`` to ``DIR/console.log``;
- records every boot in its disk ``DIR/disk/boot.log`` (one JSON line) and gives its
  VNFCs the disk's path in ``NFVHA_VM_DISK`` (``nfvha.nfvi.disk``, ADR 0010);
- notices a VNFC exit the moment it happens (a pidfd per child, watched by the event
  loop: no polling, no thread per child) and keeps ``DIR/vnfcs.json``::

      {"<name>": {"pid": int|null, "start_ticks": int|null,
                  "state": "running"|"exited"|"stopped",
                  "exit_status": int|null, "exit_desc": str|null}}

  ``pid``/``start_ticks`` describe the last incarnation and are kept after it exits;
  only ``state == "running"`` means alive.  ``stopped`` = exited after a stop order
  (or guest shutdown), ``exited`` = exited on its own (crash, kill from outside);
- serves the *guest channel* on the unix stream socket ``DIR/guest.sock``, or, in a
  real (QEMU) VM, ``--channel /dev/virtio-ports/org.nfvha.guest.0``: the VM's
  virtio-serial port, whose host end is that socket (ADR 0017). The port is one
  connection at a time: the host connecting to it is a client connecting; a host
  that closes its end and connects again is a new client.

Guest channel protocol: newline-delimited JSON objects; one client at a time (a new
connection replaces the previous one, so an agent that restarts just reconnects).

agent -> guest:

- ``{"op":"ping","n":N}`` -> ``{"op":"pong","n":N}`` at once (the hang detector's
  heartbeat: a frozen VM cannot answer);
- ``{"op":"hello"}`` -> ``{"op":"state","vm":...,"vnfcs":{...as vnfcs.json},
  "booted":bool}`` (with a watchdog also ``"watchdog":{"armed":bool,"timeout_ms":N}``),
  then every unacknowledged event again, oldest first;
- ``{"op":"ack","seq":N}`` -> events with seq <= N are forgotten;
- ``{"op":"vnfc-start","name":X}`` -> start X unless it is running (then: no-op);
- ``{"op":"vnfc-stop","name":X,"signal":"TERM"|"KILL"}`` -> signal X (default TERM);
  its exit is reported with ``"expected": true``;
- ``{"op":"memory-hog"}`` -> the guest allocates and touches ``memory_hog_chunk_mb``
  MiB every 10 ms without bound, until the VM's memory limit gets it OOM-killed
  (SIGUSR1 to the guest does the same, for fault injection without the channel);
- anything else -> ``{"op":"error","reason":...,"request":<the message>}`` (``request``
  only when the message was a JSON object).  Orders have no reply on success.

guest -> agent, once the guest is up (its VNFCs launched): ``{"op":"booted"}`` to the
connected client (a client that connects later learns it from ``state``). Until then
the VM is booting: the agent arms its hang detector only after it (a guest busy
booting on a loaded host answers no heartbeat, and is not hung).

guest -> agent, when a VNFC arms, kicks or disarms the VM's watchdog (a VM whose
``guest.json`` says ``"watchdog": true`` without a ``"watchdog_device"``: with one, the
device is the timer; ``nfvha.nfvi.guestwatchdog``):
``{"op":"watchdog","do":"arm"|"kick"|"disarm","timeout_ms":N}`` - not kept: the timer
is the agent's, and an agent that connects re-arms it from ``state``.

guest -> agent events (seq from 1 per guest lifetime, ``mono_ns`` =
``time.monotonic_ns()`` when the guest saw it happen), sent at once to a connected
client and kept until acked (at most ``MAX_UNACKED_EVENTS``, oldest dropped first)::

    {"op":"event","seq":S,"kind":"vnfc-started","vnfc":X,"pid":P,"start_ticks":T,
     "mono_ns":M}
    {"op":"event","seq":S,"kind":"vnfc-exited","vnfc":X,"pid":P,"exit_status":W,
     "exit_desc":"killed by SIGKILL","expected":bool,"mono_ns":M}

``exit_status`` is the raw status word from waitpid(2) exactly as ``os.waitpid``
returns it (decode with ``os.WIFSIGNALED``/``os.WTERMSIG``/``os.WEXITSTATUS`` or
``nfvha.util.procs.describe_wait_status``).  A VNFC whose program cannot be executed
at all is reported as exited with ``pid`` null and status ``255 << 8`` (what the
forked child really exits with), ``exit_desc`` saying why.  An event may reach a
client twice (pushed live, then re-sent after a later hello): receivers dedupe by seq.

On SIGTERM (or SIGINT) the guest SIGTERMs its VNFCs, gives them 2 s, SIGKILLs the
rest, logs and exits 0.

Standard library only (plus the stdlib-only ``nfvha.util``): one runs per VM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nfvha.nfvi.guestwatchdog import HardwareWatchdog, WatchdogDevice
from nfvha.util.files import atomic_write_json
from nfvha.util.procs import describe_wait_status, start_ticks

CONFIG_FILE = "guest.json"
CONSOLE_FILE = "console.log"
STATE_FILE = "vnfcs.json"
SOCKET_FILE = "guest.sock"
# The VM's disk (ADR 0010; nfvha.nfvi.disk snapshots and restores it).
DISK_DIR = "disk"
BOOT_LOG = "boot.log"
DISK_ENV = "NFVHA_VM_DISK"
WATCHDOG_ENV = "NFVHA_WATCHDOG"  # as nfvha.amf.watchdog reads it

MAX_UNACKED_EVENTS = 10_000
MAX_MESSAGE_BYTES = 1 << 20
# A client that stops reading must not make the guest buffer without bound: past this
# much queued output it is dropped (its events stay unacked and are re-sent on reconnect).
MAX_CLIENT_BACKLOG_BYTES = 4 << 20
SHUTDOWN_GRACE_S = 2.0
MEMORY_HOG_INTERVAL_S = 0.01
# A virtio-serial port signals (SIGIO) when its host end connects; this re-check is only
# a safety net should that signal be lost.
PORT_RECHECK_S = 1.0
# _posixsubprocess's forked child exits 255 when exec (or preexec_fn) fails.
START_FAILED_STATUS = 255 << 8

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}

Message = dict[str, Any]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class VnfcSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] | None


@dataclass(frozen=True)
class GuestConfig:
    vm: str
    vnfcs: tuple[VnfcSpec, ...]
    memory_hog_chunk_mb: int = 16
    # In its own network namespace, a VNFC that dies may leave a service address
    # (VIP) on eth0, and the kernel would go on answering ARP for it.
    release_service_addresses: bool = False
    # The VM has a watchdog (VNFHA-1): its VNFCs find it by NFVHA_WATCHDOG. With a
    # device path (a real VM's /dev/watchdog) the device is the timer, else the agent.
    watchdog: bool = False
    watchdog_device: str | None = None

    @classmethod
    def from_json(cls, obj: Any) -> GuestConfig:
        if not isinstance(obj, dict):
            raise ValueError("guest config must be a JSON object")
        vm = obj.get("vm")
        if not isinstance(vm, str) or not vm:
            raise ValueError("'vm' must be a non-empty string")
        chunk_mb = obj.get("memory_hog_chunk_mb", 16)
        if not isinstance(chunk_mb, int) or isinstance(chunk_mb, bool) or chunk_mb <= 0:
            raise ValueError("'memory_hog_chunk_mb' must be a positive integer")
        raw_vnfcs = obj.get("vnfcs", [])
        if not isinstance(raw_vnfcs, list):
            raise ValueError("'vnfcs' must be a list")
        vnfcs = tuple(_vnfc_spec(raw) for raw in raw_vnfcs)
        names = [v.name for v in vnfcs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate VNFC names in {names}")
        release = obj.get("release_service_addresses", False)
        if not isinstance(release, bool):
            raise ValueError("'release_service_addresses' must be true or false")
        watchdog = obj.get("watchdog", False)
        if not isinstance(watchdog, bool):
            raise ValueError("'watchdog' must be true or false")
        device = obj.get("watchdog_device")
        if device is not None and (not isinstance(device, str) or not device.startswith("/dev/")):
            raise ValueError("'watchdog_device' must be a path under /dev")
        return cls(vm=vm, vnfcs=vnfcs, memory_hog_chunk_mb=chunk_mb,
                   release_service_addresses=release, watchdog=watchdog,
                   watchdog_device=device)

    @classmethod
    def load(cls, path: Path) -> GuestConfig:
        with open(path, "rb") as f:
            return cls.from_json(json.loads(f.read()))


async def release_service_addresses(ifname: str = "eth0", netns: str | None = None) -> bool:
    """Delete the secondary IPv4 addresses of ``ifname`` (in ``netns``, or here):
    service addresses (VIPs) claimed in the VM's subnet; the VM's own address is the
    primary one. False if it could not be done."""
    where = ["-n", netns] if netns is not None else []
    try:
        proc = await asyncio.create_subprocess_exec(
            "ip", *where, "-4", "addr", "flush", "dev", ifname, "secondary",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return await proc.wait() == 0
    except OSError:
        return False


def _vnfc_spec(raw: Any) -> VnfcSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"a VNFC must be an object, not {raw!r}")
    name, argv, env = raw.get("name"), raw.get("argv"), raw.get("env")
    if not isinstance(name, str) or not name:
        raise ValueError(f"VNFC name must be a non-empty string: {raw!r}")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"VNFC {name}: 'argv' must be a non-empty list of strings")
    if env is not None and not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise ValueError(f"VNFC {name}: 'env' must be null or an object of strings")
    return VnfcSpec(name=name, argv=tuple(argv), env=env)


# --------------------------------------------------------------------------- console


class Console:
    """The VM console: an append-only log shared by the guest and its VNFCs."""

    def __init__(self, path: Path) -> None:
        # O_APPEND on every writer (guest and VNFCs alike) keeps lines from overwriting
        # each other; one os.write per line keeps a line whole.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def log(self, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with contextlib.suppress(OSError):  # a full disk must not take the VM down
            os.write(self.fd, f"[{stamp}] {text}\n".encode(errors="replace"))

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------- VNFCs


def _pdeathsig_preexec() -> Callable[[], None]:
    """A preexec_fn making the child die by SIGKILL when the guest dies."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    prctl = libc.prctl
    guest_pid = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        if prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
        # The guest may have died between fork and prctl: then nothing would kill us.
        if os.getppid() != guest_pid:
            os.kill(os.getpid(), sigkill)

    return preexec


@dataclass
class Vnfc:
    spec: VnfcSpec
    pid: int | None = None
    start_ticks: int | None = None
    state: str = "stopped"
    exit_status: int | None = None
    exit_desc: str | None = None
    stop_requested: bool = False
    # Held while running: a Popen dropped with no returncode would waitpid() our child
    # from subprocess's cleanup and steal its exit status.
    proc: subprocess.Popen[bytes] | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def record(self) -> Message:
        return {
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "state": self.state,
            "exit_status": self.exit_status,
            "exit_desc": self.exit_desc,
        }


# --------------------------------------------------------------------------- guest


class Guest:
    def __init__(self, vm_dir: Path, config: GuestConfig, console: Console,
                 channel: Path | None = None, port_recheck_s: float = PORT_RECHECK_S) -> None:
        self.vm_dir = vm_dir
        self.channel = channel  # a virtio-serial port; None: serve DIR/guest.sock
        self._port_recheck_s = port_recheck_s
        self._port_task: asyncio.Task[None] | None = None
        self.config = config
        self.console = console
        self.vnfcs = {spec.name: Vnfc(spec) for spec in config.vnfcs}
        self._release_task: asyncio.Future[bool] | None = None  # kept: not garbage-collected
        self._seq = 0
        self._unacked: deque[Message] = deque(maxlen=MAX_UNACKED_EVENTS)
        self._overflow_logged = False
        self._client: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self._socket_inode: int | None = None
        self._terminate = asyncio.Event()
        self._terminate_reason = ""
        self._shutting_down = False
        self._memory_hog: asyncio.Task[None] | None = None
        self._preexec = _pdeathsig_preexec()
        self._booted = False
        self._watchdog: WatchdogDevice | None = None

    # ---- lifecycle

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_terminate_signal, sig)
        loop.add_signal_handler(signal.SIGUSR1, self.start_memory_hog)
        self.console.log(
            f"guest {self.config.vm} booting (pid {os.getpid()}, {len(self.vnfcs)} vnfcs)"
        )
        self._record_boot()
        self._write_state()
        if self.config.watchdog:
            device = self.config.watchdog_device
            self._watchdog = WatchdogDevice(
                self._forward_watchdog, self.console.log,
                HardwareWatchdog(device) if device is not None else None)
            os.environ[WATCHDOG_ENV] = str(await self._watchdog.open(self.vm_dir))
        await self._open_channel()
        for vnfc in self.vnfcs.values():
            self._start(vnfc)
        self.console.log(f"guest {self.config.vm} up")
        self._booted = True
        if self._client is not None:
            self._send(self._client, {"op": "booted"})
        await self._terminate.wait()
        await self._shutdown()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Stay deaf to repeats while the interpreter exits, so that exit is clean.
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)

    def _record_boot(self) -> None:
        # The VM's own persistent state (ADR 0010): what a restart from the initial
        # state loses and a restart from a snapshot keeps. VNFCs find the disk by env.
        disk = self.vm_dir / DISK_DIR
        os.environ[DISK_ENV] = str(disk)
        line = json.dumps({"time": time.time(), "pid": os.getpid()}) + "\n"
        try:
            disk.mkdir(exist_ok=True)
            with open(disk / BOOT_LOG, "a") as f:
                f.write(line)
        except OSError as e:  # a full or missing disk must not keep the VM from booting
            self.console.log(f"guest {self.config.vm}: cannot record the boot: {e}")

    def _forward_watchdog(self, message: Message) -> None:
        # The timer is the agent's: without a connected agent a kick goes nowhere, and
        # the agent that connects next re-arms from the guest's state.
        if self._client is not None:
            self._send(self._client, message)

    def _on_terminate_signal(self, sig: signal.Signals) -> None:
        self._terminate_reason = sig.name
        self._terminate.set()

    async def _shutdown(self) -> None:
        self._shutting_down = True
        self.console.log(f"guest {self.config.vm} shutting down ({self._terminate_reason})")
        if self._memory_hog is not None:
            self._memory_hog.cancel()
        if self._watchdog is not None:
            self._watchdog.close()
        running = [v for v in self.vnfcs.values() if v.running]
        for vnfc in running:
            self._signal(vnfc, signal.SIGTERM)
        if not await self._wait_exited(running, SHUTDOWN_GRACE_S):
            for vnfc in running:
                if vnfc.running:
                    self.console.log(
                        f"vnfc {vnfc.spec.name} still running after {SHUTDOWN_GRACE_S:g} s: SIGKILL"
                    )
                    self._signal(vnfc, signal.SIGKILL)
            await self._wait_exited(running, SHUTDOWN_GRACE_S)
        await self._close_channel()
        self._write_state()
        self.console.log(f"guest {self.config.vm} halted")

    async def _wait_exited(self, vnfcs: list[Vnfc], within_s: float) -> bool:
        waits = [v.exited.wait() for v in vnfcs if v.running]
        if not waits:
            return True
        try:
            await asyncio.wait_for(asyncio.gather(*waits), within_s)
        except TimeoutError:
            return False
        return True

    # ---- VNFC processes

    def _start(self, vnfc: Vnfc) -> None:
        spec = vnfc.spec
        env = None if spec.env is None else {**os.environ, **spec.env}
        vnfc.stop_requested = False
        vnfc.exited = asyncio.Event()
        try:
            proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=self.console.fd,
                stderr=self.console.fd,
                env=env,
                cwd=self.vm_dir,
                preexec_fn=self._preexec,
            )
        except (OSError, subprocess.SubprocessError) as e:
            self._start_failed(vnfc, e)
            return
        vnfc.proc = proc
        vnfc.pid = proc.pid
        vnfc.start_ticks = start_ticks(proc.pid)  # an unreaped child always has a /proc entry
        vnfc.state = "running"
        vnfc.exit_status = None
        vnfc.exit_desc = None
        pidfd = os.pidfd_open(proc.pid)
        asyncio.get_running_loop().add_reader(pidfd, self._on_vnfc_exit, vnfc, proc, pidfd)
        self.console.log(f"vnfc {spec.name} started (pid {proc.pid})")
        self._write_state()
        self._emit(
            "vnfc-started",
            vnfc=spec.name,
            pid=proc.pid,
            start_ticks=vnfc.start_ticks,
            mono_ns=time.monotonic_ns(),
        )

    def _start_failed(self, vnfc: Vnfc, error: BaseException) -> None:
        mono_ns = time.monotonic_ns()
        vnfc.proc = None
        vnfc.pid = None
        vnfc.start_ticks = None
        vnfc.state = "exited"
        vnfc.exit_status = START_FAILED_STATUS
        vnfc.exit_desc = f"start failed: {error}"
        vnfc.exited.set()
        self.console.log(f"vnfc {vnfc.spec.name} failed to start: {error}")
        self._write_state()
        self._emit(
            "vnfc-exited",
            vnfc=vnfc.spec.name,
            pid=None,
            exit_status=vnfc.exit_status,
            exit_desc=vnfc.exit_desc,
            expected=False,
            mono_ns=mono_ns,
        )

    def _on_vnfc_exit(self, vnfc: Vnfc, proc: subprocess.Popen[bytes], pidfd: int) -> None:
        mono_ns = time.monotonic_ns()
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        # A readable pidfd means the child has exited: this waitpid does not block.
        _, status = os.waitpid(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        expected = vnfc.stop_requested
        vnfc.proc = None
        vnfc.state = "stopped" if expected else "exited"
        vnfc.exit_status = status
        vnfc.exit_desc = describe_wait_status(status)
        vnfc.exited.set()
        # Reported first: a failover waits for this event, and the console line and the
        # state file are writes to a disk that may be slow.
        self._emit(
            "vnfc-exited",
            vnfc=vnfc.spec.name,
            pid=proc.pid,
            exit_status=status,
            exit_desc=vnfc.exit_desc,
            expected=expected,
            mono_ns=mono_ns,
        )
        self.console.log(
            f"vnfc {vnfc.spec.name} (pid {proc.pid}) exited: {vnfc.exit_desc}"
            + (" (expected)" if expected else "")
        )
        self._write_state()
        # Clean-up (AMF's CLEANUP), after the report so detection does not wait:
        # the service addresses a dead VNFC held go, unless another VNFC of this VM
        # still runs (it may hold one of them).
        if self.config.release_service_addresses and not any(
                v.running for v in self.vnfcs.values()):
            self._release_task = asyncio.ensure_future(release_service_addresses())

    def _signal(self, vnfc: Vnfc, sig: signal.Signals) -> None:
        """Send ``sig`` to a running VNFC; its exit will be reported as expected."""
        if vnfc.proc is None:
            return
        vnfc.stop_requested = True
        # By pid, safely: the child is ours and not reaped yet, so its pid cannot have
        # been reused.  Not Popen.send_signal(): it polls first, and a poll() that reaps
        # the child would steal the exit status from _on_vnfc_exit.
        os.kill(vnfc.proc.pid, sig)

    def _write_state(self) -> None:
        atomic_write_json(self.vm_dir / STATE_FILE, self._vnfc_records(), fsync=False)

    def _vnfc_records(self) -> dict[str, Message]:
        return {name: vnfc.record() for name, vnfc in self.vnfcs.items()}

    # ---- memory hog

    async def _hog_memory(self) -> None:
        chunk_bytes = self.config.memory_hog_chunk_mb << 20
        page = mmap.PAGESIZE
        touch = b"\x01" * len(range(0, chunk_bytes, page))
        held: list[bytearray] = []
        while True:
            chunk = bytearray(chunk_bytes)
            chunk[::page] = touch  # write every page so the kernel must really back it
            held.append(chunk)
            if len(held) % 16 == 0:
                self.console.log(f"memory-hog: holding {len(held) * chunk_bytes >> 20} MiB")
            await asyncio.sleep(MEMORY_HOG_INTERVAL_S)

    # ---- events

    def _emit(self, kind: str, **fields: Any) -> None:
        self._seq += 1
        event: Message = {"op": "event", "seq": self._seq, "kind": kind, **fields}
        if len(self._unacked) == MAX_UNACKED_EVENTS:
            if not self._overflow_logged:
                self.console.log(
                    f"guest: {MAX_UNACKED_EVENTS} events unacknowledged, dropping the oldest"
                )
                self._overflow_logged = True
        else:
            self._overflow_logged = False
        self._unacked.append(event)
        if self._client is not None:
            self._send(self._client, event)

    # ---- guest channel

    async def _open_channel(self) -> None:
        if self.channel is not None:
            fd = os.open(self.channel, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            self._port_task = asyncio.get_running_loop().create_task(self._serve_port(fd))
            self.console.log(f"guest channel on {self.channel}")
            return
        path = self.vm_dir / SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # stale, from a guest that died before it could clean up
        # Bound by its name relative to the working directory (the VM dir, see main()):
        # an absolute path longer than sun_path's 108 bytes could not be bound.
        self._server = await asyncio.start_unix_server(
            self._serve_client, path=SOCKET_FILE, limit=MAX_MESSAGE_BYTES
        )
        self._socket_inode = path.stat().st_ino
        self.console.log(f"guest channel listening on {path}")

    async def _close_channel(self) -> None:
        if self._server is not None:
            self._server.close()
        client, self._client = self._client, None
        if client is not None:
            client.close()  # flushes what is queued (the last exit events) first
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(client.wait_closed(), 1.0)
        if self._port_task is not None:
            self._port_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._port_task
            return
        path = self.vm_dir / SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            # Only our own socket: a newer guest for this VM may have replaced it.
            if path.stat().st_ino == self._socket_inode:
                path.unlink()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        previous, self._client = self._client, writer
        if previous is not None:
            self.console.log("guest channel: a new client replaces the previous one")
            previous.close()
        else:
            self.console.log("guest channel: client connected")
        try:
            while writer is self._client:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_MESSAGE_BYTES
                    self._send(writer, {"op": "error", "reason": "message too long"})
                    break
                if not line or writer is not self._client:
                    break
                self._handle_message(writer, line)
        except ConnectionError:
            pass
        finally:
            if self._client is writer:
                self._client = None
                self.console.log("guest channel: client disconnected")
            writer.close()

    async def _serve_port(self, fd: int) -> None:
        """Serve the virtio-serial port ``fd`` as one connection per host connection.

        Linux's virtio_console: while the host end is closed, poll reports POLLHUP and
        a read returns 0 (so an idle reader would spin: the port is watched only while
        the host is connected); a write would block. A change of the host's end (and
        any arriving data) raises SIGIO at the port's owner (O_ASYNC)."""
        loop = asyncio.get_running_loop()
        host_changed = asyncio.Event()
        loop.add_signal_handler(signal.SIGIO, host_changed.set)
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
        try:
            while True:
                host_changed.clear()  # before the check: a change after it is not lost
                if not port_host_connected(fd):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(host_changed.wait(), self._port_recheck_s)
                    continue
                reader, writer = await _port_streams(fd)
                try:
                    await self._serve_client(reader, writer)
                finally:
                    # Not a graceful close: with the host gone, what is queued could
                    # never be written (unacked events are re-sent on the next hello).
                    writer.transport.abort()
        finally:
            loop.remove_signal_handler(signal.SIGIO)
            os.close(fd)

    def _send(self, writer: asyncio.StreamWriter, message: Message) -> None:
        if writer.is_closing():
            return
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        if writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG_BYTES:
            self.console.log("guest channel: client is not reading; dropping it")
            writer.transport.abort()

    def _handle_message(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            self._send(writer, {"op": "error", "reason": f"bad JSON: {e}"})
            return
        if not isinstance(message, dict):
            self._send(writer, {"op": "error", "reason": "a message must be a JSON object"})
            return
        op = message.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            self._send(writer, {"op": "error", "reason": f"unknown op {op!r}", "request": message})
            return
        error = handler(self, writer, message)
        if error is not None:
            self._send(writer, {"op": "error", "reason": error, "request": message})

    # Each handler returns None on success or the reason for an error reply.

    def _op_ping(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        self._send(writer, {"op": "pong", "n": message.get("n")})
        return None

    def _op_hello(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        self._send(writer, {"op": "state", "vm": self.config.vm, "vnfcs": self._vnfc_records(),
                            "booted": self._booted,
                            **({"watchdog": wd} if self._watchdog is not None
                               and (wd := self._watchdog.state()) is not None else {})})
        for event in list(self._unacked):
            self._send(writer, event)
        return None

    def _op_ack(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        seq = message.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return "ack needs an integer 'seq'"
        while self._unacked and self._unacked[0]["seq"] <= seq:
            self._unacked.popleft()
        return None

    def _op_vnfc_start(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        vnfc = self._named_vnfc(message)
        if isinstance(vnfc, str):
            return vnfc
        if self._shutting_down:
            return "the guest is shutting down"
        if not vnfc.running:
            self._start(vnfc)
        return None

    def _op_vnfc_stop(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        vnfc = self._named_vnfc(message)
        if isinstance(vnfc, str):
            return vnfc
        signal_name = message.get("signal", "TERM")
        sig = STOP_SIGNALS.get(signal_name) if isinstance(signal_name, str) else None
        if sig is None:
            return f"'signal' must be one of {sorted(STOP_SIGNALS)}"
        if vnfc.running:
            self.console.log(f"vnfc {vnfc.spec.name}: stop ordered (SIG{signal_name})")
            self._signal(vnfc, sig)
        return None

    def _named_vnfc(self, message: Message) -> Vnfc | str:
        """The VNFC a message names, or the reason for an error reply."""
        name = message.get("name")
        vnfc = self.vnfcs.get(name) if isinstance(name, str) else None
        return f"no VNFC named {name!r}" if vnfc is None else vnfc

    def _op_memory_hog(self, writer: asyncio.StreamWriter, message: Message) -> str | None:
        self.start_memory_hog()
        return None

    def start_memory_hog(self) -> None:
        """The fault hook: leak memory until the VM's memory limit kills it. Reached by
        the channel op or by SIGUSR1 (so fault injection does not need the channel,
        which belongs to the agent)."""
        if self._memory_hog is None:
            self.console.log(
                f"memory-hog: allocating {self.config.memory_hog_chunk_mb} MiB"
                f" every {MEMORY_HOG_INTERVAL_S * 1000:g} ms without bound"
            )
            self._memory_hog = asyncio.get_running_loop().create_task(self._hog_memory())

    _handlers: dict[str, Callable[[Guest, asyncio.StreamWriter, Message], str | None]] = {
        "ping": _op_ping,
        "hello": _op_hello,
        "ack": _op_ack,
        "vnfc-start": _op_vnfc_start,
        "vnfc-stop": _op_vnfc_stop,
        "memory-hog": _op_memory_hog,
    }


def port_host_connected(fd: int) -> bool:
    """Whether the host end of the virtio-serial port ``fd`` is open (no POLLHUP)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not any(events & select.POLLHUP for _, events in poller.poll(0))


def _port_files(fd: int) -> tuple[Any, Any]:
    """Two unbuffered files on duplicates of ``fd``, for a read and a write transport;
    each transport closes its own (closing one, as the read side does at end of file,
    leaves the port open: the host sees the guest's end close only when it exits)."""
    return (open(os.dup(fd), "rb", buffering=0),
            open(os.dup(fd), "wb", buffering=0))


async def _port_streams(fd: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A reader and a writer on the virtio-serial port ``fd``."""
    loop = asyncio.get_running_loop()
    read_file, write_file = _port_files(fd)
    reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), read_file)
    write_protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
    transport, _ = await loop.connect_write_pipe(lambda: write_protocol, write_file)
    return reader, asyncio.StreamWriter(transport, write_protocol, reader, loop)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.nfvi.guest", description=__doc__.split("\n")[0])
    parser.add_argument("--vm-dir", required=True, type=Path)
    parser.add_argument("--channel", type=Path, default=None,
                        help="serve the guest channel on this virtio-serial port"
                             f" instead of the unix socket DIR/{SOCKET_FILE}")
    args = parser.parse_args(argv)
    vm_dir: Path = args.vm_dir.resolve()
    os.chdir(vm_dir)  # the VM's root; also lets the channel socket bind by a short name
    console = Console(vm_dir / CONSOLE_FILE)
    try:
        config = GuestConfig.load(vm_dir / CONFIG_FILE)
    except (OSError, ValueError) as e:
        console.log(f"guest: cannot boot, bad {CONFIG_FILE}: {e}")
        return 2
    try:
        asyncio.run(Guest(vm_dir, config, console, channel=args.channel).run())
    except BaseException as e:
        console.log(f"guest {config.vm} crashed: {e!r}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
