"""The VNFM's repair port over the VIM's public API (a VNF's own AM, ADR 0008).

VNFC restarts are ``POST /v1/vnfcs/{name}/start`` (the VIM finds the VNFC's host, also
after a failover to a standby VM); VM repairs are ``POST /v1/vms/{vm}/repair`` naming
the failure event, so the VIM applies the VNF's ``repair_action`` (ADR 0010), joins a
repair already under way and never repairs one failure twice (VNFHA-10). The VIM counts
each ask against the VM's host (UC-9) and may repair the host instead.

The engine learns from ``RepairJob.when_stopped`` when a failed VM is known not to run
any more. Over the API that is the VIM's own word: the VM's ``vm.stopped`` (or
``vm.crashed``) event after the ask, which the AM's event feed hands to ``on_events``
before the engine sees the batch; a crashed VM is stopped already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from pydantic import ValidationError

from nfvha.amf.own.vim import VimClient, VimError
from nfvha.amf.ports import PerformedAction, RepairJob, RepairOutcome, RepairTicket
from nfvha.model.events import Kind, StoredEvent
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.tasks import background

log = logging.getLogger(__name__)
T = TypeVar("T")


class ApiRepair:
    """``RepairPort`` of the availability manager (``nfvha.amf.ports``) over the VIM's API.

    ``repair_timeout_s``: how long a VM repair may take (the VIM answers when it is
    done). ``unsent_retry_s``: how long a call the VIM did not receive is tried again
    (it restarts; a call that reached it is never sent twice: it may have acted).
    ``kill_timeout_s``/``poll_s``: a VNFC restarted while it may still run is stopped,
    then started once the VIM has seen it exit."""

    def __init__(self, vim: VimClient, clock: Clock = SYSTEM_CLOCK, *,
                 repair_timeout_s: float = 120.0, unsent_retry_s: float = 10.0,
                 retry_pause_s: float = 0.2, kill_timeout_s: float = 10.0,
                 poll_s: float = 0.05) -> None:
        self._vim = vim
        self._clock = clock
        self._repair_timeout_s = repair_timeout_s
        self._unsent_retry_s = unsent_retry_s
        self._retry_pause_s = retry_pause_s
        self._kill_timeout_s = kill_timeout_s
        self._poll_s = poll_s
        self._asks: dict[str, tuple[RepairJob, int]] = {}  # vm -> (job, last id at ask)
        self._crash_event: dict[str, int] = {}  # vm -> id of its latest vm.crashed
        self._seen = 0

    # -- the VIM's events (before the engine's) ----------------------------------------
    def on_events(self, events: Iterable[StoredEvent]) -> None:
        for ev in events:
            self._seen = max(self._seen, ev.id)
            kind, _, vm = ev.entity.partition("/")
            if kind != "vm":
                continue
            if ev.kind == Kind.VM_CRASHED:
                self._crash_event[vm] = ev.id
            if ev.kind in (Kind.VM_STOPPED, Kind.VM_CRASHED):
                ask = self._asks.get(vm)
                if ask is not None and ev.id > ask[1]:
                    ask[0].mark_stopped()

    # -- VNFCs --------------------------------------------------------------------------
    async def restart_component(self, host: str, vnfc: str) -> None:
        """``host`` is where the engine last saw it; the VIM knows where it is now."""
        await self._call(lambda: self._vim.vnfc(vnfc, "start"))

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None:
        """Stop it (the VIM's stop: SIGTERM - the API offers no SIGKILL), then start it
        once the VIM has seen it exit: ``start`` leaves a live process alone."""
        await self._call(lambda: self._vim.vnfc(vnfc, "stop"))
        deadline = self._clock.mono_ns() + int(self._kill_timeout_s * 1e9)
        while True:
            got = await self._call(lambda: self._vim.vnfc(vnfc, "start"))
            if not got.get("result", {}).get("already"):
                return
            if self._clock.mono_ns() > deadline:
                raise RuntimeError(f"{vnfc} still runs {self._kill_timeout_s:g} s after the"
                                   " VIM stopped it")
            await asyncio.sleep(self._poll_s)

    # -- VMs ----------------------------------------------------------------------------
    async def stop_vm(self, vm: str, host: str) -> None:
        await self._call(lambda: self._vim.vm(vm, "stop"))

    async def start_vm(self, vm: str, host: str) -> None:
        await self._call(lambda: self._vim.vm(vm, "start"))

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        """Ask the VIM to repair ``vm`` (about event ``failure``, if given) in the
        background; the ticket's job settles with the VIM's outcome. A second ask for
        a VM while one is out joins it, as the VIM would."""
        ask = self._asks.get(vm)
        if ask is not None:
            return RepairTicket("joined", ask[0])
        action: PerformedAction = "restart-initial"  # until the VIM says what it did
        job = RepairJob(vm, action, requested_by, stop_first=True)
        self._asks[vm] = (job, self._seen)
        if failure is not None and self._crash_event.get(vm) == failure:
            job.mark_stopped()  # the failure is a crash: nothing of it runs
        background(self._ask(vm, failure, job), name=f"vim-repair-{vm}")
        return RepairTicket("started", job)

    async def _ask(self, vm: str, failure: int | None, job: RepairJob) -> None:
        t0_wall, t0_ns = self._clock.wall(), self._clock.mono_ns()
        params = {"failure": failure} if failure is not None else None
        try:
            got = await self._call(lambda: self._vim.vm(
                vm, "repair", params=params, timeout_s=self._repair_timeout_s))
            outcome = self._outcome(vm, failure, job, got.get("host", ""),
                                    got.get("result", {}), t0_wall, t0_ns)
        except (VimError, ValidationError) as e:
            outcome = _made(vm, job, failure, "", t0_wall, self._ms_since(t0_ns),
                            ok=False, error=str(e))
        finally:
            if self._asks.get(vm, (None, 0))[0] is job:
                del self._asks[vm]
        if outcome.ok and outcome.stopped_first:
            job.mark_stopped()  # its vm.stopped came first, unless the feed lags
        log.info("VM %s: the VIM's repair %s (%s)", vm, "done" if outcome.ok else "failed",
                 outcome.error or outcome.fallback or outcome.action)
        job.resolve(outcome)

    def _outcome(self, vm: str, failure: int | None, job: RepairJob, host: str,
                 result: dict[str, Any], t0_wall: float, t0_ns: int) -> RepairOutcome:
        if "verdict" in result:
            # UC-9: several of the host's VMs were reported; the VIM repairs the host
            # (fence, then re-create its VMs elsewhere): the engine follows the events.
            return _made(vm, job, failure, host, t0_wall, self._ms_since(t0_ns), ok=True,
                         fallback=f"{result['verdict']}: {result.get('reason', '')}")
        last = result.get("outcome")
        if last is None:  # the failure was over before anyone repaired it
            return _made(vm, job, failure, host, t0_wall, self._ms_since(t0_ns), ok=True,
                         fallback=f"nothing to repair ({result.get('how', '?')})")
        return RepairOutcome.model_validate(last)

    def _ms_since(self, t0_ns: int) -> float:
        return (self._clock.mono_ns() - t0_ns) / 1e6

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call``, again while the VIM did not receive it (it restarts, or elects)."""
        deadline = self._clock.mono_ns() + int(self._unsent_retry_s * 1e9)
        while True:
            try:
                return await call()
            except VimError as e:
                if e.sent or self._clock.mono_ns() > deadline:
                    raise
                log.info("%s; trying again", e)
            await asyncio.sleep(self._retry_pause_s)


def _made(vm: str, job: RepairJob, failure: int | None, host: str, t0_wall: float,
          ms: float, *, ok: bool, error: str | None = None, fallback: str | None = None
          ) -> RepairOutcome:
    """An outcome the VIM did not state (no repair of the VM itself, or no answer)."""
    return RepairOutcome(vm=vm, action=job.action, requested_by=job.requested_by,
                         failure_event=failure, stopped_first=False, replacement=vm,
                         replacement_host=host, ok=ok, error=error, fallback=fallback,
                         started_time=t0_wall, duration_ms=ms)
