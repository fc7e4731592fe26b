"""Repair after the failover (UC-1, UC-5, UC-9): failures counted by the escalation
tracker, the recommendation carried out through the VIM's ``RepairPort``.

Repairs run in the background, one per component or VM at a time, and only while
this manager may decide (the leader gate, ADR 0013). A component is restarted (killed
first when it may still run); escalated, its VM is repaired - asking the VIM first
whether it repairs the VM's host instead (UC-9: several of the host's VMs failed) -
and beyond that the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from nfvha.amf.escalation import EscalationTracker
from nfvha.amf.manager.readiness import Life, ReadinessTracker
from nfvha.amf.manager.roster import Roster
from nfvha.amf.model import Recommendation
from nfvha.amf.ports import RepairPort, RepairRefused, VimRepairHook
from nfvha.util.clock import Clock
from nfvha.util.tasks import background

log = logging.getLogger(__name__)


class Repairs:
    def __init__(self, roster: Roster, readiness: ReadinessTracker, port: RepairPort,
                 clock: Clock, *, allowed: Callable[[], bool]) -> None:
        self._roster = roster
        self._readiness = readiness
        self._port = port
        self._allowed = allowed
        self._escalation = {g.name: EscalationTracker(g.escalation, clock)
                            for g in roster.groups.values()}
        self._repairing: set[str] = set()  # VMs ("vm/<name>") and VNFCs under repair
        self._host_repair: VimRepairHook | None = None

    def tracker(self, vnf: str) -> EscalationTracker:
        return self._escalation[vnf]

    def under_way(self, key: str) -> bool:
        """Whether a repair of ``key`` (a VNFC, or ``vm/<name>``) is under way."""
        return key in self._repairing

    def use_host_repair(self, hook: VimRepairHook) -> None:
        """VM repair requests of the escalation go to the VIM first (UC-9)."""
        self._host_repair = hook

    # -- components ---------------------------------------------------------------------
    def restart(self, su: str) -> None:
        """Start ``su`` again (harmless if it runs: the VIM leaves a live one alone)."""
        ep = self._roster.endpoint[su]
        self._run(su, self._port.restart_component(ep.host, su))

    def component_failed(self, su: str, *, alive: bool = False) -> None:
        """Count a failure of ``su`` and repair it as the escalation recommends.
        ``alive``: it may still run (hung), so a restart kills it first."""
        if not self._allowed():  # leader gate (ADR 0013)
            return
        vnf = self._roster.group_of[su]
        ep = self._roster.endpoint[su]
        rec = self._escalation[vnf].record_component_failure(
            su, ep.vm, has_standby=self._roster.groups[vnf].standbys_per_si > 0)
        if rec in (Recommendation.COMPONENT_RESTART, Recommendation.COMPONENT_FAILOVER):
            restart = (self._port.kill_and_restart_component if alive
                       else self._port.restart_component)
            self._run(su, restart(ep.host, su))
            return
        if rec is Recommendation.NODE_FAILOVER:
            log.warning("%s failed too often: escalating to a repair of VM %s", su, ep.vm)
        elif rec is not Recommendation.NODE_FAILFAST:
            return
        failfast = rec is Recommendation.NODE_FAILFAST
        if self._host_repair is None:
            self._vm_escalated(su, ep.vm, ep.host, failfast=failfast)
        else:
            self._run(f"escalation/{su}", self._ask_vim(self._host_repair, su, ep.vm, ep.host,
                                                        failfast=failfast))

    async def _ask_vim(self, hook: VimRepairHook, su: str, vm: str, host: str, *,
                       failfast: bool) -> None:
        if await hook(vm, f"vnfm escalation of {su}", failfast):
            # UC-9: several of its host's VMs reported; the host is repaired.
            if failfast:
                log.warning("%s: VM %s failed too often on host %s: the VIM repairs the"
                            " host", su, vm, host)
            return
        self._vm_escalated(su, vm, host, failfast=failfast)

    def _vm_escalated(self, su: str, vm: str, host: str, *, failfast: bool) -> None:
        if failfast:
            log.error("%s: VM %s failed too often on host %s; no host repair available"
                      " (no fence device), repairing the VM", su, vm, host)
        self.repair_vm(vm)

    # -- VMs ------------------------------------------------------------------------------
    def repair_vm(self, vm: str, *, failure: int | None = None,
                  lives: Mapping[str, Life | None] | None = None) -> None:
        """Ask the VIM's repair policy (ADR 0010) to repair the VM (``failure``: the
        event it failed with): it applies the VNF's repair_action and is the only one
        that repairs VMs - asked about a failure it is already repairing, it joins that
        repair (VNFHA-10). Once the VM is known not to run (a hung or running one is
        stopped first), its SUs are confirmed out of service (``lives``: the lives that
        failed with it, where known); after a failover to a standby VM they live there."""
        failed = lives or {}

        def stopped() -> None:
            for su in self._roster.sus_on_vm(vm):
                self._readiness.out_of_service(su, f"VM {vm} stopped", life=failed.get(su))

        if not self._allowed():  # leader gate (ADR 0013)
            return
        try:
            ticket = self._port.repair_vm(vm, requested_by="vnfm", failure=failure)
        except (RepairRefused, KeyError, RuntimeError) as e:
            log.error("VM %s cannot be repaired: %s", vm, e)
            return
        job = ticket.job
        if job is None:
            return  # that failure is over already
        job.when_stopped(stopped)

        async def repair() -> None:
            done = await job.outcome()
            if not done.ok:
                raise RuntimeError(done.error)
            if done.replacement != vm:
                self._roster.vm_replaced(vm, done.replacement, done.replacement_host,
                                         done.replacement_address)

        self._run(f"vm/{vm}", repair())

    def _run(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        if key in self._repairing or not self._allowed():  # leader gate
            work.close()
            return
        self._repairing.add(key)

        async def run() -> None:
            try:
                await work
            except Exception as e:
                log.error("repair of %s failed: %s", key, e)
            finally:
                self._repairing.discard(key)

        background(run())
