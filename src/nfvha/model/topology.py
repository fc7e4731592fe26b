"""The deployment model: a YAML topology validated with pydantic.

Structural problems come from pydantic; cross-references (a VM on a host that
does not exist, a 2N VNF with three components, ...) are checked afterwards.
Every problem is reported with its path in the file, e.g.
``vnfs[1].components[0].vm: no VM named 'vm9'``, and nothing starts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import Field, ValidationError, model_validator

from nfvha.model.settings import Settings, Strict

Name = str  # validated by the pattern below
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
_FABRIC = ip_network("198.18.0.0/15")
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Redundancy = Literal["2n", "n+m", "n-way", "n-way-active", "none"]
StateKeeping = Literal["sync", "checkpoint", "none"]
RepairAction = Literal["confirm", "restart-initial", "restart-snapshot", "failover-standby-vm"]
AffinityLevel = Literal["host", "rack", "site", "none"]
# What runs a host's VMs (ADR 0019): ``process`` (a guest process in a cgroup and a
# network namespace of its own: fast, the default) or ``libvirt`` (a real QEMU guest of
# the host's private libvirtd, ADR 0018).
Hypervisor = Literal["process", "libvirt"]


class HostProcessSpec(Strict):
    """A process the host supervises: the stand-in for the vswitch / compute agents."""

    name: Name = Field(pattern=NAME_PATTERN)
    program: Literal["vswitch"] = "vswitch"
    port: int = Field(6000, ge=1024, le=65535)


def _default_host_processes() -> list[HostProcessSpec]:
    return [HostProcessSpec(name="vswitch")]


FENCE_AGENT_PATTERN = re.compile(r"^(/[^\s]+/)?fence_[A-Za-z0-9_]+$")
FENCE_OPTION_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Set by the driver itself (ADR 0011): an option naming them would be ignored or
# would fence the wrong node.
FENCE_RESERVED_OPTIONS = frozenset({"action", "option", "nodename"})


class FenceSpec(Strict):
    """How the VIM isolates a host (REC-1): ``local`` is the test bed's power device,
    ``agent`` a standard fence agent (``fence_*``, options on its stdin), ``none`` no
    fence device (a host then is never evacuated: it cannot be isolated)."""

    type: Literal["local", "agent", "none"] = "local"
    agent: str | None = Field(None, description="a fence_* name on PATH, or an absolute path")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout_s: float = Field(20.0, gt=0, le=600, description="time limit of one agent run")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "agent":
            if self.agent is None:
                raise ValueError("fence type 'agent' needs 'agent' (e.g. fence_ipmilan)")
            if not FENCE_AGENT_PATTERN.match(self.agent):
                raise ValueError(f"fence agent {self.agent!r}: not a fence_* executable name"
                                 " or an absolute path to one")
            for key, value in self.options.items():
                if not FENCE_OPTION_PATTERN.match(key):
                    raise ValueError(f"fence option {key!r}: lowercase letters, digits and _")
                if key in FENCE_RESERVED_OPTIONS:
                    raise ValueError(f"fence option {key!r} is set by nfvha itself")
                if isinstance(value, str) and ("\n" in value or "\r" in value):
                    raise ValueError(f"fence option {key!r}: no line breaks in a value")
        elif self.agent is not None or self.options:
            raise ValueError(f"fence type {self.type!r} takes no 'agent' or 'options'")
        return self


class HostSpec(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    processes: list[HostProcessSpec] = Field(default_factory=_default_host_processes)
    fence: FenceSpec = Field(default_factory=FenceSpec)
    # Per host, so a deployment mixes real guests with fast process VMs. A VM the VIM
    # moves (evacuation, ADR 0011) becomes a VM of its new host's kind.
    hypervisor: Hypervisor = "process"


class RackSpec(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    hosts: list[HostSpec] = Field(min_length=1)


class SiteSpec(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    racks: list[RackSpec] = Field(min_length=1)


class WatchdogSpec(Strict):
    """The VM's watchdog device (VNFHA-1): a VNFC arms it with its timeout and kicks
    it; when it runs out, the hypervisor does ``action``: ``reset`` the VM (it dies
    and boots again), ``poweroff`` (it dies; the VIM's repair policy follows) or
    ``none`` (the alarm only)."""

    action: Literal["reset", "poweroff", "none"] = "reset"


class VmSpec(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    host: Name
    cpu: float = Field(0.5, gt=0, le=64, description="CPU limit in cores")
    memory_mb: int = Field(256, ge=32, le=1_048_576)
    # How long the VM may take to boot (its guest up, its VNFCs launched). Hang
    # detection is armed only after boot; a VM still not up after this is reported as
    # failing to boot. Generous: a loaded host boots slowly, and real VMs take seconds.
    boot_timeout_s: float = Field(60.0, gt=0, le=3600)
    # A pre-provisioned standby (REC-2, ADR 0010): kept stopped, started with the VNFCs
    # of the VM named here when that one fails (its VNF's repair_action is
    # failover-standby-vm); the failed one becomes the standby.
    standby_for: Name | None = None
    watchdog: WatchdogSpec | None = None


class ComponentSpec(Strict):
    """A VNFC: one service process in a VM. ``lb``: a load balancer (IF-2), only in a
    VNF that ``balances`` another."""

    name: Name = Field(pattern=NAME_PATTERN)
    vm: Name
    program: Literal["counter", "lb"] = "counter"
    port: int = Field(7000, ge=1024, le=65535)
    # The sample counter arms its VM's watchdog with this timeout and kicks it (VNFHA-1).
    watchdog_ms: int | None = Field(None, ge=100, le=600_000)


class ServiceAddressSpec(Strict):
    kind: Literal["vip", "lb"]
    port: int = Field(ge=1024, le=65535)
    address: IPv4Address | None = None  # allocated from the fabric when absent


class EscalationStep(Strict):
    max: int = Field(ge=0, le=1000, description="failures tolerated within the probation time")
    probation_s: float = Field(gt=0, le=86_400)


class EscalationPolicy(Strict):
    """AMF-style: failures counted within a probation window; at max, one level up."""

    vnfc_restart: EscalationStep = EscalationStep(max=3, probation_s=60)
    vm_repair: EscalationStep = EscalationStep(max=2, probation_s=300)


# SAL-1: the recovery-time thresholds of service availability levels 1/2/3 (the lower
# end of each range, so "met" is never generous).
SAL_RECOVERY_MS: dict[int, float] = {1: 5_000.0, 2: 10_000.0, 3: 20_000.0}


class VnfSpec(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    redundancy: Redundancy
    active: int | None = Field(None, ge=1, le=1000, description="N of n+m")
    spare: int | None = Field(None, ge=1, le=1000, description="M of n+m")
    stateful: bool
    state: StateKeeping = "none"
    service_address: ServiceAddressSpec | None = None
    sal: Literal[1, 2, 3] = 2
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    repair_action: RepairAction = "confirm"
    # Who manages the VNF's availability: nfvha's generic VNFM in the controller;
    # "own": the VNF's own AM (nfvha.amf.own, the same engine over the VIM's API, one
    # per VNF; the test bed starts it); "none": nobody from nfvha (a VNF with an HA
    # manager of its own make). The VIM still detects, alarms and repairs VMs on
    # request for all of them.
    vnfm: Literal["generic", "own", "none"] = "generic"
    priority: int = Field(0, ge=0, le=1000)
    anti_affinity: AffinityLevel = "host"
    # IF-2: this VNF is the load balancer (program "lb", a 2N pair behind a VIP) of the
    # VNF named here, whose service address is of kind "lb"; its members are that
    # VNF's components.
    balances: Name | None = None
    components: list[ComponentSpec] = Field(min_length=1)


class Topology(Strict):
    name: Name = Field(pattern=NAME_PATTERN)
    settings: Settings = Field(default_factory=Settings)
    sites: list[SiteSpec] = Field(min_length=1)
    vms: list[VmSpec] = Field(default_factory=list)
    vnfs: list[VnfSpec] = Field(default_factory=list)

    # -- convenient views -------------------------------------------------
    # Lookups by name go through an index built once per topology (``_index``): a
    # deployment of thousands of hosts and tens of thousands of VMs is looked up per
    # VM and per VNFC at start-up, and a linear scan each time made that quadratic.
    def _index(self) -> _TopologyIndex:
        # Kept in the instance's __dict__ beside the fields (as functools.cached_property
        # would): pydantic ignores it in comparisons and dumps, and a frozen model allows
        # it. A copy with other lists (model_copy(update=...)) carries the old one along,
        # so it is valid only for the very lists it was built from.
        ix = self.__dict__.get(_INDEX_KEY)
        if not isinstance(ix, _TopologyIndex) or not ix.built_from(self):
            ix = _TopologyIndex(self)
            self.__dict__[_INDEX_KEY] = ix
        return ix

    def hosts(self) -> Iterator[tuple[SiteSpec, RackSpec, HostSpec]]:
        for site in self.sites:
            for rack in site.racks:
                for host in rack.hosts:
                    yield site, rack, host

    def host(self, name: str) -> HostSpec:
        return self._index().hosts[name]  # KeyError(name), as the scan raised

    def has_host(self, name: str) -> bool:
        return name in self._index().hosts

    def place(self, host: str) -> tuple[SiteSpec, RackSpec]:
        """The site and rack of ``host``; KeyError if there is no such host."""
        return self._index().places[host]

    def host_names(self) -> list[str]:
        return [h.name for _, _, h in self.hosts()]

    def hosts_with(self, hypervisor: Hypervisor) -> list[str]:
        """The hosts whose VMs ``hypervisor`` runs, in file order."""
        return [h.name for _, _, h in self.hosts() if h.hypervisor == hypervisor]

    def hypervisor_of(self, host: str) -> Hypervisor:
        """What runs ``host``'s VMs; KeyError if there is no such host."""
        return self.host(host).hypervisor

    def vm(self, name: str) -> VmSpec:
        return self._index().vms[name]

    def vm_position(self, name: str) -> int:
        """Where ``name`` is in ``vms`` (``vms.index(vm(name))``); KeyError if absent."""
        return self._index().vm_positions[name]

    def vms_on(self, host: str) -> list[VmSpec]:
        """The VMs the topology places on ``host``, in file order."""
        return list(self._index().vms_on.get(host, ()))

    def components(self) -> Iterator[tuple[VnfSpec, ComponentSpec]]:
        for vnf in self.vnfs:
            for c in vnf.components:
                yield vnf, c

    def component(self, name: str) -> tuple[VnfSpec, ComponentSpec]:
        """A VNFC and its VNF by the VNFC's name; KeyError if there is none."""
        return self._index().components[name]

    def components_on(self, vm: str) -> list[tuple[VnfSpec, ComponentSpec]]:
        return list(self._index().components_on.get(vm, ()))

    def vnf(self, name: str) -> VnfSpec:
        return self._index().vnfs[name]

    def balancer_of(self, vnf: str) -> VnfSpec | None:
        """The load-balancer VNF in front of ``vnf`` (IF-2), if there is one."""
        found = self._index().balancers_of.get(vnf)
        return found[0] if found else None

    def without_vnfm(self) -> Topology:
        """The same deployment with no VNF under an AM of nfvha (generic or own): for
        measuring the VIM level alone (nothing fails over or repairs by itself)."""
        return self.model_copy(update={
            "vnfs": [v.model_copy(update={"vnfm": "none"}) for v in self.vnfs]})


_INDEX_KEY = "_nfvha_topology_index"


class _TopologyIndex:
    """Every by-name lookup of one topology, built in one pass (O(hosts + VMs +
    VNFCs)). With duplicate names (a topology that fails its checks) the first one
    wins, as a scan from the start would find it."""

    def __init__(self, t: Topology) -> None:
        self._sources = (t.sites, t.vms, t.vnfs)
        self.hosts: dict[str, HostSpec] = {}
        self.places: dict[str, tuple[SiteSpec, RackSpec]] = {}
        for site, rack, host in t.hosts():
            self.hosts.setdefault(host.name, host)
            self.places.setdefault(host.name, (site, rack))
        self.vms: dict[str, VmSpec] = {}
        self.vm_positions: dict[str, int] = {}
        self.vms_on: dict[str, list[VmSpec]] = {}
        for i, vm in enumerate(t.vms):
            self.vms.setdefault(vm.name, vm)
            self.vm_positions.setdefault(vm.name, i)
            self.vms_on.setdefault(vm.host, []).append(vm)
        self.vnfs: dict[str, VnfSpec] = {}
        self.balancers_of: dict[str, list[VnfSpec]] = {}
        self.components: dict[str, tuple[VnfSpec, ComponentSpec]] = {}
        self.components_on: dict[str, list[tuple[VnfSpec, ComponentSpec]]] = {}
        for vnf in t.vnfs:
            self.vnfs.setdefault(vnf.name, vnf)
            if vnf.balances is not None:
                self.balancers_of.setdefault(vnf.balances, []).append(vnf)
            for c in vnf.components:
                self.components.setdefault(c.name, (vnf, c))
                self.components_on.setdefault(c.vm, []).append((vnf, c))

    def built_from(self, t: Topology) -> bool:
        return all(a is b for a, b in zip(self._sources, (t.sites, t.vms, t.vnfs),
                                          strict=True))


class TopologyError(Exception):
    """A topology file that cannot be used; ``problems`` has one line per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _duplicates(names: Iterable[str]) -> set[str]:
    return {n for n, k in Counter(names).items() if k > 1}


def semantic_problems(t: Topology) -> list[str]:
    """Cross-reference checks that a schema cannot express."""
    problems: list[str] = []
    host_rack: dict[str, tuple[str, str]] = {}
    seen_racks: list[str] = []
    for si, site in enumerate(t.sites):
        for ri, rack in enumerate(site.racks):
            seen_racks.append(rack.name)
            for hi, host in enumerate(rack.hosts):
                if host.name in host_rack:
                    problems.append(
                        f"sites[{si}].racks[{ri}].hosts[{hi}].name: duplicate host '{host.name}'"
                    )
                host_rack[host.name] = (site.name, rack.name)
                for pname in sorted(_duplicates(p.name for p in host.processes)):
                    problems.append(
                        f"sites[{si}].racks[{ri}].hosts[{hi}].processes: duplicate process"
                        f" '{pname}'"
                    )
    for dup in sorted(_duplicates(s.name for s in t.sites)):
        problems.append(f"sites: duplicate site '{dup}'")
    for dup in sorted(_duplicates(seen_racks)):
        problems.append(f"sites: duplicate rack '{dup}'")

    vm_host: dict[str, str] = {}
    for vi, vm in enumerate(t.vms):
        if vm.name in vm_host:
            problems.append(f"vms[{vi}].name: duplicate VM '{vm.name}'")
        if vm.host not in host_rack:
            problems.append(f"vms[{vi}].host: no host named '{vm.host}'")
        vm_host[vm.name] = vm.host
    vm_watchdog = {vm.name for vm in t.vms if vm.watchdog is not None}

    ports_in_vm: dict[tuple[str, int], str] = {}
    component_names: set[str] = set()
    for dup in sorted(_duplicates(v.name for v in t.vnfs)):
        problems.append(f"vnfs: duplicate VNF '{dup}'")
    for ni, vnf in enumerate(t.vnfs):
        where = f"vnfs[{ni}]"
        for ci, comp in enumerate(vnf.components):
            if comp.name in component_names:
                problems.append(f"{where}.components[{ci}].name: duplicate component '{comp.name}'")
            component_names.add(comp.name)
            if comp.vm not in vm_host:
                problems.append(f"{where}.components[{ci}].vm: no VM named '{comp.vm}'")
                continue
            if comp.watchdog_ms is not None and comp.vm not in vm_watchdog:
                problems.append(f"{where}.components[{ci}].watchdog_ms: VM '{comp.vm}' has"
                                " no watchdog")
            key = (comp.vm, comp.port)
            if key in ports_in_vm:
                problems.append(
                    f"{where}.components[{ci}].port: port {comp.port} on VM '{comp.vm}' is"
                    f" already used by '{ports_in_vm[key]}'"
                )
            ports_in_vm[key] = comp.name
        problems.extend(_redundancy_problems(where, vnf))
        problems.extend(_state_problems(where, vnf))
        problems.extend(_affinity_problems(where, vnf, vm_host, host_rack))
        problems.extend(_balancer_problems(where, vnf, t))
    problems.extend(_standby_problems(t, vm_host, host_rack))
    return problems


def _redundancy_problems(where: str, vnf: VnfSpec) -> list[str]:
    n = len(vnf.components)
    r = vnf.redundancy
    out: list[str] = []
    if r == "2n" and n != 2:
        out.append(f"{where}.components: redundancy 2n needs exactly 2 components, got {n}")
    elif r == "none" and n != 1:
        out.append(f"{where}.components: redundancy none needs exactly 1 component, got {n}")
    elif r in ("n-way", "n-way-active") and n < 2:
        out.append(f"{where}.components: redundancy {r} needs at least 2 components, got {n}")
    elif r == "n+m":
        if vnf.active is None or vnf.spare is None:
            out.append(f"{where}: redundancy n+m needs 'active' (N) and 'spare' (M)")
        elif vnf.active + vnf.spare != n:
            out.append(
                f"{where}.components: n+m with active={vnf.active} spare={vnf.spare} needs"
                f" {vnf.active + vnf.spare} components, got {n}"
            )
    if r != "n+m" and (vnf.active is not None or vnf.spare is not None):
        out.append(f"{where}: 'active'/'spare' apply only to redundancy n+m")
    return out


def _state_problems(where: str, vnf: VnfSpec) -> list[str]:
    out: list[str] = []
    if vnf.stateful and vnf.state == "none":
        out.append(f"{where}.state: a stateful VNF must keep its state ('sync' or 'checkpoint')")
    if not vnf.stateful and vnf.state != "none":
        out.append(f"{where}.state: a stateless VNF has no state to keep (use 'none')")
    if vnf.state == "sync" and vnf.redundancy == "none":
        out.append(f"{where}.state: 'sync' needs a standby; without redundancy use 'checkpoint'")
    addr = vnf.service_address
    if addr is not None and addr.kind == "vip" and vnf.redundancy in ("n-way-active", "n+m") and (
        vnf.redundancy == "n-way-active" or (vnf.active or 0) > 1
    ):
        out.append(
            f"{where}.service_address.kind: several actives cannot share a VIP; use 'lb'"
        )
    if addr is not None and addr.address is not None and addr.address not in _FABRIC:
        out.append(f"{where}.service_address.address: {addr.address} is outside 198.18.0.0/15")
    return out


def _balancer_problems(where: str, vnf: VnfSpec, t: Topology) -> list[str]:
    """IF-2: a load-balancer VNF runs only ``lb`` components, fronts one VNF of service
    address kind ``lb`` on that VNF's service port (its VIP's), and nothing else does."""
    out: list[str] = []
    programs = {c.program for c in vnf.components}
    if vnf.balances is None:
        if "lb" in programs:
            out.append(f"{where}.components: program 'lb' runs only in a VNF that 'balances'"
                       " another")
        return out
    if programs != {"lb"}:
        out.append(f"{where}.components: a load balancer's components have program 'lb'")
    if vnf.stateful or vnf.redundancy not in ("2n", "none"):
        out.append(f"{where}.redundancy: a load balancer is a stateless 2n pair (or none)")
    target = t._index().vnfs.get(vnf.balances)
    addr = vnf.service_address
    if target is None:
        return [*out, f"{where}.balances: no VNF named '{vnf.balances}'"]
    if target.balances is not None or target is vnf:
        out.append(f"{where}.balances: '{target.name}' is a load balancer itself")
    if target.service_address is None or target.service_address.kind != "lb":
        out.append(f"{where}.balances: '{target.name}' needs service_address kind 'lb'")
    elif addr is None or addr.kind != "vip" or addr.port != target.service_address.port:
        out.append(f"{where}.service_address: a load balancer of '{target.name}' has a VIP"
                   f" on its service port {target.service_address.port}")
    if addr is not None:
        out.extend(f"{where}.components[{ci}].port: an lb serves on its VIP's port {addr.port}"
                   for ci, c in enumerate(vnf.components) if c.port != addr.port)
    if "own" in (vnf.vnfm, target.vnfm):
        # An own AM manages its VNF alone: the LB's member_failed would reach nobody.
        out.append(f"{where}.vnfm: a load balancer and '{target.name}' need one manager for"
                   " its member reports (vnfm: generic for both); 'own' manages one VNF")
    others = [v.name for v in t._index().balancers_of.get(vnf.balances, []) if v is not vnf]
    if others:
        out.append(f"{where}.balances: '{vnf.balances}' already has a load balancer"
                   f" ('{others[0]}')")
    return out


def _standby_problems(t: Topology, vm_host: dict[str, str],
                      host_rack: dict[str, tuple[str, str]]) -> list[str]:
    """Standby VMs (ADR 0010): one per VM of a failover-standby-vm VNF, on another
    host, not a VM of its own, and placed so that a failover keeps anti-affinity."""
    out: list[str] = []
    standby_of = {v.standby_for: v.name for v in t.vms if v.standby_for is not None}
    vnfs_on: dict[str, list[VnfSpec]] = {}
    for vnf, comp in t.components():
        if vnf not in vnfs_on.setdefault(comp.vm, []):
            vnfs_on[comp.vm].append(vnf)

    def zone(vnf: VnfSpec, host: str | None) -> str | None:
        if host is None or host not in host_rack:
            return None
        site, rack = host_rack[host]
        return {"host": host, "rack": f"{site}/{rack}", "site": site}.get(vnf.anti_affinity)

    # Per VNF, its components by zone (built on first need): a standby VM is checked
    # against the components in its own zone, not against all of its VNF's.
    by_zone: dict[int, dict[str | None, list[ComponentSpec]]] = {}

    def in_zone(vnf: VnfSpec, z: str) -> list[ComponentSpec]:
        zones = by_zone.get(id(vnf))
        if zones is None:
            zones = by_zone[id(vnf)] = {}
            for c in vnf.components:
                zones.setdefault(zone(vnf, vm_host.get(c.vm)), []).append(c)
        return zones.get(z, [])

    seen: dict[str, str] = {}
    for vi, vm in enumerate(t.vms):
        target = vm.standby_for
        where = f"vms[{vi}]"
        if target is None:
            continue
        if target == vm.name:
            out.append(f"{where}.standby_for: a VM cannot stand by for itself")
            continue
        if target not in vm_host:
            out.append(f"{where}.standby_for: no VM named '{target}'")
            continue
        of = t.vm(target).standby_for
        if of is not None:
            out.append(f"{where}.standby_for: '{target}' is a standby VM itself (for '{of}')")
        if target in seen:
            out.append(f"{where}.standby_for: '{target}' already has a standby VM"
                       f" ('{seen[target]}')")
        seen[target] = vm.name
        if vm.host == vm_host[target]:
            out.append(f"{where}.host: a standby VM must be on another host than '{target}'"
                       f" ('{vm.host}'): it would fail with it")
        if not vnfs_on.get(target):
            out.append(f"{where}.standby_for: '{target}' runs no VNFC: nothing to stand by for")
        for vnf in vnfs_on.get(target, []):
            if vnf.repair_action != "failover-standby-vm":
                out.append(f"{where}.standby_for: VNF '{vnf.name}' on '{target}' has"
                           f" repair_action '{vnf.repair_action}'; a standby VM is used only"
                           " by 'failover-standby-vm'")
            if vnf.anti_affinity == "none" or vnf.redundancy == "none":
                continue
            mine = zone(vnf, vm.host)
            for c in in_zone(vnf, mine) if mine is not None else []:
                if c.vm != target:
                    out.append(f"{where}.host: anti-affinity '{vnf.anti_affinity}' of VNF"
                               f" '{vnf.name}': after a failover of '{target}', its VNFCs"
                               f" would share {vnf.anti_affinity} '{mine}' with '{c.name}'")
    for ni, vnf in enumerate(t.vnfs):
        for ci, comp in enumerate(vnf.components):
            of = t.vm(comp.vm).standby_for if comp.vm in vm_host else None
            if of is not None:
                out.append(f"vnfs[{ni}].components[{ci}].vm: '{comp.vm}' is a standby VM (for"
                           f" '{of}'); it runs the VNFCs of '{of}' after a failover")
        vms = sorted({c.vm for c in vnf.components if c.vm in vm_host})
        if vnf.repair_action == "failover-standby-vm":
            out.extend(f"vnfs[{ni}].repair_action: failover-standby-vm needs a standby VM for"
                       f" '{v}' (a VM with standby_for: {v})"
                       for v in vms if v not in standby_of and t.vm(v).standby_for is None)
        for v in vms:
            other = next((o for o in vnfs_on.get(v, []) if o.repair_action != vnf.repair_action),
                         None)
            if other is not None:
                out.append(f"vnfs[{ni}].repair_action: VM '{v}' also runs VNF '{other.name}'"
                           f" with repair_action '{other.repair_action}'; VNFs sharing a VM"
                           " need the same repair action")
    return out


def _affinity_problems(
    where: str,
    vnf: VnfSpec,
    vm_host: dict[str, str],
    host_rack: dict[str, tuple[str, str]],
) -> list[str]:
    if vnf.anti_affinity == "none" or vnf.redundancy == "none":
        return []
    zone_of: dict[str, str] = {}  # component -> its zone
    in_zone: dict[str, list[str]] = {}  # zone -> its components, in file order
    out: list[str] = []
    for ci, comp in enumerate(vnf.components):
        host = vm_host.get(comp.vm)
        if host is None or host not in host_rack:
            continue
        site, rack = host_rack[host]
        zone = {"host": host, "rack": f"{site}/{rack}", "site": site}[vnf.anti_affinity]
        # Only the components already in this zone (not all of the VNF's): linear in
        # the VNF's size unless it actually violates anti-affinity that often.
        for other in in_zone.get(zone, ()):
            out.append(
                f"{where}.components[{ci}].vm: anti-affinity '{vnf.anti_affinity}' is"
                f" violated: '{comp.name}' and '{other}' are both in {vnf.anti_affinity}"
                f" '{zone}'"
            )
        previous = zone_of.get(comp.name)
        if previous != zone:  # a duplicate name (reported elsewhere) moves zones
            if previous is not None:
                in_zone[previous].remove(comp.name)
            in_zone.setdefault(zone, []).append(comp.name)
            zone_of[comp.name] = zone
    return out





def parse_topology(data: Any, source: str = "<topology>") -> Topology:
    if not isinstance(data, dict):
        raise TopologyError(source, ["(top level): expected a mapping"])
    try:
        topo = Topology.model_validate(data)
    except ValidationError as e:
        problems = [f"{format_loc(err['loc'])}: {_message(err)}" for err in e.errors()]
        raise TopologyError(source, problems) from None
    problems = semantic_problems(topo)
    if problems:
        raise TopologyError(source, problems)
    return topo


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required field is missing"
    msg: str = err["msg"]
    return msg.removeprefix("Value error, ")


def load_topology(path: Path) -> Topology:
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(str(path), [f"cannot read: {e.strerror}"]) from None
    try:
        # libyaml's loader where installed: the pure-Python one took 20 s of the
        # controller's and the director's start for 6,000 VMs (issue 11).
        data = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        raise TopologyError(str(path), [f"{where}: not valid YAML: {e}"]) from None
    return parse_topology(data, str(path))


def default_topology_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "default.yaml"
