"""The isolated network fabric of one run of the local test bed.

Two bridges in the root namespace, both from the benchmarking range 198.18.0.0/15 and
with no route anywhere else:

* the management bridge ``nfvha-<run>m`` carries the controller address (.1) and every
  host's ``mgmt0``;
* the data bridge ``nfvha-<run>d`` carries the root-side data address (.1, where
  clients and probes live) and every host's ``data0``.

A host is a network namespace; its ``data0`` is a port of an in-namespace bridge
``br0`` that carries the host's data address and to which its VMs' veths are attached,
so a VM reaches the rest of the data network through its host, and cutting the host's
``data0`` cuts its VMs off as a real NIC failure would.

Each of the two subnets is a /24 when the run fits (as many choices as possible for
runs planned at the same moment), else the narrowest of /23 ... /18 that fits. Within
a /24: .1 root side, hosts .10+i, VMs (data) .60+j, VIPs (data) .200+k (at most 50
hosts, 140 VMs, 50 VIPs); within a wider one of size S: .1 root side, hosts from 16,
VMs from S/4, VIPs from 7S/8. Limits per run: ``limit_problems`` (``nfvha validate``
checks them): 1,000 hosts (a host's root-side link name ``nfvha-<run>m<index>`` must
fit in 15 characters), 10,240 VMs, 2,046 VIPs, and 1,022 VMs per host (a Linux bridge
has at most 1,024 ports; a host's ``br0`` also has ``data0``).
IPv6 is disabled everywhere (no link-local chatter, nothing but the IPv4 plan), and
there are only on-link routes: no namespace has a default route.

Setup uses the ``ip`` command (not a hot path); processes are started in a namespace by
``spawn.py`` with setns(2), never by ``ip netns exec``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nfvha.nfvi.spawn import NETNS_DIR, setns_net
from nfvha.util.runpaths import PREFIX, RunPaths

if TYPE_CHECKING:
    from nfvha.model.topology import Topology

FABRIC_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
PREFIXLEN = 24  # the narrowest subnet, and the usual one
WIDEST_PREFIXLEN = 18  # 16 of them in the fabric range: 8 big runs at once
MAX_HOSTS = 1000  # root-side link names "nfvha-<run>m<index>": 15 characters at most
MAX_VMS_PER_HOST = 1022  # a bridge has at most 1,024 ports; br0 also has data0
HOST_LINKS = ("mgmt0", "data0")


@dataclass(frozen=True)
class SubnetLayout:
    """Where hosts, VMs and VIPs go in a subnet of ``prefixlen`` (offsets from its
    network address), and how many fit."""

    prefixlen: int
    host_base: int
    max_hosts: int
    vm_base: int
    max_vms: int
    vip_base: int
    max_vips: int


def subnet_layout(prefixlen: int) -> SubnetLayout:
    if not WIDEST_PREFIXLEN <= prefixlen <= PREFIXLEN:
        raise ValueError(f"a fabric subnet is a /{WIDEST_PREFIXLEN} ... /{PREFIXLEN}")
    if prefixlen == PREFIXLEN:
        return SubnetLayout(PREFIXLEN, 10, 50, 60, 140, 200, 50)
    size = 1 << (32 - prefixlen)
    return SubnetLayout(prefixlen, 16, min(MAX_HOSTS, size // 4 - 16),
                        size // 4, size * 5 // 8, size * 7 // 8, size // 8 - 2)


MAX_VMS = subnet_layout(WIDEST_PREFIXLEN).max_vms
MAX_VIPS = subnet_layout(WIDEST_PREFIXLEN).max_vips


def layout_for(hosts: int, vms: int, vips: int) -> SubnetLayout | None:
    """The narrowest subnet layout a run of this size fits in; None: none does."""
    for prefixlen in range(PREFIXLEN, WIDEST_PREFIXLEN - 1, -1):
        lay = subnet_layout(prefixlen)
        if hosts <= lay.max_hosts and vms <= lay.max_vms and vips <= lay.max_vips:
            return lay
    return None


def limit_problems(hosts: int, vms: int, vips: int, vms_on_one_host: int = 0) -> list[str]:
    """Why a run of this size does not fit the fabric (empty: it does)."""
    out: list[str] = []
    if hosts > MAX_HOSTS:
        out.append(f"{hosts} hosts: the fabric takes at most {MAX_HOSTS:,} per run")
    if vms > MAX_VMS:
        out.append(f"{vms} VMs: the fabric takes at most {MAX_VMS:,} per run")
    if vips > MAX_VIPS:
        out.append(f"{vips} VIPs (VNFs with a service address): the fabric takes at most"
                   f" {MAX_VIPS:,} per run")
    if vms_on_one_host > MAX_VMS_PER_HOST:
        out.append(f"{vms_on_one_host} VMs on one host: the fabric takes at most"
                   f" {MAX_VMS_PER_HOST:,} per host")
    return out


def topology_limit_problems(t: Topology) -> list[str]:
    """Why ``t`` does not fit one run's fabric (empty: it does)."""
    per_host: dict[str, int] = {}
    for v in t.vms:
        per_host[v.host] = per_host.get(v.host, 0) + 1
    return limit_problems(len(t.host_names()), len(t.vms),
                          sum(1 for v in t.vnfs if v.service_address is not None),
                          max(per_host.values(), default=0))


