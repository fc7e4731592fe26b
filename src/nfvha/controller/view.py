"""The inventory as the API shows it: topology (what should exist) merged with
what the agents report and what the controller knows about host liveness.

Every listing is a page (``offset``, ``limit``) in topology order, and each item is
looked up by name (the topology's and the agents' inventories are indexed), so a page
costs what it holds, not what the deployment holds. The status is a summary: counts
per state and the first few of what is not healthy; only the summary walks every
item, without building a view of the healthy ones. Reads are point lookups into
dicts the event loop replaces or updates one key at a time, never iterations over
them, so a summary may be built in a worker thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from pydantic import BaseModel

from nfvha.controller.agents import AgentServer
from nfvha.controller.hoststates import HostStates
from nfvha.model.hosts import HostState
from nfvha.model.topology import ComponentSpec, Topology, VmSpec, VnfSpec
from nfvha.util.clock import Clock
from nfvha.wire.frames import ProcessInfo, VmInfo, VnfcInfo


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
    # What runs the VM (ADR 0019): as its agent reports it; for a VM not reported, what
    # its host runs per the topology.
    hypervisor: str = "process"


class VnfcView(BaseModel):
    name: str
    vnf: str
    vm: str
    host: str
    state: str
    pid: int | None = None
    since: float | None = None


class KindSummary(BaseModel):
    total: int
    by_state: dict[str, int]  # e.g. {"running": 1998, "crashed": 2}
    not_healthy: int


class NotHealthy(BaseModel):
    """The first ``limit`` of each kind that is not healthy, in topology order: a host
    not up, without its agent, with a failed process or a link down; a VM or VNFC in
    any state but running or stopped (crashed, hung, exited, starting, not reported)."""

    limit: int
    hosts: list[HostView]
    vms: list[VmView]
    vnfcs: list[VnfcView]


class StatusView(BaseModel):
    """``GET /v1/status``: the deployment at a glance. The full lists are paged at
    ``/v1/hosts``, ``/v1/vms`` and ``/v1/vnfcs``."""

    run_id: str
    last_event_id: int
    hosts: KindSummary
    agents_connected: int
    vms: KindSummary
    vnfcs: KindSummary
    not_healthy: NotHealthy


# A VM or VNFC in one of these states needs nobody's attention (a stopped one was
# stopped on purpose, or is a cold standby).
HEALTHY_STATES = frozenset({"running", "stopped"})

T = TypeVar("T")


def _page(items: Sequence[T], offset: int, limit: int | None) -> Sequence[T]:
    return items[offset:] if limit is None else items[offset:offset + limit]


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
        # The topology does not change: its listing order is taken once.
        self._host_names = topology.host_names()
        self._components = list(topology.components())
        self._standby = {v.standby_for: v.name for v in topology.vms if v.standby_for}

    # -- hosts ---------------------------------------------------------------------
    def host_count(self) -> int:
        return len(self._host_names)

    def host(self, name: str) -> HostView | None:
        return self._host_view(name, self._heartbeat_ages()) if self._t.has_host(name) \
            else None

    def hosts(self, offset: int = 0, limit: int | None = None) -> list[HostView]:
        ages = self._heartbeat_ages()
        return [self._host_view(n, ages) for n in _page(self._host_names, offset, limit)]

    def _host_view(self, name: str, ages: Mapping[str, int | None]) -> HostView:
        rec = self._liveness.state(name)
        s = self._agents.sessions.get(name)
        inv = self._agents.inventories.get(name)
        return HostView(
            name=name, state=rec.state, reason=rec.reason,
            last_heartbeat_ms_ago=ages.get(name),  # None: never heard of
            agent=AgentView(
                connected=s is not None,
                pid=s.hello.agent_pid if s else None,
                incarnation=s.hello.incarnation if s else None,
                connected_time=s.connected_time if s else None,
                lost_time=self._agents.agent_lost.get(name),
            ),
            processes=inv.frame.processes if inv else [],
            links=inv.frame.links if inv else {},
            sensors=inv.frame.sensors if inv else {},
        )

    def _host_healthy(self, name: str) -> bool:
        if self._liveness.state(name).state != HostState.UP \
                or name not in self._agents.sessions:
            return False
        inv = self._agents.inventories.get(name)
        return inv is None or (all(p.state == "running" for p in inv.frame.processes)
                               and all(inv.frame.links.values()))

    def _unreported(self, host: str) -> str:
        rec = self._liveness.state(host)
        if rec.state == HostState.DOWN:
            return "lost (host down)"
        if host not in self._agents.sessions:
            return "unknown (no agent)"
        return "unknown"

    # -- VMs -------------------------------------------------------------------------
    def vm_specs(self, vnf: str | None = None) -> Sequence[VmSpec]:
        """Every VM, or those of VNF ``vnf`` (its components' VMs and their standby
        VMs), in topology order. KeyError: no such VNF."""
        if vnf is None:
            return self._t.vms
        names = {c.vm for c in self._t.vnf(vnf).components}
        names |= {self._standby[n] for n in names if n in self._standby}
        return sorted((self._t.vm(n) for n in names if self._has_vm(n)),
                      key=lambda v: self._t.vm_position(v.name))

    def _has_vm(self, name: str) -> bool:
        try:
            self._t.vm(name)
        except KeyError:
            return False
        return True

    def vms(self, offset: int = 0, limit: int | None = None, vnf: str | None = None
            ) -> list[VmView]:
        return [self._vm_view(vm) for vm in _page(self.vm_specs(vnf), offset, limit)]

    def _vm(self, vm: VmSpec) -> tuple[str, VmInfo | None]:
        host = self._host_of(vm.name)
        inv = self._agents.inventories.get(host)
        return host, inv.vm(vm.name) if inv else None

    def _vm_state(self, vm: VmSpec) -> str:
        host, info = self._vm(vm)
        return info.state if info is not None else self._unreported(host)

    def _vm_view(self, vm: VmSpec) -> VmView:
        host, info = self._vm(vm)
        if info is None:
            return VmView(name=vm.name, host=host, state=self._unreported(host),
                          hypervisor=self._hypervisor_of(host))
        return VmView(host=host, **info.model_dump())

    def _hypervisor_of(self, host: str) -> str:
        return self._t.hypervisor_of(host) if self._t.has_host(host) else "process"

    # -- VNFCs -----------------------------------------------------------------------
    def component_count(self) -> int:
        return len(self._components)

    def component_specs(self, vnf: str | None = None
                        ) -> Sequence[tuple[VnfSpec, ComponentSpec]]:
        """Every VNFC with its VNF, or those of ``vnf``. KeyError: no such VNF."""
        if vnf is None:
            return self._components
        spec = self._t.vnf(vnf)
        return [(spec, c) for c in spec.components]

    def vnfcs(self, offset: int = 0, limit: int | None = None, vnf: str | None = None
              ) -> list[VnfcView]:
        return [self._vnfc_view(v, c)
                for v, c in _page(self.component_specs(vnf), offset, limit)]

    def _vnfc(self, comp: ComponentSpec) -> tuple[str, VnfcInfo | None]:
        host = self._host_of(comp.vm)
        inv = self._agents.inventories.get(host)
        info = inv.vnfc(comp.name) if inv else None
        sb = self._standby.get(comp.vm)
        if sb is not None and (info is None or info.state != "running"):
            # After a failover (ADR 0010) it runs in the standby VM of its VM.
            sb_inv = self._agents.inventories.get(self._host_of(sb))
            got = next((c for c in sb_inv.vnfc_reports(comp.name)
                        if c.vm == sb and c.state == "running"), None) if sb_inv else None
            if got is not None:
                host, info = self._host_of(sb), got
        return host, info

    def _vnfc_state(self, comp: ComponentSpec) -> str:
        host, info = self._vnfc(comp)
        return info.state if info is not None else self._unreported(host)

    def _vnfc_view(self, vnf: VnfSpec, comp: ComponentSpec) -> VnfcView:
        host, info = self._vnfc(comp)
        if info is None:
            return VnfcView(name=comp.name, vnf=vnf.name, vm=comp.vm, host=host,
                            state=self._unreported(host))
        return VnfcView(vnf=vnf.name, host=host, **info.model_dump())

    # -- the summary -------------------------------------------------------------------
    def summary(self, run_id: str, last_event_id: int, limit: int) -> StatusView:
        """Counts per state of every host, VM and VNFC, and the first ``limit`` of each
        that is not healthy. One pass over the deployment; views are built only for
        what is listed."""
        ages = self._heartbeat_ages()
        host_states: Counter[str] = Counter()
        bad_hosts: list[str] = []
        connected = 0
        for name in self._host_names:
            host_states[self._liveness.state(name).state.value] += 1
            connected += name in self._agents.sessions
            if not self._host_healthy(name):
                bad_hosts.append(name)
        vm_states: Counter[str] = Counter()
        bad_vms: list[VmSpec] = []
        for vm in self._t.vms:
            state = self._vm_state(vm)
            vm_states[state] += 1
            if state not in HEALTHY_STATES:
                bad_vms.append(vm)
        vnfc_states: Counter[str] = Counter()
        bad_vnfcs: list[tuple[VnfSpec, ComponentSpec]] = []
        for vnf, comp in self._components:
            state = self._vnfc_state(comp)
            vnfc_states[state] += 1
            if state not in HEALTHY_STATES:
                bad_vnfcs.append((vnf, comp))
        return StatusView(
            run_id=run_id, last_event_id=last_event_id,
            hosts=KindSummary(total=len(self._host_names), by_state=dict(host_states),
                              not_healthy=len(bad_hosts)),
            agents_connected=connected,
            vms=KindSummary(total=len(self._t.vms), by_state=dict(vm_states),
                            not_healthy=len(bad_vms)),
            vnfcs=KindSummary(total=len(self._components), by_state=dict(vnfc_states),
                              not_healthy=len(bad_vnfcs)),
            not_healthy=NotHealthy(
                limit=limit,
                hosts=[self._host_view(n, ages) for n in bad_hosts[:limit]],
                vms=[self._vm_view(v) for v in bad_vms[:limit]],
                vnfcs=[self._vnfc_view(v, c) for v, c in bad_vnfcs[:limit]]))
