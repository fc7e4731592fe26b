"""The inventory as the API shows it: topology (what should exist) merged with
what the agents report and what the controller knows about host liveness."""

from __future__ import annotations

from pydantic import BaseModel

from nfvha.controller.agents import AgentServer
from nfvha.controller.liveness import HostLiveness, HostState
from nfvha.model.topology import Topology
from nfvha.util.clock import Clock
from nfvha.wire.frames import ProcessInfo


class AgentView(BaseModel):
    connected: bool
    pid: int | None = None
    incarnation: str | None = None
    connected_time: float | None = None
    lost_time: float | None = None


class HostView(BaseModel):
    name: str
    state: HostState
    reason: str
    last_heartbeat_ms_ago: int | None
    agent: AgentView
    processes: list[ProcessInfo]
    links: dict[str, bool]
    sensors: dict[str, float]


class VmView(BaseModel):
    name: str
    host: str
    state: str
    pid: int | None = None
    since: float | None = None
    memory_bytes: int | None = None
    cpu_usage_ns: int | None = None


class VnfcView(BaseModel):
    name: str
    vnf: str
    vm: str
    host: str
    state: str
    pid: int | None = None
    since: float | None = None


class StatusView(BaseModel):
    run_id: str
    hosts: list[HostView]
    vms: list[VmView]
    vnfcs: list[VnfcView]
    last_event_id: int


class InventoryView:
    def __init__(self, topology: Topology, agents: AgentServer, liveness: HostLiveness,
                 clock: Clock) -> None:
        self._t = topology
        self._agents = agents
        self._liveness = liveness
        self._clock = clock

    def hosts(self) -> list[HostView]:
        now = self._clock.mono_ns()
        out = []
        for name in self._t.host_names():
            rec = self._liveness.state(name)
            s = self._agents.sessions.get(name)
            inv = self._agents.inventories.get(name)
            out.append(HostView(
                name=name, state=rec.state, reason=rec.reason,
                last_heartbeat_ms_ago=(now - rec.last_hb_mono_ns) // 1_000_000
                if rec.boot is not None else None,  # never heard of: no heartbeat age
                agent=AgentView(
                    connected=s is not None,
                    pid=s.hello.agent_pid if s else None,
                    incarnation=s.hello.incarnation if s else None,
                    connected_time=s.connected_time if s else None,
                    lost_time=self._agents.agent_lost.get(name),
                ),
                processes=inv.processes if inv else [],
                links=inv.links if inv else {},
                sensors=inv.sensors if inv else {},
            ))
        return out

    def _unreported(self, host: str) -> str:
        rec = self._liveness.state(host)
        if rec.state == HostState.DOWN:
            return "lost (host down)"
        if host not in self._agents.sessions:
            return "unknown (no agent)"
        return "unknown"

    def vms(self) -> list[VmView]:
        out = []
        for vm in self._t.vms:
            inv = self._agents.inventories.get(vm.host)
            info = next((v for v in inv.vms if v.name == vm.name), None) if inv else None
            if info is None:
                out.append(VmView(name=vm.name, host=vm.host, state=self._unreported(vm.host)))
            else:
                out.append(VmView(host=vm.host, **info.model_dump()))
        return out

    def vnfcs(self) -> list[VnfcView]:
        out = []
        for vnf, comp in self._t.components():
            host = self._t.vm(comp.vm).host
            inv = self._agents.inventories.get(host)
            info = next((c for c in inv.vnfcs if c.name == comp.name), None) if inv else None
            if info is None:
                out.append(VnfcView(name=comp.name, vnf=vnf.name, vm=comp.vm, host=host,
                                    state=self._unreported(host)))
            else:
                out.append(VnfcView(vnf=vnf.name, host=host, **info.model_dump()))
        return out
