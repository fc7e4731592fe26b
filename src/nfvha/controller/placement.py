"""Where each VM runs now, and where an evacuated VM may go (ADR 0011).

The topology places every VM on a host; an evacuation (REC-1, HV-7) moves it. The
current placement is kept in ``placement.json`` beside the controller's database so a
restarted controller still knows it; the test bed's fault injector reads it too.

An agent event about a VM (or one of its VNFCs) from a host the VM no longer runs on
is *stale* (``nfvha.model.placement``): stored and alarmed as any other, but not
handed to the availability manager.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from nfvha.model.events import Event
from nfvha.model.placement import is_current
from nfvha.model.topology import AffinityLevel, Topology
from nfvha.util.files import atomic_write_json, read_json

log = logging.getLogger(__name__)
PLACEMENT_FILE = "placement.json"  # beside the controller's database


class Placement:
    def __init__(self, topology: Topology, path: Path | None = None) -> None:
        self._path = path
        self._hosts = set(topology.host_names())
        self._host: dict[str, str] = {v.name: v.host for v in topology.vms}
        self._order = {v.name: i for i, v in enumerate(topology.vms)}
        self._vm_of_vnfc = {c.name: c.vm for _, c in topology.components()}
        if path is not None and path.exists():
            self._load(path)
        # host -> its VMs (a dict as an ordered set), kept with every move
        self._on: dict[str, dict[str, None]] = {}
        for vm, host in self._host.items():
            self._on.setdefault(host, {})[vm] = None

    def _load(self, path: Path) -> None:
        try:
            saved = read_json(path)
        except (OSError, ValueError) as e:
            log.error("placement %s unreadable (%s): using the topology's", path, e)
            return
        for vm, host in (saved.items() if isinstance(saved, dict) else ()):
            if vm in self._host and host in self._hosts:
                self._host[vm] = host

    def host_of(self, vm: str) -> str:
        return self._host[vm]

    def vms_on(self, host: str) -> list[str]:
        """The VMs on ``host`` now, in topology order."""
        last = len(self._order)  # a VM the topology does not have: after its own
        return sorted(self._on.get(host, ()), key=lambda vm: self._order.get(vm, last))

    def as_dict(self) -> dict[str, str]:
        return dict(self._host)

    def move(self, vm: str, host: str) -> None:
        """Record that ``vm`` runs on ``host`` from now on (persisted first)."""
        self.move_all({vm: host})

    def move_all(self, moves: Mapping[str, str]) -> None:
        """Record several moves at once (a host's evacuation): persisted first, in one
        write of the file."""
        for host in moves.values():
            if host not in self._hosts:
                raise KeyError(f"no host {host!r}")
        new = {**self._host, **moves}
        if self._path is not None:
            atomic_write_json(self._path, new)
        for vm, host in moves.items():
            self._on.get(self._host.get(vm, ""), {}).pop(vm, None)
            self._on.setdefault(host, {})[vm] = None
        self._host = new  # replaced whole: readers in other threads see old or new

    def is_current(self, ev: Event) -> bool:
        """False for an agent's event about a VM or VNFC from a host it left."""
        return is_current(ev, self._host, self._vm_of_vnfc)

    def current(self, events: Iterable[Event]) -> list[Event]:
        return [ev for ev in events if self.is_current(ev)]


def zone_of(topology: Topology, host: str, level: AffinityLevel) -> str:
    site, rack = topology.place(host)  # KeyError(host) if there is none
    return {"host": host, "rack": f"{site.name}/{rack.name}", "site": site.name,
            "none": ""}[level]


def choose_host(topology: Topology, vm: str, placement: Mapping[str, str],
                candidates: Iterable[str]) -> str | None:
    """A host for ``vm`` among ``candidates``: one where every VNF with a component on
    it keeps its anti-affinity (no other VM of that VNF in the same host/rack/site),
    the least loaded (fewest VMs) first, then by name. None when no candidate keeps
    anti-affinity: the redundancy it protects matters more than the VM count (a
    VM packed beside its peer would fail with it)."""
    rules: list[tuple[AffinityLevel, set[str]]] = []
    vnfs = {id(v): v for v, _ in topology.components_on(vm)}  # the VNFs it runs
    for vnf in vnfs.values():
        vms = {c.vm for c in vnf.components}
        if vnf.anti_affinity == "none" or vnf.redundancy == "none":
            continue
        taken = {zone_of(topology, placement[o], vnf.anti_affinity)
                 for o in vms - {vm} if o in placement}
        rules.append((vnf.anti_affinity, taken))
    fit = [h for h in candidates
           if all(zone_of(topology, h, level) not in taken for level, taken in rules)]
    if not fit:
        return None
    load = Counter(placement.values())
    return min(fit, key=lambda h: (load[h], h))
