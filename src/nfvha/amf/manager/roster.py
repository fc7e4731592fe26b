"""What the availability manager manages: its service groups, where each SU lives, and
the assignment records (the one source of truth for roles, in the store).

An SU's endpoint moves when the VIM re-creates its VM on another host (evacuation,
ADR 0011) or fails it over to its standby VM (ADR 0010); everything else is the
configuration the manager was started with.
"""

from __future__ import annotations

import logging
from typing import Any

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.model import AssignmentRecord, HaState, ServiceGroup
from nfvha.model.topology import Topology
from nfvha.store.assignments import AssignmentStore

log = logging.getLogger(__name__)


class Roster:
    def __init__(self, topology: Topology, cfg: AmfConfig, store: AssignmentStore) -> None:
        managed = {c.name for c in cfg.components}
        # Only VNFs all of whose components are configured: the others are not this
        # manager's (another manages them, or none does).
        self.groups = {v.name: ServiceGroup.from_vnf(v) for v in topology.vnfs
                       if all(c.name in managed for c in v.components)}
        self.group_of = {su: g.name for g in self.groups.values() for su in g.sus}
        self.endpoint: dict[str, ComponentEndpoint] = {c.name: c for c in cfg.components}
        self.hosts = frozenset(topology.host_names())
        self.vips = cfg.vips
        self.balancers = cfg.balancers
        self._store = store

    # -- where SUs live -----------------------------------------------------------------
    def sus_on_vm(self, vm: str) -> list[str]:
        return [su for su, ep in self.endpoint.items() if ep.vm == vm and su in self.group_of]

    def sus_on_host(self, host: str) -> list[str]:
        return [su for su, ep in self.endpoint.items()
                if ep.host == host and su in self.group_of]

    def vm_placed(self, vm: str, host: str) -> None:
        """The VIM re-created ``vm`` on ``host`` (evacuation): its components live there
        now (same address; the fabric moves the VM's network with it)."""
        for su, ep in list(self.endpoint.items()):
            if ep.vm == vm and ep.host != host:
                log.info("SU %s: VM %s now on host %s (was %s)", su, vm, host, ep.host)
                self.endpoint[su] = ep.model_copy(update={"host": host})

    def vm_replaced(self, vm: str, replacement: str, host: str, address: str | None) -> None:
        """The VIM failed ``vm`` over to its standby VM ``replacement`` (ADR 0010): the
        components of ``vm`` run there now."""
        for su in self.sus_on_vm(vm):
            ep = self.endpoint[su]
            self.endpoint[su] = ep.model_copy(update={
                "vm": replacement, "host": host, "address": address or ep.address})

    # -- the records ----------------------------------------------------------------------
    def records(self, vnf: str) -> dict[str, AssignmentRecord | None]:
        return {si: self._store.get(si) for si in self.groups[vnf].sis}

    def named(self, su: str) -> bool:
        """Whether any record of its VNF names ``su``."""
        return any(r is not None and su in r.members
                   for r in self.records(self.group_of[su]).values())

    def assignment(self, group: ServiceGroup, rec: AssignmentRecord,
                   state: HaState | None) -> dict[str, Any]:
        """One SI's assignment to one SU at the record's epoch, as orders and grants
        state it (``ha_state`` None: not assigned there)."""
        entry: dict[str, Any] = {"si": rec.si, "ha_state": state.value if state else None,
                                 "epoch": rec.epoch, "vip": None, "peer": None}
        if state is HaState.ACTIVE:
            entry["vip"] = self.vips.get(group.name)
            entry["peer"] = self._peer(rec.standby)
        elif state is HaState.STANDBY:
            entry["peer"] = self._peer(rec.active)
        return entry

    def _peer(self, sus: tuple[str, ...]) -> dict[str, Any] | None:
        if not sus:
            return None
        ep = self.endpoint[sus[0]]
        return {"component": ep.name, "address": ep.address, "port": ep.sync_port}
