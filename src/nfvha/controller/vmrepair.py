"""The VIM's VM repair policy (REC-2, VNFHA-10, VNFHA-13, HV-7; ADR 0010).

A failed VM - crashed, or hung (then killed first: isolation) - is repaired by the
``repair_action`` of its VNF:

- ``confirm``: only when the VNF's manager asks (the generic VNFM asks at once; a VNF
  with its own manager asks through ``POST /v1/vms/{vm}/repair``); the VM is then
  replaced in its initial state unless the ask names another action;
- ``restart-initial``: replaced in its initial state (empty disk), without asking;
- ``restart-snapshot``: restarted from its last snapshot (taken every
  ``snapshot_interval_s`` while it runs, or on request; none yet: initial state);
- ``failover-standby-vm``: its pre-provisioned standby VM (``standby_for`` in the
  topology, kept stopped) is started with its VNFCs; the failed VM becomes the standby.

One owner: every VM repair, whoever asks, goes through here, and at most one repair of
a VM is under way. An ask while one is under way joins it; an ask that names a failure
(its event id) already repaired, or over by itself, is answered without a second repair.

The outcome is a ``vm.repaired`` event (it clears the VM's failure alarm; for a failed
repair an informational one) and the VM's repair status (``GET /v1/vms/{vm}/repair``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from nfvha.amf.ports import (
    PerformedAction,
    RepairJob,
    RepairOutcome,
    RepairRefused,
    RepairTicket,
)
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.topology import RepairAction, Topology, VnfSpec
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock
from nfvha.util.tasks import background
from nfvha.wire.frames import CommandOp, Reply

log = logging.getLogger(__name__)

RepairState = Literal["ok", "awaiting-confirmation", "repairing", "repair-failed", "gave-up"]
Publish = Callable[[list[Event]], Awaitable[object]]


def _performed(action: RepairAction | None) -> PerformedAction | None:
    """The repair a configured action does by itself; None: it waits to be asked."""
    if action == "restart-initial" or action == "restart-snapshot" \
            or action == "failover-standby-vm":
        return action
    return None


class AgentPort(Protocol):
    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply: ...


class VmRepairStatus(BaseModel):
    vm: str
    host: str
    vnfs: list[str]
    repair_action: RepairAction | None  # None: no VNF runs there
    role: Literal["serving", "standby"]
    standby: str | None  # the other VM of a failover pair
    state: RepairState
    failure_event: int | None  # the failure not yet repaired
    last_snapshot: dict[str, Any] | None
    last_repair: RepairOutcome | None


@dataclass
class _Vm:
    name: str
    vnfs: list[VnfSpec]
    partner: str | None  # the other VM of a failover pair
    serving: bool  # False: the cold standby of its partner
    failure: int | None = None  # id of the last failure event
    failure_kind: Literal["crash", "hang"] | None = None
    repaired: int = 0  # failure events up to this id are over
    job: RepairJob | None = None
    last: RepairOutcome | None = None
    last_snapshot: dict[str, Any] | None = None
    snapshot_due_ns: int = 0
    auto_repairs: deque[int] = field(default_factory=deque)
    gave_up: bool = False

    @property
    def action(self) -> RepairAction | None:
        return self.vnfs[0].repair_action if self.vnfs else None  # one per VM: topology

    @property
    def pending(self) -> bool:
        return self.failure is not None and self.failure > self.repaired


class VmRepairPolicy:
    def __init__(self, topology: Topology, agents: AgentPort, publish: Publish | None,
                 clock: Clock, *, host_of: Callable[[str], str] | None = None,
                 host_up: Callable[[str], bool] | None = None,
                 snapshot_interval_s: float = 60.0, tick_s: float = 1.0,
                 command_timeout_s: float = 20.0, max_auto_repairs: int = 3,
                 auto_repair_window_s: float = 300.0) -> None:
        """``host_of``: where a VM runs now (it may have been evacuated); by default
        where the topology puts it. ``host_up``: whether a host can start a VM now (a
        failover to a standby on a host that cannot restarts the VM where it is
        instead); by default every host can. ``max_auto_repairs`` within
        ``auto_repair_window_s``: how often a VM is repaired without anyone asking
        before the policy gives up on it (one that crashes at every boot must not be
        restarted forever). Events from a host a VM has left must be filtered out
        before ``on_events``."""
        self._agents = agents
        placed = {v.name: v.host for v in topology.vms}
        self.host_of: Callable[[str], str] = host_of or placed.__getitem__
        self._host_up: Callable[[str], bool] = host_up or (lambda _host: True)
        self._publish = publish
        self._clock = clock
        self._snapshot_ns = int(snapshot_interval_s * 1e9)
        self._tick_s = tick_s
        self._timeout_s = command_timeout_s
        self._max_auto = max_auto_repairs
        self._window_ns = int(auto_repair_window_s * 1e9)
        partner = {v.standby_for: v.name for v in topology.vms if v.standby_for}
        partner.update({v.name: v.standby_for for v in topology.vms if v.standby_for})
        due = clock.mono_ns() + self._snapshot_ns
        self._vms: dict[str, _Vm] = {}
        for vm in topology.vms:
            runs = vm.standby_for or vm.name
            vnfs: list[VnfSpec] = []
            for vnf, _ in topology.components_on(runs):
                if vnf not in vnfs:
                    vnfs.append(vnf)
            self._vms[vm.name] = _Vm(vm.name, vnfs, partner.get(vm.name),
                                     serving=vm.standby_for is None, snapshot_due_ns=due)
        # The VMs periodic snapshots are for (their VNFs never change): the tick looks
        # at these, not at every VM of the deployment.
        self._snapshotted = [st for st in self._vms.values()
                             if st.action == "restart-snapshot"]

    # -- what the API and the VNFM see ------------------------------------------------
    def status(self) -> list[VmRepairStatus]:
        return [self._status(st) for st in self._vms.values()]

    def status_of(self, vm: str) -> VmRepairStatus:
        return self._status(self._vm(vm))

    def job(self, vm: str) -> RepairJob | None:
        """The repair of ``vm`` under way, if any."""
        return self._vm(vm).job

    def serving_vm(self, vm: str) -> str:
        """The VM that runs ``vm``'s VNFCs now: itself, or its standby after a failover."""
        st = self._vm(vm)
        return st.name if st.serving or st.partner is None else st.partner

    def _status(self, st: _Vm) -> VmRepairStatus:
        state: RepairState
        if st.job is not None:
            state = "repairing"
        elif st.gave_up:
            state = "gave-up"
        elif st.pending and st.last is not None and not st.last.ok:
            state = "repair-failed"
        elif st.pending:
            state = "awaiting-confirmation"
        else:
            state = "ok"
        return VmRepairStatus(
            vm=st.name, host=self.host_of(st.name), vnfs=[v.name for v in st.vnfs],
            repair_action=st.action, role="serving" if st.serving else "standby",
            standby=st.partner, state=state, failure_event=st.failure if st.pending else None,
            last_snapshot=st.last_snapshot, last_repair=st.last)

    def _vm(self, vm: str) -> _Vm:
        try:
            return self._vms[vm]
        except KeyError:
            raise KeyError(f"no VM named '{vm}'") from None

    # -- failures ---------------------------------------------------------------------
    def on_events(self, events: Sequence[StoredEvent]) -> None:
        for ev in events:
            kind, name = ev.entity.partition("/")[::2]
            st = self._vms.get(name) if kind == "vm" else None
            if st is None:
                continue
            if ev.kind in (Kind.VM_CRASHED, Kind.VM_HUNG):
                self._failed(st, ev)
            elif ev.kind in (Kind.VM_STARTED, Kind.VM_RESPONSIVE) and st.job is None \
                    and st.pending and ev.id > (st.failure or 0):
                log.info("VM %s runs again (%s): its failure is over", name, ev.kind)
                st.repaired = st.failure or 0
                st.gave_up = False

    def _failed(self, st: _Vm, ev: StoredEvent) -> None:
        if not st.serving:
            log.warning("VM %s failed while it is the standby of %s: nothing to repair",
                        st.name, st.partner)
            return
        st.failure = ev.id
        st.failure_kind = "crash" if ev.kind == Kind.VM_CRASHED else "hang"
        if st.job is not None:
            return  # the repair under way looks again when it is done
        if st.action in (None, "confirm"):
            log.info("VM %s %s: repaired when its VNF's manager asks (confirm)", st.name,
                     st.failure_kind)
            return
        self._auto(st)

    def _auto(self, st: _Vm) -> None:
        now = self._clock.mono_ns()
        while st.auto_repairs and now - st.auto_repairs[0] > self._window_ns:
            st.auto_repairs.popleft()
        if len(st.auto_repairs) >= self._max_auto:
            if not st.gave_up:
                st.gave_up = True
                log.error("VM %s failed again after %d repairs within %.0f s: not repairing it"
                          " any more without an ask", st.name, len(st.auto_repairs),
                          self._window_ns / 1e9)
            return
        st.auto_repairs.append(now)
        chosen = _performed(st.action)
        assert chosen is not None
        self._start(st, chosen, "policy", None)

    # -- asks ---------------------------------------------------------------------------
    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None,
                  action: PerformedAction | None = None, stop_first: bool | None = None
                  ) -> RepairTicket:
        """The VNF's manager (or the generic VNFM, or an operator) asks for a repair of
        ``vm``; ``failure`` names the failure event it is about, if any (without one,
        a running VM is replaced). ``action``: how, instead of the configured one.
        ``stop_first``: None decides by the failure (a crashed VM is not stopped: one
        started again meanwhile must not be). Raises RepairRefused, KeyError."""
        st = self._vm(vm)
        if st.job is not None:
            return RepairTicket("joined", st.job)
        if failure is not None and failure <= st.repaired:
            return RepairTicket("resolved", None, st.last)
        if not st.serving:
            raise RepairRefused(f"VM {vm} is the standby of {st.partner}: it runs nothing"
                                " to repair")
        chosen: PerformedAction = action or _performed(st.action) or "restart-initial"
        if chosen == "failover-standby-vm" and st.partner is None:
            raise RepairRefused(f"VM {vm} has no standby VM (standby_for: {vm})")
        st.gave_up = False  # an ask overrides giving up
        return RepairTicket("started", self._start(st, chosen, requested_by, stop_first))

    def _start(self, st: _Vm, action: PerformedAction, requested_by: str,
               stop_first: bool | None) -> RepairJob:
        cover = st.failure if st.pending else None
        if stop_first is None:
            stop_first = not (cover is not None and st.failure_kind == "crash")
        job = RepairJob(st.name, action, requested_by, stop_first)
        st.job = job
        log.info("repairing VM %s: %s (asked by %s%s)", st.name, action, requested_by,
                 f", failure event {cover}" if cover else "")
        background(self._run(st, job, cover), name=f"repair-{st.name}")
        return job

    async def _run(self, st: _Vm, job: RepairJob, cover: int | None) -> None:
        t0_wall, t0_ns = self._clock.wall(), self._clock.mono_ns()
        target = st if job.action != "failover-standby-vm" else self._vms[st.partner or ""]
        fallback = None
        if target is not st and not self._host_up(self.host_of(target.name)):
            # HV-7: the VNF keeps its VM where it was rather than none at all.
            fallback = (f"standby VM {target.name}'s host {self.host_of(target.name)} is"
                        " down: restarted in place, in its initial state")
            target = st
        result: dict[str, Any] = {}
        error: str | None = None
        try:
            if job.stop_first:
                await self._command(self.host_of(st.name), "vm.stop", st.name)
            # Not when the stop failed: a hung VM that could not be killed may thaw.
            job.mark_stopped()
            disk = "snapshot" if job.action == "restart-snapshot" else "initial"
            result = await self._command(self.host_of(target.name), "vm.start", target.name,
                                         {"disk": disk})
        except Exception as e:  # a repair always ends with an outcome, never stuck
            error = str(e) or type(e).__name__
        outcome = RepairOutcome(
            vm=st.name, action=job.action, requested_by=job.requested_by, failure_event=cover,
            stopped_first=job.stop_first, replacement=target.name,
            replacement_host=self.host_of(target.name), replacement_address=result.get("data_ip"),
            disk=result.get("disk"), fallback=fallback, ok=error is None, error=error,
            started_time=t0_wall,
            duration_ms=(self._clock.mono_ns() - t0_ns) / 1e6)
        if error is None:
            st.repaired = max(st.repaired, cover or 0)
            if target is not st:
                st.serving, target.serving = False, True
                target.failure, target.failure_kind = None, None
                target.snapshot_due_ns = self._clock.mono_ns() + self._snapshot_ns
            log.info("VM %s repaired: %s -> %s on %s in %.0f ms", st.name, job.action,
                     target.name, outcome.replacement_host, outcome.duration_ms)
        else:
            log.error("repair of VM %s (%s) failed: %s", st.name, job.action, error)
        st.job = None
        st.last = outcome
        await self._announce(st, outcome)
        job.resolve(outcome)
        newer = st.failure is not None and st.failure > max(cover or 0, st.repaired)
        if newer and st.serving and st.action not in (None, "confirm"):
            self._auto(st)  # it failed again while being repaired (the budget bounds this)

    async def _announce(self, st: _Vm, o: RepairOutcome) -> None:
        if self._publish is None:
            return
        if o.ok:
            how = (f"failed over to standby VM {o.replacement} on {o.replacement_host}"
                   if o.replacement != o.vm else
                   "restarted from its last snapshot" if o.disk and o.disk.get("snapshot")
                   else "restarted in its initial state")
            desc = f"VM {o.vm} repaired ({o.action}, asked by {o.requested_by}): {how}"
        else:
            desc = f"repair of VM {o.vm} ({o.action}) failed: {o.error}"
        if o.fallback:
            desc += f" ({o.fallback})"
        ev = Event(host=self.host_of(st.name), seq=0, origin="controller", kind=Kind.VM_REPAIRED,
                   entity=f"vm/{o.vm}",
                   severity=Severity.CLEARED if o.ok else Severity.INDETERMINATE,
                   event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-repair",
                   description=desc, clears=o.ok, informational=not o.ok,
                   event_time=self._clock.wall(), detected_mono_ns=self._clock.mono_ns(),
                   details=o.model_dump(mode="json"))
        try:
            await self._publish([ev])
        except StoreUnavailable:
            log.exception("could not store the outcome of the repair of VM %s", o.vm)

    # -- snapshots ------------------------------------------------------------------------
    async def snapshot(self, vm: str) -> dict[str, Any]:
        """Snapshot ``vm``'s disk now (it must be running). Raises RuntimeError,
        ConnectionError, TimeoutError, KeyError."""
        st = self._vm(vm)
        st.snapshot_due_ns = self._clock.mono_ns() + self._snapshot_ns
        result = await self._command(self.host_of(vm), "vm.snapshot", vm)
        st.last_snapshot = result.get("snapshot")
        return result

    async def tick(self) -> None:
        """Snapshot the serving VMs of restart-snapshot VNFs that are due."""
        now = self._clock.mono_ns()
        for st in self._snapshotted:
            if not st.serving or st.job is not None or st.pending \
                    or now < st.snapshot_due_ns:
                continue
            try:
                await self.snapshot(st.name)
            except (ConnectionError, TimeoutError, RuntimeError) as e:
                log.info("no periodic snapshot of VM %s: %s", st.name, e)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            await self.tick()

    # -- agent commands -----------------------------------------------------------------
    async def _command(self, host: str, op: CommandOp, target: str,
                       args: dict[str, object] | None = None) -> dict[str, Any]:
        reply = await self._agents.command(host, op, target, args, timeout_s=self._timeout_s)
        if not reply.ok:
            raise RuntimeError(f"{op} {target} on {host}: {reply.error}")
        return reply.result
