"""The VIM as the availability manager sees it from the director: its repair port and
its UC-9 answer, carried over the channel to the controller (ADR 0014).

Every request has an id; the controller answers with ``repair_update``s (``stopped``
once the failed VM is known not to run, then ``done`` or ``failed``) or an
``answer``. A request on a channel that is down, or dropped while it waits, fails
at once: the availability manager logs it, and its next decision or the stored
event's replay after the reconnection takes it up again.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from nfvha.amf.ports import PerformedAction, RepairJob, RepairOutcome, RepairTicket
from nfvha.director.channel import ControllerChannel
from nfvha.util.clock import Clock
from nfvha.wire.director import Answer, Ask, Repair, RepairKind, RepairUpdate

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    future: asyncio.Future[None] | None = None  # component and plain VM operations
    job: RepairJob | None = None  # repair_vm
    failure: int | None = None
    started_wall: float = 0.0
    started_ns: int = 0


class ChannelRepair:
    """``RepairPort`` (``nfvha.amf.ports``) over the controller channel."""

    def __init__(self, channel: ControllerChannel, clock: Clock, *,
                 timeout_s: float = 120.0, ask_timeout_s: float = 5.0) -> None:
        self._channel = channel
        self._clock = clock
        self._timeout_s = timeout_s
        self._ask_timeout_s = ask_timeout_s
        self._pending: dict[int, _Pending] = {}
        self._answers: dict[int, asyncio.Future[Answer]] = {}
        self._jobs: dict[str, RepairJob] = {}  # vm -> the repair out for it

    # -- the port -------------------------------------------------------------------------
    async def restart_component(self, host: str, vnfc: str) -> None:
        await self._operate("restart_component", host, vnfc)

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None:
        await self._operate("kill_and_restart_component", host, vnfc)

    async def stop_vm(self, vm: str, host: str) -> None:
        await self._operate("stop_vm", host, vm)

    async def start_vm(self, vm: str, host: str) -> None:
        await self._operate("start_vm", host, vm)

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        """Ask the VIM's repair policy (ADR 0010) for a repair of ``vm``; a second ask
        while one is out joins it, as the VIM would."""
        job = self._jobs.get(vm)
        if job is not None:
            return RepairTicket("joined", job)
        action: PerformedAction = "restart-initial"  # until the VIM says what it did
        job = RepairJob(vm, action, requested_by, stop_first=True)
        rid = self._channel.next_id()
        self._pending[rid] = _Pending(job=job, failure=failure,
                                      started_wall=self._clock.wall(),
                                      started_ns=self._clock.mono_ns())
        self._jobs[vm] = job
        if not self._channel.send(Repair(id=rid, kind="repair_vm", target=vm,
                                         requested_by=requested_by, failure=failure)):
            self._fail(rid, "the controller is not connected")
        return RepairTicket("started", job)

    async def host_repair(self, vm: str, source: str, failfast: bool) -> bool:
        """UC-9: would the VIM repair ``vm``'s host instead (and has it started)?"""
        aid = self._channel.next_id()
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[aid] = fut
        try:
            if not self._channel.send(Ask(id=aid, what="host_repair", vm=vm, source=source,
                                          failfast=failfast)):
                return False
            async with asyncio.timeout(self._ask_timeout_s):
                answer = await fut
            return answer.ok and bool(answer.result)
        except (TimeoutError, ConnectionError) as e:
            log.warning("no answer from the VIM whether it repairs the host of %s: %s", vm, e)
            return False
        finally:
            self._answers.pop(aid, None)

    # -- answers ------------------------------------------------------------------------
    def on_update(self, msg: RepairUpdate) -> None:
        p = self._pending.get(msg.id)
        if p is None:
            return
        if p.job is not None:
            if msg.phase == "stopped":
                p.job.mark_stopped()
                return
            self._settle_job(msg.id, p, p.job, msg)
            return
        del self._pending[msg.id]
        if p.future is not None and not p.future.done():
            if msg.phase == "done":
                p.future.set_result(None)
            else:
                p.future.set_exception(RuntimeError(msg.error or "the VIM's repair failed"))

    def on_answer(self, msg: Answer) -> None:
        fut = self._answers.get(msg.id)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def channel_lost(self) -> None:
        for rid in list(self._pending):
            self._fail(rid, "the controller's channel closed")
        for fut in self._answers.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the controller's channel closed"))

    # -- internals ----------------------------------------------------------------------------
    async def _operate(self, kind: RepairKind, host: str, target: str) -> None:
        rid = self._channel.next_id()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(future=fut)
        if not self._channel.send(Repair(id=rid, kind=kind, host=host, target=target)):
            del self._pending[rid]
            raise ConnectionError("the controller is not connected")
        try:
            async with asyncio.timeout(self._timeout_s):
                await fut
        finally:
            self._pending.pop(rid, None)

    def _settle_job(self, rid: int, p: _Pending, job: RepairJob,
                    msg: RepairUpdate) -> None:
        del self._pending[rid]
        if self._jobs.get(job.vm) is job:
            del self._jobs[job.vm]
        outcome: RepairOutcome | None = None
        if msg.outcome:
            try:
                outcome = RepairOutcome.model_validate(msg.outcome)
            except ValidationError as e:
                log.error("VIM's repair outcome for %s unreadable: %s", job.vm, e)
        if outcome is None:
            outcome = self._made(job, p, ok=msg.phase == "done", error=msg.error,
                                 fallback=f"nothing to repair ({msg.how})"
                                 if msg.phase == "done" else None)
        if outcome.ok and outcome.stopped_first:
            job.mark_stopped()
        job.resolve(outcome)

    def _fail(self, rid: int, why: str) -> None:
        p = self._pending.pop(rid, None)
        if p is None:
            return
        if p.job is not None:
            if self._jobs.get(p.job.vm) is p.job:
                del self._jobs[p.job.vm]
            p.job.resolve(self._made(p.job, p, ok=False, error=why))
        elif p.future is not None and not p.future.done():
            p.future.set_exception(ConnectionError(why))

    def _made(self, job: RepairJob, p: _Pending, *, ok: bool, error: str | None,
              fallback: str | None = None) -> RepairOutcome:
        """An outcome the VIM did not state (nothing to repair, or no answer)."""
        return RepairOutcome(vm=job.vm, action=job.action, requested_by=job.requested_by,
                             failure_event=p.failure, stopped_first=False, replacement=job.vm,
                             replacement_host="", ok=ok, error=error, fallback=fallback,
                             started_time=p.started_wall,
                             duration_ms=(self._clock.mono_ns() - p.started_ns) / 1e6)
