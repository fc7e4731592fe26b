"""Failures the manager is told of: the VIM's stored events and the agents' notices.

A stored event (a VNFC exited, a VM crashed or hung, a host is down or fenced) acts
on readiness and starts the repair: restart, VM repair, escalation counting - once
per failure, because the event is stored once (VNFHA-10).

An agent's notice (ADR 0014, ``nfvha.wire.director.Notice``) is the same failure told
straight away over UDP, so the failover does not wait for the VIM process. It acts on
readiness only (out of service, or suspect for a hung VM); its stored event follows
and does the repair. Per host the manager keeps the agent's incarnation and the
highest sequence number seen from either path: a notice at or below it is a
duplicate, or comes after its stored event, and is dropped.

Both paths name, where they can, the *life* that failed (``readiness.Life``): a VNFC
report names the pid that died, which must be the pid the SU registered with; a
stored event a notice already handled fails the lives the notice took out, and a
VNFC lost with its VM the life its VM's crash took out. A report
about a life that is no longer the registered one (the SU registered again since: a
late stored event, say) changes no readiness: it must never take the new life out.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field

from nfvha.amf.manager.members import MemberReports
from nfvha.amf.manager.readiness import Life, ReadinessTracker
from nfvha.amf.manager.repair import Repairs
from nfvha.amf.manager.roster import Roster
from nfvha.model.events import Kind, StoredEvent
from nfvha.wire.director import Notice

log = logging.getLogger(__name__)

# Per host: notices whose stored event has not come yet. A stored event always
# follows, unless filtered as stale; the bound keeps those from piling up.
NOTICED_KEPT = 256

Failed = dict[str, Life | None]  # SU -> the life that failed (None: whichever is current)


@dataclass
class _AgentMark:
    incarnation: str | None = None  # None: no notice from this host yet
    highest: int = 0  # the highest sequence number seen, from notices or stored events
    # seq -> the lives its notice took out (or suspected), until its stored event comes
    noticed: OrderedDict[int, Failed] = field(default_factory=OrderedDict)


class FailureReports:
    def __init__(self, roster: Roster, readiness: ReadinessTracker, repairs: Repairs,
                 members: MemberReports) -> None:
        self._roster = roster
        self._readiness = readiness
        self._repairs = repairs
        self._members = members
        self._marks: dict[str, _AgentMark] = {}
        # VM -> the lives its last crash took out: its VNFCs' "lost with its VM" events
        # (which follow the VM's, naming no pid) are about those lives.
        self._lost_with_vm: dict[str, Failed] = {}

    # -- stored events ----------------------------------------------------------------------
    def on_event(self, ev: StoredEvent) -> None:
        name = ev.entity.partition("/")[2]
        noticed = self._seen(ev)
        failed = self._failed(ev, name, noticed or {})
        self._members.settle(failed)
        if ev.kind == Kind.VNFC_CRASHED and name in failed:
            self._readiness.out_of_service(name, f"VNFC exited ({ev.description})",
                                           life=failed[name])
            if not ev.details.get("cause_entity"):
                # Its own failure; one caused by its VM's is the VM's to count/repair.
                self._repairs.component_failed(name)
        elif ev.kind == Kind.VM_CRASHED:
            if failed:
                self._lost_with_vm[name] = failed
            for su, life in failed.items():
                self._readiness.out_of_service(su, f"VM {name} crashed", life=life)
            if failed:
                self._repairs.repair_vm(name, failure=ev.id, lives=failed)
        elif ev.kind == Kind.VM_HUNG:
            for su, life in failed.items():
                self._readiness.suspect(su, f"VM {name} hung", life=life)
            if failed:
                # Isolate first (REC-1): a hung VM that thaws must not act again, so the
                # repair policy stops it; stopped, its SUs are confirmed out of service.
                self._repairs.repair_vm(name, failure=ev.id, lives=failed)
        elif ev.kind in (Kind.HOST_DOWN, Kind.HOST_FENCED):
            # Down: confirmed by its fence device's power status or by its peers.
            # Fenced: the VIM's host repair powered it off (ADR 0011), before it
            # re-creates any of its VMs elsewhere (vm_placed comes after this).
            for su in failed:
                self._readiness.out_of_service(
                    su, f"host {name} {ev.kind.value.partition('.')[2]}")

    def _failed(self, ev: StoredEvent, name: str, noticed: Failed) -> Failed:
        """The SUs ``ev`` is a failure of, each with the life that failed, if known."""
        if ev.kind == Kind.VNFC_CRASHED:
            if name not in self._roster.group_of:
                return {}
            if name in noticed:
                return {name: noticed[name]}
            cause_kind, _, cause = str(ev.details.get("cause_entity") or "").partition("/")
            lost = self._lost_with_vm.get(cause, {}) if cause_kind == "vm" else {}
            if name in lost:
                return {name: lost[name]}
            pid = ev.details.get("pid")
            return {name: self._readiness.life_with_pid(name, pid)
                    if isinstance(pid, int) else None}
        if ev.kind in (Kind.VM_CRASHED, Kind.VM_HUNG):
            return {su: noticed.get(su) for su in self._roster.sus_on_vm(name)}
        if ev.kind in (Kind.HOST_DOWN, Kind.HOST_FENCED):
            return dict.fromkeys(self._roster.sus_on_host(name))
        return {}

    def _seen(self, ev: StoredEvent) -> Failed | None:
        """Note an agent's stored event; what its notice took out, if one came first."""
        if ev.origin != "agent" or ev.seq <= 0 or ev.host not in self._roster.hosts:
            return None
        mark = self._marks.setdefault(ev.host, _AgentMark())
        mark.highest = max(mark.highest, ev.seq)
        return mark.noticed.pop(ev.seq, None)

    # -- agents' notices ---------------------------------------------------------------------
    def on_notice(self, n: Notice) -> None:
        if n.host not in self._roster.hosts:
            log.warning("ignoring a notice from %r: not a host of this deployment", n.host)
            return
        mark = self._marks.setdefault(n.host, _AgentMark())
        if mark.incarnation is not None and mark.incarnation != n.incarnation:
            mark.highest = 0  # the agent restarted: its numbering may have started again
        mark.incarnation = n.incarnation
        if n.seq <= mark.highest:
            log.debug("notice %s/%d (%s %s): seen already", n.host, n.seq, n.kind, n.entity)
            return
        mark.highest = n.seq
        failed = self._noticed(n)
        if not failed:
            return
        mark.noticed[n.seq] = failed
        while len(mark.noticed) > NOTICED_KEPT:
            mark.noticed.popitem(last=False)
        self._members.settle(failed)

    def _noticed(self, n: Notice) -> Failed:
        """Readiness changes for notice ``n``; the lives it took out or suspected."""
        name = n.entity.partition("/")[2]
        failed: Failed = {}
        if n.kind == "vnfc.crashed":
            life = self._readiness.life(name) if name in self._roster.group_of else None
            if life is None or self._roster.endpoint[name].host != n.host \
                    or n.pid != life.pid:
                log.info("ignoring notice %s/%d: %s (pid %s) is not a registered life here",
                         n.host, n.seq, n.entity, n.pid)
                return {}
            if self._readiness.out_of_service(
                    name, f"VNFC exited (agent's notice: pid {n.pid})", life=life):
                failed[name] = life
            return failed
        for su in self._roster.sus_on_vm(name):
            if self._roster.endpoint[su].host != n.host:
                continue  # a notice from a host the VM has left (ADR 0011)
            life = self._readiness.life(su)
            failed[su] = life
            if n.kind == "vm.crashed":
                self._readiness.out_of_service(su, f"VM {name} crashed (agent's notice)",
                                               life=life)
            else:
                self._readiness.suspect(su, f"VM {name} hung (agent's notice)", life=life)
        return failed
