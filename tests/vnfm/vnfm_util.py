"""What the availability manager's tests share: a VIM whose repairs are recorded, not
done, and waiting for a condition without a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nfvha.amf.ports import RepairTicket


class RecordingRepair:
    """The VIM's repairs, recorded and not done."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (what, vnfc or vm)

    async def restart_component(self, host: str, vnfc: str) -> None:
        self.calls.append(("restart", vnfc))

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None:
        self.calls.append(("kill-restart", vnfc))

    async def stop_vm(self, vm: str, host: str) -> None:
        self.calls.append(("stop-vm", vm))

    async def start_vm(self, vm: str, host: str) -> None:
        self.calls.append(("start-vm", vm))

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        self.calls.append(("repair-vm", vm))
        return RepairTicket("resolved", None)

    def of(self, target: str) -> list[str]:
        return [what for what, t in self.calls if t == target]


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Until ``cond`` holds, checked every 5 ms; ``TimeoutError(what)`` after
    ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)
