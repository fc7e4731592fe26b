"""The guest's side of a process VM's watchdog (VNFHA-1): a unix datagram socket in
the VM's directory where its VNFCs arm, kick and disarm the VM's watchdog
(``nfvha.amf.watchdog``). The timer itself is the agent's: each valid request goes to
it over the guest channel as ``{"op":"watchdog","do":"arm"|"kick"|"disarm",
"timeout_ms":N}``, and the guest's ``state`` says whether it is armed, so an agent
that reconnects re-arms it. Standard library only (it runs in the guest)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

SOCKET_FILE = "watchdog.sock"
MIN_TIMEOUT_MS = 100
MAX_TIMEOUT_MS = 600_000
MAX_REQUEST_BYTES = 64


class WatchdogDevice(asyncio.DatagramProtocol):
    def __init__(self, forward: Callable[[dict[str, Any]], None],
                 log: Callable[[str], None]) -> None:
        self._forward = forward
        self._log = log
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
        if self._transport is not None:
            self._transport.close()
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()

    def state(self) -> dict[str, Any]:
        """For the guest's ``state`` message."""
        return {"armed": self.timeout_ms is not None, "timeout_ms": self.timeout_ms}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        words = data[:MAX_REQUEST_BYTES].decode(errors="replace").split()
        if words == ["kick"]:
            if self.timeout_ms is not None:
                self._forward({"op": "watchdog", "do": "kick"})
        elif words == ["disarm"]:
            if self.timeout_ms is not None:
                self._log("watchdog: disarmed")
            self.timeout_ms = None
            self._forward({"op": "watchdog", "do": "disarm"})
        elif len(words) == 2 and words[0] == "arm" and words[1].isdigit() \
                and MIN_TIMEOUT_MS <= int(words[1]) <= MAX_TIMEOUT_MS:
            self.timeout_ms = int(words[1])
            self._log(f"watchdog: armed, {self.timeout_ms} ms")
            self._forward({"op": "watchdog", "do": "arm", "timeout_ms": self.timeout_ms})
        else:
            self._log(f"watchdog: request ignored: {data[:MAX_REQUEST_BYTES]!r}")