class FabricError(RuntimeError):
    """An ``ip`` command failed, or the planned subnets are taken."""


@dataclass(frozen=True)
class HostNet:
    name: str
    index: int
    netns: str
    mgmt_ip: str
    data_ip: str


@dataclass(frozen=True)
class VmNet:
    name: str
    host: str
    netns: str
    data_ip: str


@dataclass(frozen=True)
class FabricPlan:
    run_id: str
    mgmt_subnet: str
    data_subnet: str
    controller_ip: str
    root_data_ip: str
    hosts: tuple[HostNet, ...]
    vms: tuple[VmNet, ...]
    vips: tuple[str, ...]
    mgmt_bridge: str
    data_bridge: str

    @property
    def prefixlen(self) -> int:
        """Of both subnets (one size per run)."""
        return ipaddress.IPv4Network(self.data_subnet).prefixlen

    @property
    def tag(self) -> str:
        return f"{PREFIX}{self.run_id}"

    def host(self, name: str) -> HostNet:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in the fabric of run {self.run_id}")

    def vm(self, name: str) -> VmNet:
        for v in self.vms:
            if v.name == name:
                return v
        raise KeyError(f"no VM {name!r} in the fabric of run {self.run_id}")

    def vm_index(self, name: str) -> int:
        for j, v in enumerate(self.vms):
            if v.name == name:
                return j
        raise KeyError(f"no VM {name!r} in the fabric of run {self.run_id}")

    def root_mgmt_link(self, host: str) -> str:
        """The root-namespace end of the host's mgmt0 veth (a port of the mgmt bridge)."""
        return f"{self.tag}m{self.host(host).index}"

    def root_data_link(self, host: str) -> str:
        return f"{self.tag}d{self.host(host).index}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mgmt_subnet": self.mgmt_subnet,
            "data_subnet": self.data_subnet,
            "controller_ip": self.controller_ip,
            "root_data_ip": self.root_data_ip,
            "hosts": [
                {
                    "name": h.name,
                    "index": h.index,
                    "netns": h.netns,
                    "mgmt_ip": h.mgmt_ip,
                    "data_ip": h.data_ip,
                }
                for h in self.hosts
            ],
            "vms": [
                {"name": v.name, "host": v.host, "netns": v.netns, "data_ip": v.data_ip}
                for v in self.vms
            ],
            "vips": list(self.vips),
            "mgmt_bridge": self.mgmt_bridge,
            "data_bridge": self.data_bridge,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FabricPlan:
        return cls(
            run_id=str(d["run_id"]),
            mgmt_subnet=str(d["mgmt_subnet"]),
            data_subnet=str(d["data_subnet"]),
            controller_ip=str(d["controller_ip"]),
            root_data_ip=str(d["root_data_ip"]),
            hosts=tuple(
                HostNet(
                    name=str(h["name"]),
                    index=int(h["index"]),
                    netns=str(h["netns"]),
                    mgmt_ip=str(h["mgmt_ip"]),
                    data_ip=str(h["data_ip"]),
                )
                for h in d["hosts"]
            ),
            vms=tuple(
                VmNet(
                    name=str(v["name"]),
                    host=str(v["host"]),
                    netns=str(v["netns"]),
                    data_ip=str(v["data_ip"]),
                )
                for v in d["vms"]
            ),
            vips=tuple(str(x) for x in d["vips"]),
            mgmt_bridge=str(d["mgmt_bridge"]),
            data_bridge=str(d["data_bridge"]),
        )


