"""Whether an agent's event about a VM (or one of its VNFCs) is still current (ADR 0011).

An evacuation (REC-1, HV-7) re-creates a VM on another host. A host powered on after
its VMs were re-created elsewhere may still send what it spooled before it went down:
such an event, from a host the VM no longer runs on, is *stale*. It is stored and
alarmed as any other, but no availability manager may act on it (it would "repair"
the VM that now runs elsewhere). The VIM's placement (``nfvha.controller.placement``)
and a VNF's own AM (``nfvha.amf.own``), which follows the VIM's word on where its VMs
run, decide it the same way, here.
"""

from __future__ import annotations

from collections.abc import Mapping

from nfvha.model.events import Event


def event_vm(ev: Event, vm_of_vnfc: Mapping[str, str]) -> str | None:
    """The VM an event is about: its entity, or the VM of its VNFC - as the agent
    reports it (after a failover to a standby VM, ADR 0010, not the topology's)."""
    kind, _, name = ev.entity.partition("/")
    if kind == "vm":
        return name
    if kind != "vnfc":
        return None
    cause = str(ev.details.get("cause_entity") or "")
    return str(ev.details.get("vm") or cause.partition("/")[2]
               or vm_of_vnfc.get(name) or "") or None


def is_current(ev: Event, host_of: Mapping[str, str], vm_of_vnfc: Mapping[str, str]) -> bool:
    """False for an agent's event about a VM or VNFC from a host the VM has left
    (``host_of``: where each VM runs now; VMs it does not name are not judged)."""
    if ev.origin != "agent":
        return True
    vm = event_vm(ev, vm_of_vnfc)
    return vm is None or vm not in host_of or host_of[vm] == ev.host
