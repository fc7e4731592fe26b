"""What an availability manager asks of the VIM, and the VIM's answers (ADR 0010, 0011).

The manager never imports the VIM: it is given a ``RepairPort`` - the controller's
agent commands and VM repair policy (``nfvha.controller.agentrepair``), the VIM's
public API for a VNF's own AM (``nfvha.amf.own.repair``), or the HA director's
channel to its controller (ADR 0014) - and, for UC-9, a ``VimRepairHook``.

A VM repair has one owner, the VIM's repair policy: whoever asks gets a
``RepairTicket``; a repair under way is a ``RepairJob`` everyone who asked waits on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel

log = logging.getLogger(__name__)

PerformedAction = Literal["restart-initial", "restart-snapshot", "failover-standby-vm"]


class RepairRefused(Exception):
    """The ask cannot be carried out as asked (no standby, the VM is a standby, ...)."""


class RepairOutcome(BaseModel):
    vm: str
    action: PerformedAction
    requested_by: str  # "policy" (its configured action), "vnfm", "api", ...
    failure_event: int | None  # the failure repaired, if it was about one
    stopped_first: bool
    replacement: str  # the VM that runs the VNFCs now: ``vm`` unless a failover
    replacement_host: str
    replacement_address: str | None = None
    disk: dict[str, Any] | None = None  # what the agent did to the disk
    fallback: str | None = None  # why the configured action was not the one done
    ok: bool
    error: str | None = None
    started_time: float
    duration_ms: float


class RepairJob:
    """One repair under way; everyone who asked for it waits on the same one. Whoever
    carries it out reports its progress: ``mark_stopped`` once the failed VM is known
    not to run, ``resolve`` with the outcome."""

    def __init__(self, vm: str, action: PerformedAction, requested_by: str,
                 stop_first: bool) -> None:
        self.vm = vm
        self.action = action
        self.requested_by = requested_by
        self.stop_first = stop_first
        self.stopped = False
        self.done: asyncio.Future[RepairOutcome] = asyncio.get_running_loop().create_future()
        self._on_stopped: list[Callable[[], None]] = []

    def when_stopped(self, callback: Callable[[], None]) -> None:
        """``callback`` runs once the failed VM is known not to run any more (stopped,
        or it had crashed), before anything is started in its place."""
        if self.stopped:
            callback()
        else:
            self._on_stopped.append(callback)

    async def outcome(self) -> RepairOutcome:
        return await asyncio.shield(self.done)

    def mark_stopped(self) -> None:
        """The failed VM does not run any more (once; later calls do nothing)."""
        if self.stopped:
            return
        self.stopped = True
        for cb in self._on_stopped:
            try:
                cb()
            except Exception:
                log.exception("repair of %s: a stop callback failed", self.vm)
        self._on_stopped.clear()

    def resolve(self, outcome: RepairOutcome) -> None:
        """The repair is over (once; later calls do nothing)."""
        self.action = outcome.action
        if not self.done.done():
            self.done.set_result(outcome)


@dataclass(frozen=True)
class RepairTicket:
    """The answer to an ask: a repair ``started`` for it, one already under way it
    ``joined`` (``job`` set), or nothing to do: the failure it named is ``resolved``."""

    how: Literal["started", "joined", "resolved"]
    job: RepairJob | None
    last: RepairOutcome | None = None


class RepairPort(Protocol):
    """The VIM's repair operations, as the availability manager asks for them."""

    async def restart_component(self, host: str, vnfc: str) -> None: ...

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None: ...

    async def stop_vm(self, vm: str, host: str) -> None: ...

    async def start_vm(self, vm: str, host: str) -> None: ...

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket: ...


class VimRepairHook(Protocol):
    """UC-9: ``(vm, source, failfast)`` -> True when the VIM repairs the VM's host
    instead of the VM (it has started, or is under way). Awaitable: in the HA director
    the question travels over its channel to the controller (ADR 0014)."""

    def __call__(self, vm: str, source: str, failfast: bool) -> Awaitable[bool]: ...