# --- the ip command ------------------------------------------------------------------------


def _ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise FabricError(f"{' '.join(cmd)}: {done.stderr.strip()}")
    return done.stdout


def _ip_ok(*args: str, netns: str | None = None) -> bool:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def _ip_batch(lines: Sequence[str], *, netns: str | None = None) -> None:
    """Several ``ip`` commands in one process (stops at the first that fails)."""
    if not lines:
        return
    cmd = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    done = subprocess.run(
        cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise FabricError(f"ip -batch{where}: {done.stderr.strip()}")


def _root_ipv4_networks() -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            cidr = words[words.index("inet") + 1]
            nets.append(ipaddress.IPv4Interface(cidr).network)
    return nets


def list_netns() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def list_root_links() -> list[str]:
    names: list[str] = []
    for line in _ip("-o", "link", "show").splitlines():
        parts = line.split(": ", 2)
        if len(parts) >= 2:
            names.append(parts[1].split("@")[0])
    return names


def list_fabric_objects(run_id: str) -> tuple[list[str], list[str]]:
    """(network namespaces, root-namespace links) of the run, by name prefix."""
    prefix = RunPaths(run_id).tag
    return (
        [n for n in list_netns() if n.startswith(prefix)],
        [n for n in list_root_links() if n.startswith(prefix)],
    )


# --- IPv6 off ---------------------------------------------------------------------------


def _disable_ipv6_in_netns(netns: str) -> None:
    """Set disable_ipv6 for all (and future) links of ``netns``.

    /proc/sys/net shows the network namespace of the calling *thread*, so a short-lived
    thread joins the namespace, writes the sysctls and ends; no process is started.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            setns_net(os.path.join(NETNS_DIR, netns))
            if not os.path.isdir("/proc/sys/net/ipv6"):
                return  # IPv6 not built in or disabled at boot
            for conf in ("default", "all"):
                with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
                    f.write("1")
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=work, name=f"ipv6-off-{netns}")
    t.start()
    t.join()
    if errors:
        raise FabricError(f"disabling IPv6 in {netns}: {errors[0]}") from errors[0]


def _disable_ipv6_on_root_link(link: str) -> None:
    path = f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6"
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


def _add_netns(netns: str) -> bool:
    """Create ``netns`` unless it exists; True if it was created now."""
    created = not os.path.exists(os.path.join(NETNS_DIR, netns))
    if created:
        _ip("netns", "add", netns)
    _disable_ipv6_in_netns(netns)
    return created


# --- planning --------------------------------------------------------------------------


def _free_subnets(prefixlen: int = PREFIXLEN) -> list[ipaddress.IPv4Network]:
    used = [n for n in _root_ipv4_networks() if n.overlaps(FABRIC_RANGE)]
    return [
        s
        for s in FABRIC_RANGE.subnets(new_prefix=prefixlen)
        if not any(s.overlaps(u) for u in used)
    ]


def _addr(subnet: ipaddress.IPv4Network, offset: int) -> str:
    return str(subnet.network_address + offset)


def plan_fabric(
    run_id: str, hosts: list[str], vms: list[tuple[str, str]], n_vips: int = 0
) -> FabricPlan:
    """Addresses and names for a run; ``vms`` is a list of (vm, host).

    The two subnets (/24s unless the run needs more) are picked at random among those no
    address of the root namespace uses, so a second run (even one planned at the same
    moment) does not clash with this one.
    """
    paths = RunPaths(run_id)
    per_host: dict[str, int] = {}
    for _, h in vms:
        per_host[h] = per_host.get(h, 0) + 1
    problems = limit_problems(len(hosts), len(vms), n_vips, max(per_host.values(), default=0))
    if n_vips < 0:
        problems.append(f"{n_vips} VIPs")
    lay = layout_for(len(hosts), len(vms), n_vips)
    if problems or lay is None:
        raise ValueError("; ".join(problems) or "the run does not fit the fabric")
    if len(set(hosts)) != len(hosts):
        raise ValueError("duplicate host names")
    vm_names = [v for v, _ in vms]
    if len(set(vm_names)) != len(vm_names):
        raise ValueError("duplicate VM names")
    for vm, host in vms:
        if host not in hosts:
            raise ValueError(f"VM {vm!r} is on unknown host {host!r}")
    free = _free_subnets(lay.prefixlen)
    if len(free) < 2:
        raise FabricError(f"no two free /{lay.prefixlen} subnets left in 198.18.0.0/15")
    mgmt, data = secrets.SystemRandom().sample(free, 2)
    return FabricPlan(
        run_id=run_id,
        mgmt_subnet=str(mgmt),
        data_subnet=str(data),
        controller_ip=_addr(mgmt, 1),
        root_data_ip=_addr(data, 1),
        hosts=tuple(
            HostNet(
                name=h,
                index=i,
                netns=paths.host_netns(h),
                mgmt_ip=_addr(mgmt, lay.host_base + i),
                data_ip=_addr(data, lay.host_base + i),
            )
            for i, h in enumerate(hosts)
        ),
        vms=tuple(
            VmNet(name=v, host=h, netns=paths.vm_netns(v),
                  data_ip=_addr(data, lay.vm_base + j))
            for j, (v, h) in enumerate(vms)
        ),
        vips=tuple(_addr(data, lay.vip_base + k) for k in range(n_vips)),
        mgmt_bridge=f"{paths.tag}m",
        data_bridge=f"{paths.tag}d",
    )


# --- building and tearing down ----------------------------------------------------------------


def _check_subnets_free(plan: FabricPlan) -> None:
    ours = {ipaddress.ip_network(plan.mgmt_subnet), ipaddress.ip_network(plan.data_subnet)}
    for net in _root_ipv4_networks():
        for s in ours:
            if net.overlaps(s):
                raise FabricError(f"subnet {s} of run {plan.run_id} is already in use ({net})")


def create_fabric(plan: FabricPlan) -> None:
    """Bridges, root addresses and every host namespace with mgmt0, data0 and br0."""
    _check_subnets_free(plan)
    root_links = [plan.mgmt_bridge, plan.data_bridge]
    for h in plan.hosts:
        root_links += [plan.root_mgmt_link(h.name), plan.root_data_link(h.name)]
    for link in root_links:
        if len(link) > 15:
            raise FabricError(f"link name {link!r} is longer than 15 characters")
    for h in plan.hosts:
        _add_netns(h.netns)
    # Links first, all down, so IPv6 is off before any of them comes up.
    create = [
        f"link add name {plan.mgmt_bridge} type bridge forward_delay 0",
        f"link add name {plan.data_bridge} type bridge forward_delay 0",
    ]
    for h in plan.hosts:
        create.append(
            f"link add name {plan.root_mgmt_link(h.name)} type veth peer name mgmt0 netns {h.netns}"
        )
        create.append(
            f"link add name {plan.root_data_link(h.name)} type veth peer name data0 netns {h.netns}"
        )
    _ip_batch(create)
    for link in root_links:
        _disable_ipv6_on_root_link(link)
    plen = plan.prefixlen
    root = [
        f"addr add {plan.controller_ip}/{plen} dev {plan.mgmt_bridge}",
        f"addr add {plan.root_data_ip}/{plen} dev {plan.data_bridge}",
        f"link set {plan.mgmt_bridge} up",
        f"link set {plan.data_bridge} up",
    ]
    for h in plan.hosts:
        root += [
            f"link set {plan.root_mgmt_link(h.name)} master {plan.mgmt_bridge} up",
            f"link set {plan.root_data_link(h.name)} master {plan.data_bridge} up",
        ]
    _ip_batch(root)
    for h in plan.hosts:
        _ip_batch(
            [
                "link set lo up",
                f"addr add {h.mgmt_ip}/{plen} dev mgmt0",
                "link set mgmt0 up",
                "link add name br0 type bridge forward_delay 0",
                "link set data0 master br0",
                f"addr add {h.data_ip}/{plen} dev br0",
                "link set data0 up",
                "link set br0 up",
            ],
            netns=h.netns,
        )


def create_vm_network(plan: FabricPlan, vm: str, *, host: str | None = None) -> None:
    """The VM's namespace with ``eth0`` (its data address), a veth to ``br0`` of its host.

    ``host`` overrides the planned host (a VM restored or migrated elsewhere keeps its
    address). Idempotent: an existing, correctly attached network is left as it is; one
    attached to another host is re-attached.
    """
    v = plan.vm(vm)
    h = plan.host(host or v.host)
    host_side = f"v{plan.vm_index(vm)}"
    # Few ``ip`` runs (a host starts its VMs in parallel, each run is a process): a new
    # namespace has no eth0, so nothing of a veth to look for or clean up.
    fresh = _add_netns(v.netns)
    has_eth0 = not fresh and _ip_ok("link", "show", "eth0", netns=v.netns)
    attached_here = has_eth0 and _ip_ok("link", "show", host_side, netns=h.netns)
    if not attached_here:
        # A stale half (after a crash, or attached to another host) goes first; deleting
        # one end of a veth deletes the other.
        if has_eth0:
            _ip("link", "del", "eth0", netns=v.netns, check=False)
        _ip("link", "del", host_side, netns=h.netns, check=False)
        # The same MAC on every host: peers' ARP caches stay right when the VM moves.
        _ip(
            "link", "add", "name", host_side, "type", "veth", "peer", "name", "eth0",
            "address", vm_mac(v.data_ip), "netns", v.netns,
            netns=h.netns,
        )
    _ip_batch([f"link set {host_side} master br0", f"link set {host_side} up"], netns=h.netns)
    _ip_batch(
        [
            "link set lo up",
            f"addr replace {v.data_ip}/{plan.prefixlen} dev eth0",
            "link set eth0 up",
        ],
        netns=v.netns,
    )


def vm_mac(data_ip: str) -> str:
    """A locally administered unicast MAC derived from the VM's (run-unique) address."""
    octets = ipaddress.IPv4Address(data_ip).packed
    return "02:4e:" + ":".join(f"{b:02x}" for b in octets)


def vm_attached_host(plan: FabricPlan, vm: str) -> str | None:
    """The host whose ``br0`` the VM's network is attached to now, if any."""
    host_side = f"v{plan.vm_index(vm)}"
    for h in plan.hosts:
        if _ip_ok("link", "show", host_side, netns=h.netns):
            return h.name
    return None


def _delete_netns(netns: str) -> None:
    # Delete the links explicitly: if a process still holds the namespace, deleting only
    # its name would leave it (and the veth peers in other namespaces) alive.
    out = _ip("-o", "link", "show", netns=netns, check=False)
    links = [line.split(": ", 2)[1].split("@")[0] for line in out.splitlines() if ": " in line]
    for link in links:
        if link != "lo":
            _ip("link", "del", link, netns=netns, check=False)
    _ip("netns", "delete", netns, check=False)


def delete_vm_network(plan: FabricPlan, vm: str) -> None:
    v = plan.vm(vm)
    if v.netns in list_netns():
        _delete_netns(v.netns)


def set_host_link(plan: FabricPlan, host: str, link: str, up: bool) -> None:
    """Cut (``up=False``) or restore one of the host's NICs, ``mgmt0`` or ``data0``."""
    if link not in HOST_LINKS:
        raise ValueError(f"link must be one of {HOST_LINKS}, not {link!r}")
    _ip("link", "set", link, "up" if up else "down", netns=plan.host(host).netns)


def destroy_fabric(run_id: str) -> None:
    """Delete every namespace and root-namespace link named ``nfvha-<run>...``."""
    netnses, _ = list_fabric_objects(run_id)
    for ns in netnses:
        _delete_netns(ns)
    _, links = list_fabric_objects(run_id)
    # Deleting one end of a veth already took the other: check what is left each time.
    for link in links:
        _ip("link", "del", link, check=False)
    netnses, links = list_fabric_objects(run_id)
    if netnses or links:
        raise FabricError(f"run {run_id}: could not delete {netnses + links}")
