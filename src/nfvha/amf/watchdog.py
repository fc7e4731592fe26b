"""The VM's watchdog timer, from inside a VNFC (VNFHA-1).

``wd = Watchdog()`` (the VM's watchdog as its guest gives it: ``NFVHA_WATCHDOG``);
``wd.arm(timeout_s)``, then ``wd.kick()`` more often than ``timeout_s``; ``wd.disarm()``
before a clean exit. A VNFC that stops kicking - stuck in a loop, deadlocked, starved
- lets the timer run out, and the hypervisor does what the VM's ``watchdog.action``
says (reset, power off, or only the alarm ``vm.watchdog``).

On a process VM the timer is the agent's, reached through the guest program: each
call is one datagram to the guest's unix socket (``arm <ms>``, ``kick``, ``disarm``),
which never blocks and needs no answer. Standard library only: this runs inside
VNFC processes.
"""

from __future__ import annotations

import os
import socket

WATCHDOG_ENV = "NFVHA_WATCHDOG"
MIN_TIMEOUT_S = 0.1
MAX_TIMEOUT_S = 600.0


class WatchdogError(RuntimeError):
    pass


class Watchdog:
    def __init__(self, path: str | None = None) -> None:
        found = path if path is not None else os.environ.get(WATCHDOG_ENV)
        if not found:
            raise WatchdogError(f"this VM has no watchdog ({WATCHDOG_ENV} is not set)")
        self.path = found
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self.armed = False

    def _send(self, message: str) -> None:
        try:
            self._sock.sendto(message.encode(), self.path)
        except OSError as e:  # the guest is gone or its queue is full
            raise WatchdogError(f"watchdog at {self.path}: {e}") from None

    def arm(self, timeout_s: float) -> None:
        """Start (or restart with a new timeout) the timer."""
        if not MIN_TIMEOUT_S <= timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be within {MIN_TIMEOUT_S}-{MAX_TIMEOUT_S} s")
        self._send(f"arm {round(timeout_s * 1000)}")
        self.armed = True

    def kick(self) -> None:
        """The VNFC is alive: the timer starts over."""
        self._send("kick")

    def disarm(self) -> None:
        self._send("disarm")
        self.armed = False

    def close(self) -> None:
        self._sock.close()
