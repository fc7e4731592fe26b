"""Host repair by the VIM: fence, then evacuate (REC-1, HV-7), and UC-9's VIM side.

Two ways in:
- a host is confirmed down (``host.down``): it is fenced - powered off and verified
  off by its fence device - and only then are its VMs re-created on surviving hosts
  that keep their VNFs' anti-affinity;
- VM repair requests (the VNFM's escalation, ``POST /v1/vms/{vm}/repair``) are
  correlated per host (``correlator``); when several VMs of one host are reported, or
  the escalation says ``node-failfast``, the host is repaired instead of each VM:
  fenced, evacuated, and powered on again, empty.

A host without a fence device is never evacuated: it cannot be isolated, and a VM
started elsewhere while the old one may still run is two of it (ADR 0011).
Every step is an event in the log: ``host.repair_started``, ``host.fenced`` (or
``host.fence_failed``), ``vm.evacuated`` per VM.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nfvha.agent.config import VmLaunch
from nfvha.controller.correlator import Correlation, RepairCorrelator, Verdict
from nfvha.controller.fencing import Fencing
from nfvha.controller.placement import Placement, choose_host
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology
from nfvha.nfvi.fence import FenceError
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock
from nfvha.util.tasks import background
from nfvha.wire.frames import CommandOp, Reply

log = logging.getLogger(__name__)


class AgentCommands(Protocol):
    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply: ...


PlacedListener = Callable[[str, str], None]  # (vm, host)


@dataclass
class HostRepairRecord:
    """One host repair, for the API and for tests."""

    host: str
    reason: str
    power_on: bool
    started_mono_ns: int
    fenced_mono_ns: int | None = None
    fence: str = ""
    moved: dict[str, str] = field(default_factory=dict)  # vm -> new host
    left: dict[str, str] = field(default_factory=dict)  # vm -> why it was not moved
    error: str | None = None
    powered_on: bool = False
    ended_mono_ns: int | None = None


class HostRepair:
    def __init__(self, topology: Topology, settings: Settings, clock: Clock,
                 fencing: Fencing, placement: Placement, agents: AgentCommands,
                 up_hosts: Callable[[], Iterable[str]],
                 publish: Callable[[list[Event]], Awaitable[object]],
                 launch: Mapping[str, VmLaunch] | None = None) -> None:
        self._topology = topology
        self._settings = settings
        self._clock = clock
        self.fencing = fencing
        self.placement = placement
        self._agents = agents
        self._up_hosts = up_hosts
        self._publish = publish
        self._launch = dict(launch or {})
        self.correlator = RepairCorrelator(settings, clock)
        self._listeners: list[PlacedListener] = []
        self._cold_standby: Callable[[str], bool] = lambda _vm: False
        self.history: list[HostRepairRecord] = []
        self._priority = {vm.name: max((v.priority for v, _ in topology.components_on(vm.name)),
                                       default=0) for vm in topology.vms}

    def on_placed(self, listener: PlacedListener) -> None:
        """``listener(vm, host)`` is called when a VM is placed on a new host, before it
        is started there (the VNFM moves its components' endpoints)."""
        self._listeners.append(listener)

    def use_cold_standby_check(self, check: Callable[[str], bool]) -> None:
        """``check(vm)``: the VM is the stopped standby of a failover pair (ADR 0010).
        Evacuation leaves such a VM alone: started, it would run its partner's VNFCs a
        second time."""
        self._cold_standby = check

    def host_of(self, vm: str) -> str:
        return self.placement.host_of(vm)

    # -- ways in -------------------------------------------------------------------
    def on_events(self, events: Iterable[StoredEvent]) -> None:
        for ev in events:
            # The VIM's own confirmation only (ADR 0004): a monitor's report (Masakari,
            # Doctor) is recorded and alarmed, but does not power a host off.
            if ev.kind is Kind.HOST_DOWN and ev.origin == "controller":
                self._host_down(ev.entity.partition("/")[2], ev)

    def _host_down(self, host: str, ev: StoredEvent) -> None:
        if not self._topology.has_host(host):
            return
        if self._caused_by_repair(host, ev.detected_mono_ns):
            return  # our own fencing, seen by the liveness check
        if not self.fencing.has_device(host):
            log.error("host %s is down but has no fence device: its VMs %s are not"
                      " evacuated (it cannot be isolated)", host,
                      self.placement.vms_on(host))
            return
        if self.correlator.begin(host):
            self._launch_repair(host, f"host down: {ev.description}", power_on=False)

    def vm_repair_requested(self, vm: str, source: str, *, failfast: bool = False
                            ) -> Correlation:
        """A request to repair ``vm``, counted against its host (UC-9). With a
        ``repair-host`` verdict the host repair has started, and the VM is repaired
        with it; ``repair-vm``: the requester repairs the VM itself."""
        host = self.placement.host_of(vm)
        if not self.fencing.has_device(host):
            return Correlation(Verdict.REPAIR_VM, host, (vm,),
                               f"host {host} has no fence device: no host repair")
        c = self.correlator.report(host, vm, source, failfast=failfast)
        if c.verdict is Verdict.REPAIR_HOST:
            log.warning("repairing host %s instead of VM %s: %s", host, vm, c.reason)
            self._launch_repair(host, c.reason, power_on=self._settings.host_repair_power_on)
        return c

    def vnfm_hook(self, vm: str, source: str, failfast: bool) -> bool:
        """For the VNFM's escalation: True when the VIM repairs the host instead."""
        return self.vm_repair_requested(vm, source, failfast=failfast).verdict \
            is not Verdict.REPAIR_VM

    def _caused_by_repair(self, host: str, at_ns: int) -> bool:
        if self.correlator.repairing(host):
            return True
        return any(r.host == host and r.started_mono_ns <= at_ns
                   <= (r.ended_mono_ns or at_ns) for r in self.history)

    def _launch_repair(self, host: str, reason: str, *, power_on: bool) -> None:
        background(self.repair_host(host, reason, power_on=power_on))

    # -- the repair ----------------------------------------------------------------
    async def repair_host(self, host: str, reason: str, *, power_on: bool
                          ) -> HostRepairRecord:
        """Fence ``host``, re-create its VMs elsewhere, optionally power it on again.
        The caller has marked the host as being repaired in the correlator."""
        rec = HostRepairRecord(host, reason, power_on, self._clock.mono_ns())
        self.history.append(rec)
        try:
            await self._emit(Kind.HOST_REPAIR_STARTED, f"host/{host}", host,
                             f"host repair of {host}: {reason}", informational=True,
                             details={"reason": reason, "vms": self.placement.vms_on(host)})
            try:
                rec.fence = await self.fencing.fence_off(host)
            except FenceError as e:
                rec.error = str(e)
                log.error("fencing %s failed; its VMs stay where they are: %s", host, e)
                await self._emit(Kind.HOST_FENCE_FAILED, f"host/{host}", host,
                                 f"host {host} could not be fenced: {e}",
                                 severity=Severity.CRITICAL, details={"error": str(e)})
                return rec
            rec.fenced_mono_ns = self._clock.mono_ns()
            # Published (stored, and the VNFM told) before anything of the host is
            # started anywhere else: REC-1's order, visible in the event log.
            await self._emit(Kind.HOST_FENCED, f"host/{host}", host,
                             f"host {host} fenced: power off verified ({rec.fence})",
                             informational=True,
                             details={"device": rec.fence, "verified": "off",
                                      "fenced_mono_ns": rec.fenced_mono_ns})
            await self._evacuate(host, rec)
            if power_on:
                try:
                    await self.fencing.power_on(host)
                    rec.powered_on = True
                except FenceError as e:
                    log.error("powering %s on again failed: %s", host, e)
                else:
                    await self._start_left(host, rec)
            return rec
        except Exception as e:
            rec.error = f"{type(e).__name__}: {e}"
            log.exception("host repair of %s failed", host)
            return rec
        finally:
            rec.ended_mono_ns = self._clock.mono_ns()
            self.correlator.done(host)

    async def _evacuate(self, host: str, rec: HostRepairRecord) -> None:
        vms = sorted(self.placement.vms_on(host), key=lambda v: (-self._priority[v], v))
        survivors = [h for h in self._up_hosts() if h != host]
        starts: list[tuple[str, str]] = []
        planned = self.placement.as_dict()  # with each choice made so far
        for vm in vms:
            if self._cold_standby(vm):
                rec.left[vm] = "cold standby VM of a failover pair: stays stopped"
                continue
            target = choose_host(self._topology, vm, planned, survivors)
            if target is None:
                rec.left[vm] = ("no surviving host keeps its anti-affinity" if survivors
                                else "no surviving host")
                log.error("VM %s of %s not evacuated: %s", vm, host, rec.left[vm])
                continue
            planned[vm] = target
            starts.append((vm, target))
        # Persisted in one write (not one of the whole placement per VM), then told,
        # all before anything is started.
        if starts:
            self.placement.move_all(dict(starts))
        for vm, target in starts:
            for listener in self._listeners:
                listener(vm, target)
        results = await asyncio.gather(*(self._start(vm, target, host)
                                         for vm, target in starts))
        for (vm, target), error in zip(starts, results, strict=True):
            if error is None:
                rec.moved[vm] = target
            else:
                rec.left[vm] = error

    async def _start_left(self, host: str, rec: HostRepairRecord) -> None:
        """The VMs no other host could take (anti-affinity) start again on the repaired
        host once its agent is back (HV-7): the host came back empty otherwise."""
        left = [vm for vm in rec.left if self.placement.host_of(vm) == host
                and not self._cold_standby(vm)]
        deadline = self._clock.mono_ns() + int(self._settings.evacuate_vm_timeout_s * 1e9)
        for vm in left:
            while True:
                try:
                    reply = await self._agents.command(
                        host, "vm.start", vm, timeout_s=self._settings.evacuate_vm_timeout_s)
                except (ConnectionError, TimeoutError) as e:
                    error = f"{e or type(e).__name__}"
                else:
                    if reply.ok:
                        rec.left.pop(vm, None)
                        rec.moved[vm] = host
                        break
                    error = str(reply.error)
                if self._clock.mono_ns() > deadline:
                    log.error("VM %s not started again on the repaired host %s: %s",
                              vm, host, error)
                    break
                await asyncio.sleep(0.2)  # its agent is still booting

    async def _start(self, vm: str, target: str, old: str) -> str | None:
        args: dict[str, object] = {}
        if vm in self._launch:
            args["spec"] = self._launch[vm].model_dump(mode="json")
        error: str | None = None
        try:
            reply = await self._agents.command(target, "vm.start", vm, args,
                                               timeout_s=self._settings.evacuate_vm_timeout_s)
        except (ConnectionError, TimeoutError) as e:
            error = f"start on {target}: {e or type(e).__name__}"
        else:
            if not reply.ok:
                error = f"start on {target}: {reply.error}"
        if error is not None:
            log.error("VM %s of %s: %s", vm, old, error)
        await self._emit(Kind.VM_EVACUATED, f"vm/{vm}", target,
                         f"VM {vm} re-created on {target} (host {old} fenced)"
                         + (f"; {error}" if error else ""),
                         informational=True,
                         details={"from": old, "to": target, "error": error})
        return error

    async def _emit(self, kind: Kind, entity: str, host: str, description: str, *,
                    severity: Severity = Severity.INDETERMINATE, informational: bool = False,
                    details: dict[str, Any] | None = None) -> None:
        ev = Event(host=host, seq=0, origin="controller", kind=kind, entity=entity,
                   severity=severity,
                   event_type=EventType.PROCESSING_ERROR_ALARM if entity.startswith("vm/")
                   else EventType.EQUIPMENT_ALARM,
                   probable_cause="host-repair", description=description,
                   informational=informational, event_time=self._clock.wall(),
                   detected_mono_ns=self._clock.mono_ns(), details=details or {})
        try:
            await self._publish([ev])
        except StoreUnavailable:
            log.exception("could not store %s for %s", kind.value, entity)
