"""What ``nfvha bench scale`` deploys: a generated topology of N hosts x M VMs, the
simulated hosts' own description, and the real controller's configuration.

Everything runs on loopback without namespaces. Each simulated host gets its own
loopback address (127.77.x.y: the whole 127.0.0.0/8 is the local host on Linux, no
set-up needed) and its own UDP port, bound by the simulator before the controller's
configuration is written, so no port is guessed: a host is told apart by address and
port whichever of the two the director keys its witnesses by.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from nfvha.controller.config import AmfConfig, ControllerConfig, HostEntry
from nfvha.model.auth import AuthConfig, TokenEntry, token_hash
from nfvha.model.settings import Settings, Strict
from nfvha.model.topology import Topology

HOSTS_PER_RACK = 20
RACKS_PER_SITE = 10
# Simulated hosts' addresses: 127.77.0.1, ... (250 a /24, skipping .0 and .251-.255).
HOST_NET = ipaddress.IPv4Network("127.77.0.0/16")
HOSTS_PER_OCTET = 250
MAX_HOSTS = HOSTS_PER_OCTET * 256
COMPONENT_PORT = 7000


class SimVm(Strict):
    name: str
    vnfcs: list[str] = Field(default_factory=list)


class SimHostSpec(Strict):
    name: str
    ip: str
    vms: list[SimVm] = Field(default_factory=list)
    processes: list[str] = Field(default_factory=lambda: ["vswitch"])


class SimSpec(Strict):
    """What a simulator process is told (``--spec``): the controller's address, the
    liveness timing, and the hosts (it takes its shard of them)."""

    run_id: str
    controller_ip: str
    controller_port: int = Field(ge=0, le=65_535)  # 0 until the config is written
    host_heartbeat_interval_ms: int
    host_probe_timeout_ms: int
    reconnect_backoff_initial_s: float
    reconnect_backoff_max_s: float
    hosts: list[SimHostSpec]


def host_name(i: int, n: int) -> str:
    return f"h{i + 1:0{max(4, len(str(n)))}d}"


def host_ip(i: int) -> str:
    if not 0 <= i < MAX_HOSTS:
        raise ValueError(f"at most {MAX_HOSTS} simulated hosts")
    return str(HOST_NET.network_address + (i // HOSTS_PER_OCTET) * 256 + i % HOSTS_PER_OCTET + 1)


def vm_name(host: str, k: int) -> str:
    return f"{host}-v{k + 1:02d}"


@dataclass(frozen=True)
class ScalePlan:
    """The generated deployment: ``topology`` for the controller, ``hosts`` for the
    simulator (same names), ``racks``: host -> "site/rack"."""

    topology: Topology
    hosts: list[SimHostSpec]
    racks: dict[str, str]

    @property
    def vm_count(self) -> int:
        return len(self.topology.vms)


def _layout(n_hosts: int) -> Iterator[tuple[str, str, list[int]]]:
    """(site, rack, host indexes) in order: racks of HOSTS_PER_RACK, sites of
    RACKS_PER_SITE racks."""
    racks = [list(range(s, min(s + HOSTS_PER_RACK, n_hosts)))
             for s in range(0, n_hosts, HOSTS_PER_RACK)]
    for r, members in enumerate(racks):
        site = f"s{r // RACKS_PER_SITE + 1:02d}"
        yield site, f"{site}-r{r % RACKS_PER_SITE + 1:02d}", members


def plan_topology(n_hosts: int, vms_per_host: int, *, settings: Settings | None = None,
                  name: str = "scale") -> ScalePlan:
    """N hosts in racks of 20, M VMs each, and VNFs of two components (active/standby,
    2N, host anti-affinity) on VMs of two different hosts; a last lone VM gets a VNF
    of its own (redundancy none). Every VNF ``vnfm: none``: nothing at this scale
    opens component SDK sessions; the VIM level (detection, events, alarms) is what is
    measured. Every host ``fence: none``: a host is confirmed down only on its peers'
    word (ADR 0015)."""
    if n_hosts < 2:
        raise ValueError("at least 2 hosts (a 2N VNF spans two)")
    if vms_per_host < 1:
        raise ValueError("at least 1 VM per host")
    if n_hosts > MAX_HOSTS:
        raise ValueError(f"at most {MAX_HOSTS} hosts")
    names = [host_name(i, n_hosts) for i in range(n_hosts)]
    sites: dict[str, list[dict[str, Any]]] = {}
    racks: dict[str, str] = {}
    for site, rack, members in _layout(n_hosts):
        sites.setdefault(site, []).append({"name": rack, "hosts": [
            {"name": names[i], "fence": {"type": "none"}} for i in members]})
        for i in members:
            racks[names[i]] = f"{site}/{rack}"
    # VM order slot-major (every host's first VM, then every host's second, ...):
    # neighbours in that order are on different hosts, so pairing them keeps the two
    # components of a VNF apart.
    order = [vm_name(names[i], k) for k in range(vms_per_host) for i in range(n_hosts)]
    host_of = {vm_name(names[i], k): names[i]
               for i in range(n_hosts) for k in range(vms_per_host)}
    vnfcs_of: dict[str, list[str]] = {}
    vnfs: list[dict[str, Any]] = []
    for j in range(0, len(order), 2):
        vnf = f"f{j // 2 + 1:05d}"
        pair = order[j:j + 2]
        comps = [{"name": f"{vnf}-{'ab'[x]}", "vm": vm, "port": COMPONENT_PORT}
                 for x, vm in enumerate(pair)]
        for x, vm in enumerate(pair):
            vnfcs_of[vm] = [f"{vnf}-{'ab'[x]}"]
        vnfs.append({"name": vnf, "redundancy": "2n" if len(pair) == 2 else "none",
                     "stateful": False, "state": "none", "vnfm": "none",
                     "anti_affinity": "host", "components": comps})
    data = {
        "name": name,
        "settings": (settings or Settings()).model_dump(mode="json"),
        "sites": [{"name": s, "racks": rs} for s, rs in sites.items()],
        "vms": [{"name": vm_name(names[i], k), "host": names[i], "cpu": 0.5,
                 "memory_mb": 256}
                for i in range(n_hosts) for k in range(vms_per_host)],
        "vnfs": vnfs,
    }
    # Schema-checked here; the cross-reference checks run where the topology is loaded
    # (the controller and director refuse a bad one), and on small sizes in the tests.
    topology = Topology.model_validate(data)
    hosts = [SimHostSpec(name=names[i], ip=host_ip(i), vms=[
        SimVm(name=vm, vnfcs=vnfcs_of.get(vm, []))
        for vm in (vm_name(names[i], k) for k in range(vms_per_host))])
        for i in range(n_hosts)]
    assert all(host_of[c.vm] != host_of[d.vm] for v in topology.vnfs
               for c, d in zip(v.components, v.components[1:], strict=False))
    return ScalePlan(topology, hosts, racks)


def sim_spec(plan: ScalePlan, run_id: str, controller_ip: str, controller_port: int
             ) -> SimSpec:
    s = plan.topology.settings
    return SimSpec(run_id=run_id, controller_ip=controller_ip,
                   controller_port=controller_port,
                   host_heartbeat_interval_ms=s.host_heartbeat_interval_ms,
                   host_probe_timeout_ms=s.host_probe_timeout_ms,
                   reconnect_backoff_initial_s=s.reconnect_backoff_initial_s,
                   reconnect_backoff_max_s=s.reconnect_backoff_max_s,
                   hosts=plan.hosts)


def shard(hosts: Sequence[SimHostSpec], index: int, count: int) -> list[SimHostSpec]:
    """The hosts simulator ``index`` of ``count`` plays: every count-th, so each
    simulator has hosts of every rack."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}")
    return list(hosts[index::count])


