"""The generic availability manager's ``RepairPort`` inside the VIM: repairs through
the host agents' commands, VM repairs through the VM repair policy (ADR 0010)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from nfvha.amf.ports import RepairTicket
from nfvha.controller.vmrepair import VmRepairPolicy
from nfvha.wire.frames import CommandOp, Reply


class AgentCommands(Protocol):
    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply: ...


class AgentRepair:
    """Repairs through the host agents: restart a VNFC; restart a VM in its initial
    state (VNFHA-13) - stopped first, so a VM escalated to while still running is
    really replaced."""

    def __init__(self, agents: AgentCommands, timeout_s: float = 20.0, *,
                 vm_repair: VmRepairPolicy | None = None) -> None:
        self._agents = agents
        self._timeout_s = timeout_s
        self._vm_repair = vm_repair

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        """VM repairs are the repair policy's (ADR 0010), whoever asks."""
        if self._vm_repair is None:
            raise RuntimeError("no VM repair policy")
        return self._vm_repair.repair_vm(vm, requested_by=requested_by, failure=failure)

    async def restart_component(self, host: str, vnfc: str) -> None:
        await self._command(host, "vnfc.start", vnfc)

    async def kill_and_restart_component(self, host: str, vnfc: str,
                                         poll_s: float = 0.02) -> None:
        """Restart a VNFC that may still run (hung): ``vnfc.start`` leaves a live process
        alone, so SIGKILL it first, then start it once the agent has seen it exit."""
        reply = await self._agents.command(host, "vnfc.stop", vnfc, {"signal": "KILL"},
                                           timeout_s=self._timeout_s)
        if not reply.ok:
            raise RuntimeError(f"vnfc.stop {vnfc} on {host}: {reply.error}")
        for _ in range(max(1, int(self._timeout_s / poll_s))):
            reply = await self._agents.command(host, "vnfc.start", vnfc,
                                               timeout_s=self._timeout_s)
            if not reply.ok:
                raise RuntimeError(f"vnfc.start {vnfc} on {host}: {reply.error}")
            if not reply.result.get("already"):
                return
            await asyncio.sleep(poll_s)  # the agent has not seen the exit yet
        raise RuntimeError(f"{vnfc} on {host} still runs {self._timeout_s:g} s after SIGKILL")

    async def stop_vm(self, vm: str, host: str) -> None:
        await self._command(host, "vm.stop", vm)

    async def start_vm(self, vm: str, host: str) -> None:
        await self._command(host, "vm.start", vm)

    async def _command(self, host: str, op: CommandOp, target: str) -> None:
        reply = await self._agents.command(host, op, target, timeout_s=self._timeout_s)
        if not reply.ok:
            raise RuntimeError(f"{op} {target} on {host}: {reply.error}")
