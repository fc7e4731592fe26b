"""The guest's side of a VM's watchdog (VNFHA-1): a unix datagram socket in the VM's
directory where its VNFCs arm, kick and disarm the VM's watchdog
(``nfvha.amf.watchdog``). Where the timer runs:

- a process VM: the agent's. Each valid request goes to it over the guest channel as
  ``{"op":"watchdog","do":"arm"|"kick"|"disarm","timeout_ms":N}``, and the guest's
  ``state`` says whether it is armed, so an agent that reconnects re-arms it;
- a real VM: its watchdog device (``/dev/watchdog``, QEMU's i6300esb), driven through
  the Linux watchdog API. It runs out inside QEMU, whatever the guest or the agent
  do, and libvirt reports it. The device counts whole seconds: a timeout is rounded up.

Standard library only (it runs in the guest)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_FILE = "watchdog.sock"
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 600_000
MAX_REQUEST_BYTES = 64
# <linux/watchdog.h>: _IOWR('W', 6, int), _IOR('W', 5, int)
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_KEEPALIVE = 0x80045705


class HardwareWatchdog:
    """The Linux watchdog API on a device: open arms it, a keep-alive kicks it, the
    magic close ('V', then close) disarms it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def arm(self, timeout_ms: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        seconds = max(1, -(-timeout_ms // 1000))
        fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("i", seconds))
        self.kick()

    def kick(self) -> None:
        if self._fd is not None:
            fcntl.ioctl(self._fd, WDIOC_KEEPALIVE, struct.pack("i", 0))

    def disarm(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.write(fd, b"V")
            finally:
                os.close(fd)


class WatchdogDevice(asyncio.DatagramProtocol):
    """``hardware``: the VM's device drives the timer; else the agent's (``forward``)."""

    def __init__(self, forward: Callable[[dict[str, Any]], None],
                 log: Callable[[str], None], hardware: HardwareWatchdog | None = None) -> None:
        self._forward = forward
        self._log = log
        self._hardware = hardware
        self.timeout_ms: int | None = None  # armed with this timeout; None: disarmed
        self._transport: asyncio.DatagramTransport | None = None
        self._path: Path | None = None

    async def open(self, vm_dir: Path) -> Path:
        path = vm_dir / SOCKET_FILE
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a previous life's
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: self, sock=sock)
        self._transport = transport
        self._path = path
        return path

    def close(self) -> None:
        if self._hardware is not None:
            # The guest stops (its VM is stopped): a watchdog left armed would fire on
            # a VM that ended on purpose.
            with contextlib.suppress(OSError):
                self._hardware.disarm()
        if self._transport is not None:
            self._transport.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def state(self) -> dict[str, Any] | None:
        """For the guest's ``state`` message; None when the timer is the device's."""
        if self._hardware is not None:
            return None
        return {"armed": self.timeout_ms is not None, "timeout_ms": self.timeout_ms}

    def _send(self, message: dict[str, Any]) -> None:
        hw = self._hardware
        if hw is None:
            self._forward(message)
            return
        try:
            if message["do"] == "arm":
                hw.arm(int(message["timeout_ms"]))
            elif message["do"] == "kick":
                hw.kick()
            else:
                hw.disarm()
        except OSError as e:
            self._log(f"watchdog device {hw.path}: {message['do']} failed: {e}")

    def datagram_received(self, data: bytes, addr: Any) -> None:
        words = data[:MAX_REQUEST_BYTES].decode(errors="replace").split()
        if words == ["kick"]:
            if self.timeout_ms is not None:
                self._send({"op": "watchdog", "do": "kick"})
        elif words == ["disarm"]:
            if self.timeout_ms is not None:
                self._log("watchdog: disarmed")
            self.timeout_ms = None
            self._send({"op": "watchdog", "do": "disarm"})
        elif len(words) == 2 and words[0] == "arm" and words[1].isdigit() \
                and MIN_TIMEOUT_MS <= int(words[1]) <= MAX_TIMEOUT_MS:
            self.timeout_ms = int(words[1])
            self._log(f"watchdog: armed, {self.timeout_ms} ms")
            self._send({"op": "watchdog", "do": "arm", "timeout_ms": self.timeout_ms})
        else:
            self._log(f"watchdog: request ignored: {data[:MAX_REQUEST_BYTES]!r}")
