"""The inventory as the API shows it: topology (what should exist) merged with
what the agents report and what the controller knows about host liveness."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import BaseModel

from nfvha.controller.agents import AgentServer
from nfvha.controller.hoststates import HostStates
from nfvha.model.hosts import HostState
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
    def __init__(self, topology: Topology, agents: AgentServer, liveness: HostStates,
                 clock: Clock, host_of: Callable[[str], str] | None = None,
                 heartbeat_ages: Callable[[], Mapping[str, int | None]] | None = None
                 ) -> None:
        """``liveness``: the controller's mirror of the HA director's host states;
        ``heartbeat_ages``: ms since each host's last heartbeat, as the director last
        said (ADR 0014)."""
        self._t = topology
        # Where a VM runs now (it moves when its host is evacuated, ADR 0011).
        self._host_of = host_of or (lambda vm: topology.vm(vm).host)
        self._agents = agents
        self._liveness = liveness
        self._clock = clock
        self._heartbeat_ages = heartbeat_ages or dict

    def hosts(self) -> list[HostView]:
        ages = self._heartbeat_ages()
        out = []
        for name in self._t.host_names():
            rec = self._liveness.state(name)
            s = self._agents.sessions.get(name)
            inv = self._agents.inventories.get(name)
            out.append(HostView(
                name=name, state=rec.state, reason=rec.reason,
                last_heartbeat_ms_ago=ages.get(name),  # None: never heard of
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
            host = self._host_of(vm.name)
            inv = self._agents.inventories.get(host)
            info = next((v for v in inv.vms if v.name == vm.name), None) if inv else None
            if info is None:
                out.append(VmView(name=vm.name, host=host, state=self._unreported(host)))
            else:
                out.append(VmView(host=host, **info.model_dump()))
        return out

    def vnfcs(self) -> list[VnfcView]:
        out = []
        standby = {v.standby_for: v.name for v in self._t.vms if v.standby_for}
        for vnf, comp in self._t.components():
            host = self._host_of(comp.vm)
            inv = self._agents.inventories.get(host)
            info = next((c for c in inv.vnfcs if c.name == comp.name), None) if inv else None
            sb = standby.get(comp.vm)
            if sb is not None and (info is None or info.state != "running"):
                # After a failover (ADR 0010) it runs in the standby VM of its VM.
                sb_inv = self._agents.inventories.get(self._host_of(sb))
                got = next((c for c in sb_inv.vnfcs if c.name == comp.name and c.vm == sb
                            and c.state == "running"), None) if sb_inv else None
                if got is not None:
                    host, info = self._host_of(sb), got
            if info is None:
                out.append(VnfcView(name=comp.name, vnf=vnf.name, vm=comp.vm, host=host,
                                    state=self._unreported(host)))
            else:
                out.append(VnfcView(vnf=vnf.name, host=host, **info.model_dump()))
        return out
