"""``AvailabilityManager``: the manager side of availability management (ADR 0008),
OpenSAF's AMF director role - the generic VNFM's engine, and a VNF's own AM's.

Knowledge flows in from three sides: the components' own SDK connections (register,
lease requests, acknowledgements: ``sessions``), the VIM's stored events (a VNFC
exited, a VM crashed or hung, a host is down and fenced) and the agents' direct
failure notices (ADR 0014: ``failures``). Per service group the manager keeps every
SU's readiness (``readiness``) and, whenever it changes, makes one decision from an
immutable snapshot (``decisions``): the new assignment records are written with
compare-and-set first, then the orders go out carrying the new epoch. Repair runs in
the background after the failover (``repair``); a load balancer's member reports
(IF-2, ``members``) and the checkpoint service (IF-3, ``checkpoints``) ride on the
same sessions.

This class only wires those together and is what its users see.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable

from nfvha.amf.config import AmfConfig
from nfvha.amf.manager.checkpoints import Checkpoints
from nfvha.amf.manager.decisions import Decider, Decision
from nfvha.amf.manager.failures import FailureReports
from nfvha.amf.manager.members import MemberReports
from nfvha.amf.manager.readiness import Life, ReadinessTracker
from nfvha.amf.manager.repair import Repairs
from nfvha.amf.manager.roster import Roster
from nfvha.amf.manager.sessions import ComponentMessage, ComponentSessions, Session
from nfvha.amf.manager.status import VnfAvailability, availability
from nfvha.amf.model import AssignmentRecord, Order, Readiness, ServiceGroup
from nfvha.amf.ports import RepairPort, VimRepairHook
from nfvha.model.events import StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology
from nfvha.store.assignments import AssignmentStore
from nfvha.util.clock import Clock
from nfvha.wire.amf import (
    CheckpointRead,
    CheckpointWrite,
    LeaseRequest,
    MemberFailed,
    Refused,
    Register,
    Report,
)
from nfvha.wire.director import Notice

log = logging.getLogger(__name__)


def _always() -> bool:
    return True


class AvailabilityManager:
    def __init__(self, topology: Topology, cfg: AmfConfig, store: AssignmentStore,
                 repair: RepairPort, settings: Settings, clock: Clock, *,
                 member_confirm_s: float | None = None,
                 decisions_allowed: Callable[[], bool] | None = None) -> None:
        """Manages the VNFs of ``topology`` all of whose components ``cfg`` names.
        ``decisions_allowed``: in a cluster, whether this controller leads right now
        (ADR 0013); asked before every decision, grant and repair. None: always.
        ``member_confirm_s`` (IF-2): how long a load balancer's ``member_failed`` waits
        for the VIM's word (a crash, a hung VM) before the manager restarts the member
        itself; by default VM-hang detection + a heartbeat."""
        allowed = decisions_allowed or _always
        self._settings = settings
        self._roster = Roster(topology, cfg, store)
        self._sessions = ComponentSessions(cfg, settings, self)
        self._readiness = ReadinessTracker(
            self._roster, settings, clock, on_out=self._counted_out,
            connected=self._sessions.connected, allowed=allowed)
        self._decider = Decider(self._roster, self._readiness, store, clock,
                                send=self._sessions.send, allowed=allowed)
        self._checkpoints = Checkpoints(self._roster, store)
        self._repairs = Repairs(self._roster, self._readiness, repair, clock, allowed=allowed)
        self._members = MemberReports(
            self._roster, self._readiness, self._repairs, clock,
            confirm_s=member_confirm_s if member_confirm_s is not None else (
                settings.guest_hang_after_ms + settings.guest_heartbeat_interval_ms + 200)
            / 1000)
        self._failures = FailureReports(self._roster, self._readiness, self._repairs,
                                        self._members)
        self._watch_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for the components, then decide every group once."""
        await self._sessions.start()
        self._readiness.start()
        self._watch_task = asyncio.create_task(self._watch_loop(), name="amf-watch")
        for vnf in self._roster.groups:
            self._decider.kick(vnf, "start")

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        self._sessions.close()

    # -- what the manager knows --------------------------------------------------------------
    @property
    def groups(self) -> dict[str, ServiceGroup]:
        return self._roster.groups

    @property
    def decisions(self) -> deque[Decision]:
        """The latest records this manager wrote, oldest first (bounded)."""
        return self._decider.decisions

    def readiness(self, su: str) -> Readiness:
        return self._readiness[su]

    def records(self, vnf: str) -> dict[str, AssignmentRecord | None]:
        return self._roster.records(vnf)

    def status(self) -> list[VnfAvailability]:
        return availability(self._roster, self._readiness, self._sessions.connected,
                            self._decider.last)

    # -- what it is told -------------------------------------------------------------------
    def on_events(self, events: Iterable[StoredEvent]) -> None:
        """The VIM's stored events, in id order, without stale ones (ADR 0011)."""
        for ev in events:
            self._failures.on_event(ev)

    def on_notice(self, notice: Notice) -> None:
        """An agent's direct failure notice (ADR 0014): readiness only; the repair is
        its stored event's."""
        self._failures.on_notice(notice)

    def use_host_repair(self, hook: VimRepairHook) -> None:
        """VM repair requests of the escalation go to the VIM first (UC-9)."""
        self._repairs.use_host_repair(hook)

    def vm_placed(self, vm: str, host: str) -> None:
        """The VIM re-created ``vm`` on ``host`` (evacuation, ADR 0011)."""
        self._roster.vm_placed(vm, host)

    # -- the components' sessions (SessionHandler) ------------------------------------------
    def accepts(self, su: str) -> bool:
        return su in self._roster.group_of

    def registered(self, session: Session, msg: Register) -> None:
        su = msg.component
        vnf = self._roster.group_of[su]
        named = {si: r for si, r in self._roster.records(vnf).items()
                 if r is not None and su in r.members}
        adopt = self._readiness.register(su, Life(msg.pid, msg.incarnation), msg.assignments,
                                         named)
        if adopt:
            # Re-send what it holds at the current epoch: it may have missed an order.
            group = self._roster.groups[vnf]
            for r in named.values():
                self._decider.send_order(group, r, Order(su=su, si=r.si,
                                                         ha_state=r.ha_state_of(su),
                                                         epoch=r.epoch))
        log.info("SU %s registered (pid %d, %s)", su, msg.pid,
                 "new" if not named else "adopted" if adopt else "restarted")
        self._decider.kick(vnf, f"{su} registered")

    def received(self, session: Session, msg: ComponentMessage) -> None:
        su = session.su
        self._readiness.answered(su)
        if isinstance(msg, Refused):
            log.warning("SU %s refused epoch %d of %s: %s", su, msg.epoch, msg.si, msg.reason)
        elif isinstance(msg, Report) and not msg.healthy:
            log.warning("SU %s reports itself unhealthy: %s", su, msg.reason)
            self._repairs.component_failed(su)
        elif isinstance(msg, LeaseRequest):
            grant = self._readiness.grant(su, msg.n)
            if grant is not None:
                self._sessions.write(session, grant)
        elif isinstance(msg, CheckpointWrite | CheckpointRead):
            self._sessions.write(session, self._checkpoints.answer(su, msg))
        elif isinstance(msg, MemberFailed):
            self._members.on_member_failed(su, msg)
        # assigned / removed: answers; ``answered`` above is all they change

    def closed(self, su: str) -> None:
        self._readiness.suspect(su, "its connection closed")

    # -- internals ---------------------------------------------------------------------------
    def _counted_out(self, su: str, why: str) -> None:
        self._sessions.drop(su)  # whatever it still says is from a life written off
        self._decider.kick(self._roster.group_of[su], f"{su} out of service: {why}")

    async def _watch_loop(self) -> None:
        interval = self._settings.amf_ping_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for su in self._readiness.check_leases():
                # Silent since before this manager (a new leader's term): its failure
                # may have been stored, but not acted on, by the previous one. Starting
                # it is harmless if it runs (``vnfc.start`` leaves it alone).
                self._repairs.restart(su)
            self._decider.retry()
