"""Where a VNF's own AM believes each VM runs: the topology's placement, moved as the
VIM says (``GET /v1/placement`` at start, ``vm.evacuated`` events after, ADR 0011), so
that an agent's event from a host a VM has left is not acted on."""

from __future__ import annotations

from nfvha.model.events import Event
from nfvha.model.placement import is_current
from nfvha.model.topology import Topology


class VmPlacement:
    def __init__(self, topology: Topology) -> None:
        self._hosts = set(topology.host_names())
        self._host: dict[str, str] = {v.name: v.host for v in topology.vms}
        self._vm_of_vnfc = {c.name: c.vm for _, c in topology.components()}

    def host_of(self, vm: str) -> str:
        return self._host[vm]

    def move(self, vm: str, host: str) -> None:
        """``vm`` runs on ``host`` from now on. KeyError: a VM or host the topology
        does not have."""
        if vm not in self._host:
            raise KeyError(f"no VM {vm!r}")
        if host not in self._hosts:
            raise KeyError(f"no host {host!r}")
        self._host[vm] = host

    def is_current(self, ev: Event) -> bool:
        """False for an agent's event about a VM or VNFC from a host it left."""
        return is_current(ev, self._host, self._vm_of_vnfc)