def controller_config(plan: ScalePlan, *, run_id: str, run_dir: Path, topology_file: Path,
                      listen_ip: str, port: int, api_port: int, amf_port: int,
                      probe_ports: dict[str, int], admin_token: str) -> ControllerConfig:
    """The controller's (and its director's) configuration for a loopback run: every
    host's rack, management and data address (the same loopback address here) and
    UDP port, no fence device; an admin token for the bench's API reads."""
    missing = [h.name for h in plan.hosts if h.name not in probe_ports]
    if missing:
        raise ValueError(f"no UDP port for hosts {missing[:5]}")
    hosts = [HostEntry.model_validate({
        "name": h.name, "fence": {"type": "none"}, "rack": plan.racks[h.name],
        "mgmt_ip": h.ip, "probe_ip": h.ip, "probe_port": probe_ports[h.name]})
        for h in plan.hosts]
    auth = AuthConfig(tokens=[TokenEntry(sha256=token_hash(admin_token), role="admin",
                                         name=f"bench scale {run_id}")])
    return ControllerConfig(
        run_id=run_id, listen_ip=listen_ip, port=port, api_port=api_port,
        db_path=run_dir / "controller" / "events.db", hosts=hosts,
        settings=plan.topology.settings, topology_file=topology_file, auth=auth,
        # The generic availability manager runs as it does in any deployment; with
        # every VNF "vnfm: none" it has no component to manage.
        amf=AmfConfig(listen_ip=listen_ip, port=amf_port))


def topology_text(t: Topology) -> str:
    """The topology file as a user would write it, defaults left out; as JSON (which is
    YAML): tens of thousands of VMs, and a YAML emitter takes seconds for them."""
    data = t.model_dump(mode="json", exclude_defaults=True)
    data["settings"] = t.settings.model_dump(mode="json")
    return json.dumps(data, indent=None, separators=(",", ":"))
