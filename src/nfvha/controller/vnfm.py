"""The generic VNFM: availability management for the VNFs of the topology (ADR 0008).

Knowledge flows in from two sides: the components' own SDK connections (register,
pongs, acknowledgements) and the VIM's events (a VNFC exited, a VM crashed or hung,
a host is down and fenced). Per service group the VNFM keeps every SU's readiness
and, whenever it changes, makes one decision from an immutable snapshot
(``nfvha.amf.engine.decide``): the new assignment records are written with
compare-and-set first, then the orders go out carrying the new epoch.

Readiness rules (why two actives cannot happen):
- a dropped connection or missing pongs make an SU ``suspect``, never more: a
  suspect may still be serving;
- ``out-of-service`` needs a confirmation: the host agent saw the process or VM
  die, the host is down (fenced), or the active lease plus a margin has passed
  since the AM last granted the SU its lease (a live component has quiesced
  itself by then: a grant runs from the request's send time);
- an SU counted out gets no lease and no role until it is out of every record.

Repair runs in the background after the failover (UC-1, UC-5): the escalation
tracker turns repeated failures into the next level's recommendation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from nfvha.amf.engine import decide, orders
from nfvha.amf.escalation import EscalationTracker
from nfvha.amf.model import (
    AssignmentRecord,
    HaState,
    Order,
    Readiness,
    Recommendation,
    ServiceGroup,
    Snapshot,
    SuView,
)
from nfvha.controller.config import AmfConfig, ComponentEndpoint
from nfvha.controller.vmrepair import RepairRefused, RepairTicket, VmRepairPolicy
from nfvha.model.events import Kind, StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology
from nfvha.store.assignments import AssignmentStore
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock
from nfvha.util.tasks import background
from nfvha.wire.amf import (
    COMPONENT_MESSAGE,
    MAX_LINE_BYTES,
    CheckpointRead,
    CheckpointWrite,
    LeaseRequest,
    MemberFailed,
    Refused,
    Register,
    Report,
)
from nfvha.wire.frames import CommandOp, Reply

log = logging.getLogger(__name__)


def _always() -> bool:
    return True


MAX_DECISION_ROUNDS = 4  # a restarted SU: removed in one round, reassigned in the next


class AgentCommands(Protocol):
    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply: ...


class RepairPort(Protocol):
    """The VIM's repair operations, as the VNFM asks for them."""

    async def restart_component(self, host: str, vnfc: str) -> None: ...

    async def kill_and_restart_component(self, host: str, vnfc: str) -> None: ...

    async def stop_vm(self, vm: str, host: str) -> None: ...

    async def start_vm(self, vm: str, host: str) -> None: ...

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket: ...


class SuStatus(BaseModel):
    name: str
    readiness: str
    connected: bool


class SiStatus(BaseModel):
    si: str
    epoch: int
    active: list[str]
    standby: list[str]
    # When this AM decided the record at ``epoch`` (CLOCK_MONOTONIC, machine-wide); None
    # for a record it did not write (an earlier AM's, adopted).
    decided_mono_ns: int | None = None


class VnfAvailability(BaseModel):
    vnf: str
    redundancy: str
    service_units: list[SuStatus]
    service_instances: list[SiStatus]


@dataclass
class _Session:
    su: str
    incarnation: str
    writer: asyncio.StreamWriter


@dataclass
class _MemberReport:
    """The failure of one life (incarnation) of an LB member, and who recovers it: the
    VIM's path once it confirmed it (``timer`` None), else the timer's own."""

    life: str | None
    timer: asyncio.TimerHandle | None
    reported_ns: int = 0


@dataclass
class Decision:
    """One written record, for observers (the scenario runner, the API)."""

    vnf: str
    record: AssignmentRecord
    decided_mono_ns: int
    reason: str


class Vnfm:
    def __init__(self, topology: Topology, cfg: AmfConfig, store: AssignmentStore,
                 repair: RepairPort, settings: Settings, clock: Clock, *,
                 member_confirm_s: float | None = None,
                 decisions_allowed: Callable[[], bool] | None = None) -> None:
        """``decisions_allowed``: in a cluster, whether this controller leads right now
        (ADR 0013); asked before every decision and repair. None: always (one controller)."""
        self._cfg = cfg
        self._decisions_allowed = decisions_allowed or _always
        self._store = store
        self._repair = repair
        self._settings = settings
        self._clock = clock
        managed = {c.name for c in cfg.components}
        self.groups = {v.name: ServiceGroup.from_vnf(v) for v in topology.vnfs
                       if all(c.name in managed for c in v.components)}
        self._endpoint: dict[str, ComponentEndpoint] = {c.name: c for c in cfg.components}
        self._group_of = {su: g.name for g in self.groups.values() for su in g.sus}
        self._readiness: dict[str, Readiness] = {su: Readiness.UNKNOWN for su in self._group_of}
        self._last_answer_ns: dict[str, int] = {}
        self._incarnation: dict[str, str] = {}
        # Counted out of service (or restarted): out of service, and granted no lease,
        # until out of every record - its old roles go before it gets new ones.
        self._latched: set[str] = set()
        self._last_grant_ns: dict[str, int] = {}
        self._sessions: dict[str, _Session] = {}
        self._escalation = {g.name: EscalationTracker(g.escalation, clock)
                            for g in self.groups.values()}
        self._kicked: dict[str, str] = {}  # vnf -> why
        self._repairing: set[str] = set()  # VMs and VNFCs with a repair under way
        self._retry: set[str] = set()  # groups whose decision met an unavailable store
        self._server: asyncio.Server | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.decisions: list[Decision] = []
        self._decided_ns: dict[str, tuple[int, int]] = {}  # si -> (epoch, decided mono ns)
        # IF-2: how long a member_failed waits for the VIM's word (a crash, a hung VM)
        # before the VNFM restarts the member itself: VM-hang detection + a heartbeat.
        self._member_confirm_s = member_confirm_s if member_confirm_s is not None else (
            settings.guest_hang_after_ms + settings.guest_heartbeat_interval_ms + 200) / 1000
        self._member_reports: dict[str, _MemberReport] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._cfg.listen_ip, self._cfg.port, limit=MAX_LINE_BYTES,
            reuse_address=True)
        # Any lease a component holds was granted before this AM started (ADR 0008);
        # the grace gives live components time to reconnect before they are counted out.
        started = self._clock.mono_ns() + self._settings.amf_takeover_grace_ms * 1_000_000
        self._last_grant_ns = dict.fromkeys(self._group_of, started)
        self._watch_task = asyncio.create_task(self._watch_loop(), name="vnfm-watch")
        for vnf in self.groups:
            self._kick(vnf, "start")

    async def close(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions.values()):
            s.writer.close()

    # -- what the VNFM knows ------------------------------------------------------------
    def readiness(self, su: str) -> Readiness:
        return self._readiness[su]

    def records(self, vnf: str) -> dict[str, AssignmentRecord | None]:
        return {si: self._store.get(si) for si in self.groups[vnf].sis}

    def status(self) -> list[VnfAvailability]:
        out = []
        for vnf, g in self.groups.items():
            recs = self.records(vnf)
            out.append(VnfAvailability(
                vnf=vnf, redundancy=g.redundancy,
                service_units=[SuStatus(name=su, readiness=self._readiness[su].value,
                                        connected=su in self._sessions) for su in g.sus],
                service_instances=[
                    SiStatus(si=si, epoch=r.epoch if r else 0,
                             active=list(r.active) if r else [],
                             standby=list(r.standby) if r else [],
                             decided_mono_ns=self._decided_at(si, r))
                    for si, r in recs.items()]))
        return out

    def _decided_at(self, si: str, record: AssignmentRecord | None) -> int | None:
        epoch, ns = self._decided_ns.get(si, (0, 0))
        return ns if record is not None and record.epoch == epoch else None

    # -- the VIM's events --------------------------------------------------------------
    def on_events(self, events: Iterable[StoredEvent]) -> None:
        for ev in events:
            self._on_event(ev)

    def _on_event(self, ev: StoredEvent) -> None:
        name = ev.entity.partition("/")[2]
        self._settle_member_reports(ev)
        if ev.kind == Kind.VNFC_CRASHED and name in self._group_of:
            self._out_of_service(name, f"VNFC exited ({ev.description})")
            if not ev.details.get("cause_entity"):
                # Its own failure; one caused by its VM's is the VM's to count/repair.
                self._component_failed(name)
        elif ev.kind == Kind.VM_CRASHED:
            for su in self._sus_on_vm(name):
                self._out_of_service(su, f"VM {name} crashed")
            if self._sus_on_vm(name):
                self._repair_vm(name, failure=ev.id)
        elif ev.kind == Kind.VM_HUNG:
            for su in self._sus_on_vm(name):
                self._suspect(su, f"VM {name} hung")
            if self._sus_on_vm(name):
                # Isolate first (REC-1): a hung VM that thaws must not act again, so the
                # repair policy stops it; stopped, its SUs are confirmed out of service.
                self._repair_vm(name, failure=ev.id)
        elif ev.kind in (Kind.HOST_DOWN, Kind.HOST_FENCED):
            # Down: confirmed by its fence device's power status or by its peers.
            # Fenced: the VIM's host repair powered it off (ADR 0011), before it
            # re-creates any of its VMs elsewhere (vm_placed comes after this).
            for su, ep in self._endpoint.items():
                if ep.host == name and su in self._group_of:
                    self._out_of_service(su, f"host {name} {ev.kind.value.partition('.')[2]}")

    def _sus_on_vm(self, vm: str) -> list[str]:
        return [su for su, ep in self._endpoint.items() if ep.vm == vm and su in self._group_of]

    # -- readiness ---------------------------------------------------------------------
    def _out_of_service(self, su: str, why: str) -> None:
        if self._readiness[su] is not Readiness.OUT_OF_SERVICE:
            log.info("SU %s out of service: %s", su, why)
        self._readiness[su] = Readiness.OUT_OF_SERVICE
        self._latched.add(su)
        s = self._sessions.pop(su, None)
        if s is not None:
            s.writer.close()  # whatever it still says is from a life we have written off
        self._kick(self._group_of[su], f"{su} out of service: {why}")

    def _suspect(self, su: str, why: str) -> None:
        if self._readiness[su] in (Readiness.IN_SERVICE, Readiness.UNKNOWN):
            log.info("SU %s suspect: %s", su, why)
            self._readiness[su] = Readiness.SUSPECT

    def _answered(self, su: str) -> None:
        self._last_answer_ns[su] = self._clock.mono_ns()
        if self._readiness[su] is Readiness.SUSPECT and su in self._sessions:
            self._readiness[su] = Readiness.IN_SERVICE

    def _check_leases(self) -> None:
        """Suspect after three missed lease requests; out of service once the lease of
        the last grant, plus the margin, is over: a grant runs from its request's send,
        before the grant, so the component has quiesced itself by then (ADR 0008)."""
        now = self._clock.mono_ns()
        ping_ns = self._settings.amf_ping_interval_ms * 1_000_000
        gone_ns = (self._settings.amf_active_lease_ms
                   + self._settings.amf_lease_margin_ms) * 1_000_000
        for su, r in self._readiness.items():
            if r is Readiness.OUT_OF_SERVICE:
                continue
            last = self._last_answer_ns.get(su)
            if r is Readiness.IN_SERVICE and last is not None and now - last > 3 * ping_ns:
                self._suspect(su, f"no lease request for {(now - last) / 1e6:.0f} ms")
            ungranted = now - self._last_grant_ns.get(su, now)
            if ungranted > gone_ns and (r is not Readiness.UNKNOWN or self._named(su)):
                # An SU never heard of since the AM started matters only if a record
                # names it (the AM restarted while it was cut off).
                self._out_of_service(su, f"no lease granted for {ungranted / 1e6:.0f} ms:"
                                         " any lease it held has expired")
                if r is Readiness.UNKNOWN:
                    # Silent since before this AM (a new leader's term): its failure may
                    # have been stored, but not acted on, by the previous one. Starting
                    # it is harmless if it runs (``vnfc.start`` leaves it alone).
                    ep = self._endpoint[su]
                    self._run_repair(su, self._repair.restart_component(ep.host, su))

    def _named(self, su: str) -> bool:
        return any(r is not None and su in r.members
                   for r in self.records(self._group_of[su]).values())

    # -- decisions ---------------------------------------------------------------------
    def _kick(self, vnf: str, why: str) -> None:
        if not self._kicked:
            asyncio.get_running_loop().call_soon(self._decide_kicked)
        self._kicked.setdefault(vnf, why)

    def _decide_kicked(self) -> None:
        kicked, self._kicked = self._kicked, {}
        if not self._decisions_allowed():  # leader gate (ADR 0013)
            log.info("not the leader: no decision for %s", sorted(kicked))
            return
        for vnf, why in kicked.items():
            try:
                self._decide(vnf, why)
            except StoreUnavailable:
                log.exception("assignment store unavailable; %s decided again later", vnf)
                self._retry.add(vnf)

    def _effective(self, su: str, records: dict[str, AssignmentRecord | None]) -> Readiness:
        if su in self._latched:
            if any(r is not None and su in r.members for r in records.values()):
                return Readiness.OUT_OF_SERVICE  # its old life's roles go first
            self._latched.discard(su)
        return self._readiness[su]

    def _decide(self, vnf: str, why: str) -> None:
        group = self.groups[vnf]
        for _ in range(MAX_DECISION_ROUNDS):
            records = self.records(vnf)
            snapshot = Snapshot(
                group=group, records=records, now=self._clock.wall(),
                sus={su: SuView(name=su, readiness=self._effective(su, records),
                                vm=self._endpoint[su].vm, host=self._endpoint[su].host)
                     for su in group.sus})
            new = decide(snapshot)
            if not new:
                return
            for rec in new:
                old = records[rec.si]
                if not self._store.compare_and_set(rec.si, old.epoch if old else 0, rec):
                    log.warning("lost the assignment race for %s; deciding again", rec.si)
                    break
                decided_ns = self._clock.mono_ns()
                self.decisions.append(Decision(vnf, rec, decided_ns, why))
                self._decided_ns[rec.si] = (rec.epoch, decided_ns)
                log.info("%s epoch %d: active %s, standby %s (%s)", rec.si, rec.epoch,
                         list(rec.active), list(rec.standby), why)
                for order in orders(old, rec):
                    self._send_order(group, rec, order)
        log.error("%s: no stable assignment after %d rounds", vnf, MAX_DECISION_ROUNDS)

    def _send_order(self, group: ServiceGroup, rec: AssignmentRecord, order: Order) -> None:
        s = self._sessions.get(order.su)
        if s is None:
            return  # it learns its role when it registers
        entry = self._assignment(group, rec, order.ha_state)
        if order.ha_state is None:
            self._write(s, {"op": "remove", "si": order.si, "epoch": order.epoch})
        else:
            self._write(s, {"op": "assign", **entry})

    def _assignment(self, group: ServiceGroup, rec: AssignmentRecord,
                    state: HaState | None) -> dict[str, Any]:
        """One SI's assignment to one SU at the record's epoch, as orders and grants
        state it (``ha_state`` None: not assigned there)."""
        entry: dict[str, Any] = {"si": rec.si, "ha_state": state.value if state else None,
                                 "epoch": rec.epoch, "vip": None, "peer": None}
        if state is HaState.ACTIVE:
            entry["vip"] = self._cfg.vips.get(group.name)
            entry["peer"] = self._peer(rec.standby)
        elif state is HaState.STANDBY:
            entry["peer"] = self._peer(rec.active)
        return entry

    def _grant(self, s: _Session, n: int) -> None:
        """Answer lease request ``n``. None for an SU counted out of service until it is
        out of every record; a grant states every record's assignment to the SU, so an
        order lost or overtaken is corrected by the next grant."""
        if not self._decisions_allowed():
            return  # no longer leading (ADR 0013): silence, the lease runs out by itself
        vnf = self._group_of[s.su]
        records = self.records(vnf)
        if self._effective(s.su, records) is Readiness.OUT_OF_SERVICE:
            self._write(s, {"op": "grant", "n": n, "granted": False})
            return
        self._last_grant_ns[s.su] = self._clock.mono_ns()
        group = self.groups[vnf]
        self._write(s, {"op": "grant", "n": n, "granted": True, "assignments": [
            self._assignment(group, r, r.ha_state_of(s.su))
            for r in records.values() if r is not None]})

    def _peer(self, sus: tuple[str, ...]) -> dict[str, Any] | None:
        if not sus:
            return None
        ep = self._endpoint[sus[0]]
        return {"component": ep.name, "address": ep.address, "port": ep.sync_port}

    def _write(self, s: _Session, msg: dict[str, Any]) -> None:
        if not s.writer.is_closing():
            s.writer.write(json.dumps(msg).encode() + b"\n")

    # -- repair (background) ------------------------------------------------------------
    def _component_failed(self, su: str, *, alive: bool = False) -> None:
        """``alive``: it may still run (hung), so a restart kills it first."""
        if not self._decisions_allowed():  # leader gate (ADR 0013)
            return
        vnf = self._group_of[su]
        ep = self._endpoint[su]
        rec = self._escalation[vnf].record_component_failure(
            su, ep.vm, has_standby=self.groups[vnf].standbys_per_si > 0)
        if rec in (Recommendation.COMPONENT_RESTART, Recommendation.COMPONENT_FAILOVER):
            restart = (self._repair.kill_and_restart_component if alive
                       else self._repair.restart_component)
            self._run_repair(su, restart(ep.host, su))
        elif rec is Recommendation.NODE_FAILOVER:
            log.warning("%s failed too often: escalating to a repair of VM %s", su, ep.vm)
            if self._vim_repairs_host(su, failfast=False):
                return  # UC-9: several of its host's VMs reported; the host is repaired
            self._repair_vm(ep.vm)
        elif rec is Recommendation.NODE_FAILFAST:
            if self._vim_repairs_host(su, failfast=True):
                log.warning("%s: VM %s failed too often on host %s: the VIM repairs the"
                            " host", su, ep.vm, ep.host)
                return
            log.error("%s: VM %s failed too often on host %s; no host repair available"
                      " (no fence device), repairing the VM", su, ep.vm, ep.host)
            self._repair_vm(ep.vm)

    def _repair_vm(self, vm: str, *, failure: int | None = None) -> None:
        """Ask the VIM's repair policy (ADR 0010) to repair the VM (``failure``: the
        event it failed with): it applies the VNF's repair_action and is the only one
        that repairs VMs - asked about a failure it is already repairing, it joins that
        repair (VNFHA-10). Once the VM is known not to run (a hung or running one is
        stopped first), its SUs are confirmed out of service; after a failover to a
        standby VM they live there."""
        def stopped() -> None:
            for su in self._sus_on_vm(vm):
                self._out_of_service(su, f"VM {vm} stopped")

        if not self._decisions_allowed():  # leader gate (ADR 0013)
            return
        try:
            ticket = self._repair.repair_vm(vm, requested_by="vnfm", failure=failure)
        except (RepairRefused, KeyError, RuntimeError) as e:
            log.error("VM %s cannot be repaired: %s", vm, e)
            return
        job = ticket.job
        if job is None:
            return  # that failure is over already
        job.when_stopped(stopped)

        async def repair() -> None:
            done = await job.outcome()
            if not done.ok:
                raise RuntimeError(done.error)
            if done.replacement != vm:
                for su in self._sus_on_vm(vm):
                    ep = self._endpoint[su]
                    self._endpoint[su] = ep.model_copy(update={
                        "vm": done.replacement, "host": done.replacement_host,
                        "address": done.replacement_address or ep.address})

        self._run_repair(f"vm/{vm}", repair())

    def _run_repair(self, key: str, work: Coroutine[Any, Any, None]) -> None:
        if key in self._repairing or not self._decisions_allowed():  # leader gate
            work.close()
            return
        self._repairing.add(key)

        async def run() -> None:
            try:
                await work
            except Exception as e:
                log.error("repair of %s failed: %s", key, e)
            finally:
                self._repairing.discard(key)

        background(run())

    # -- component sessions ------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            msg = COMPONENT_MESSAGE.validate_json(line)
        except (TimeoutError, ValidationError, OSError, ValueError):
            writer.close()
            return
        if not isinstance(msg, Register) or msg.component not in self._group_of:
            log.warning("refusing a component connection: %r", line[:200])
            writer.close()
            return
        session = self._register(msg, writer)
        try:
            while line := await reader.readline():
                self._on_message(session, line)
        except (OSError, ValueError):
            pass
        finally:
            writer.close()
            if self._sessions.get(session.su) is session:
                del self._sessions[session.su]
                self._suspect(session.su, "its connection closed")

    def _register(self, msg: Register, writer: asyncio.StreamWriter) -> _Session:
        su = msg.component
        vnf = self._group_of[su]
        old = self._sessions.pop(su, None)
        if old is not None:
            old.writer.close()
        records = self.records(vnf)
        named = {si: r for si, r in records.items() if r is not None and su in r.members}
        held: dict[str, tuple[str, int]] = {
            h.si: (h.ha_state, h.epoch) for h in msg.assignments}
        known = self._incarnation.get(su)
        # Counted out (latched), it gets no role back until out of every record, even
        # on the same incarnation: a partitioned active's record moved on without it.
        adopt = su not in self._latched and (known == msg.incarnation or (known is None and all(
            held.get(si, ("", 0))[0] == (r.ha_state_of(su) or "") for si, r in named.items())))
        if named and not adopt:
            self._latched.add(su)  # its roles died with its previous life
        self._incarnation[su] = msg.incarnation
        session = _Session(su, msg.incarnation, writer)
        self._sessions[su] = session
        self._readiness[su] = Readiness.IN_SERVICE
        self._answered(su)
        self._write(session, {"op": "welcome", "lease_ms": self._settings.amf_active_lease_ms,
                              "ping_interval_ms": self._settings.amf_ping_interval_ms})
        if adopt:
            # Re-send what it holds at the current epoch: it may have missed an order.
            group = self.groups[vnf]
            for r in named.values():
                state = r.ha_state_of(su)
                self._send_order(group, r, Order(su=su, si=r.si, ha_state=state,
                                                 epoch=r.epoch))
        log.info("SU %s registered (pid %d, %s)", su, msg.pid,
                 "new" if not named else "adopted" if adopt else "restarted")
        self._kick(vnf, f"{su} registered")
        return session

    def _on_message(self, s: _Session, line: bytes) -> None:
        try:
            msg = COMPONENT_MESSAGE.validate_json(line)
        except ValidationError as e:
            log.warning("SU %s sent an unreadable message: %s", s.su, e)
            return
        self._answered(s.su)
        if isinstance(msg, Refused):
            log.warning("SU %s refused epoch %d of %s: %s", s.su, msg.epoch, msg.si, msg.reason)
        elif isinstance(msg, Report) and not msg.healthy:
            log.warning("SU %s reports itself unhealthy: %s", s.su, msg.reason)
            self._component_failed(s.su)
        elif isinstance(msg, LeaseRequest):
            self._grant(s, msg.n)
        elif isinstance(msg, CheckpointWrite | CheckpointRead):
            self._checkpoint(s, msg)
        elif isinstance(msg, MemberFailed):
            self._on_member_failed(s, msg)
        # assigned / removed: answers; _answered above is all they change

    def _checkpoint(self, s: _Session, msg: CheckpointWrite | CheckpointRead) -> None:
        # Kept per VNF: the component that restarts, or replaces this one, reads it.
        owner = self._group_of[s.su]
        try:
            if isinstance(msg, CheckpointWrite):
                self._store.checkpoint_write(owner, msg.key, msg.value)
                reply: dict[str, Any] = {"ok": True, "value": None, "error": None}
            else:
                got = self._store.checkpoint_read(owner, msg.key)
                reply = {"ok": True, "value": got[1] if got else None, "error": None}
        except (StoreUnavailable, ValueError, TypeError) as e:
            reply = {"ok": False, "value": None, "error": str(e)}
        self._write(s, {"op": "checkpoint", "id": msg.id, **reply})

    async def _watch_loop(self) -> None:
        interval = self._settings.amf_ping_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            self._check_leases()
            retry, self._retry = self._retry, set()
            for vnf in retry:
                self._kick(vnf, "retry after store failure")

    # -- IF-2: a load balancer's reports about its members ------------------------------
    def _on_member_failed(self, s: _Session, msg: MemberFailed) -> None:
        """The active LB of a VNF excluded one of its members: a failure report from an
        outside observer. The member is suspect at once (it may still serve others);
        its recovery waits up to ``member_confirm_s`` for the VIM's word: a crash or a
        hung VM is recovered by that path and counted there, once (VNFHA-10). Without
        it, a member that has not answered the VNFM either since the report is alive
        but hung: it is killed and restarted, counted by the escalation tracker like
        any component failure. One that answered was only stalled (a loaded CPU): the
        LB re-includes it at its next health-check answer, and a restart would do harm."""
        lb = self._group_of[s.su]
        member = msg.member
        if self._cfg.balancers.get(lb) is None or \
                self._group_of.get(member) != self._cfg.balancers[lb]:
            log.warning("SU %s reported member %r failed: not one of its members", s.su, member)
            return
        if not any(r is not None and s.su in r.active for r in self.records(lb).values()):
            log.info("ignoring member_failed %s from %s: not the active load balancer",
                     member, s.su)
            return
        life = self._incarnation.get(member)
        seen = self._member_reports.get(member)
        if life is None or (seen is not None and seen.life == life):
            return  # never registered (still starting), or this life's failure is known
        self._suspect(member, f"load balancer {s.su}: {msg.reason}")
        timer = asyncio.get_running_loop().call_later(
            self._member_confirm_s, self._member_unconfirmed, member, life)
        self._member_reports[member] = _MemberReport(life, timer, self._clock.mono_ns())

    def _member_unconfirmed(self, member: str, life: str) -> None:
        report = self._member_reports.get(member)
        if report is None or report.life != life or report.timer is None:
            return
        report.timer = None
        vm = self._endpoint[member].vm
        if self._incarnation.get(member) != life or member in self._repairing \
                or f"vm/{vm}" in self._repairing:
            return  # restarted meanwhile, or already being repaired
        if self._last_answer_ns.get(member, 0) > report.reported_ns:
            log.info("SU %s answered after its load balancer reported it failed: stalled,"
                     " not hung; not restarted", member)
            del self._member_reports[member]  # a later exclusion is a new report
            return
        log.warning("SU %s: its load balancer's failure report was not confirmed by the"
                    " VIM within %.0f ms: restarting it", member, self._member_confirm_s * 1e3)
        self._component_failed(member, alive=True)

    def _settle_member_reports(self, ev: StoredEvent) -> None:
        """The VIM confirmed a failure (its path recovers it): a load balancer's report
        about the same life, before or after this, starts nothing more."""
        kind, name = ev.kind, ev.entity.partition("/")[2]
        if kind == Kind.VNFC_CRASHED:
            sus = [name] if name in self._group_of else []
        elif kind in (Kind.VM_CRASHED, Kind.VM_HUNG):
            sus = self._sus_on_vm(name)
        elif kind in (Kind.HOST_DOWN, Kind.HOST_FENCED):
            sus = [su for su, ep in self._endpoint.items()
                   if ep.host == name and su in self._group_of]
        else:
            return
        for su in sus:
            report = self._member_reports.get(su)
            if report is not None and report.timer is not None:
                report.timer.cancel()
            self._member_reports[su] = _MemberReport(self._incarnation.get(su), None)

    # -- the VIM's host repair (ADR 0011) -----------------------------------------------
    _host_repair: VimRepairHook | None = None

    def use_host_repair(self, hook: VimRepairHook) -> None:
        """VM repair requests of the escalation go to the VIM first (UC-9)."""
        self._host_repair = hook

    def vm_placed(self, vm: str, host: str) -> None:
        """The VIM re-created ``vm`` on ``host`` (evacuation): its components live there
        now (same address; the fabric moves the VM's network with it)."""
        for su, ep in list(self._endpoint.items()):
            if ep.vm == vm and ep.host != host:
                log.info("SU %s: VM %s now on host %s (was %s)", su, vm, host, ep.host)
                self._endpoint[su] = ep.model_copy(update={"host": host})

    def _vim_repairs_host(self, su: str, *, failfast: bool) -> bool:
        if self._host_repair is None:
            return False
        return self._host_repair(self._endpoint[su].vm, f"vnfm escalation of {su}", failfast)


class VimRepairHook(Protocol):
    """``(vm, source, failfast) -> True`` when the VIM repairs the VM's host instead
    of the VM (it has started, or is under way)."""

    def __call__(self, vm: str, source: str, failfast: bool) -> bool: ...


class AgentRepair:
    """Repairs through the host agents: restart a VNFC; restart a VM in its initial
    state (VNFHA-13) - stopped first, so a VM escalated to while still running is
    really replaced."""

    def __init__(self, agents: AgentCommands, timeout_s: float = 20.0, *,
                 vm_repair: VmRepairPolicy | None = None) -> None:
        self._agents = agents
        self._timeout_s = timeout_s
        self._vm_repair = vm_repair

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        """VM repairs are the repair policy's (ADR 0010), whoever asks."""
        if self._vm_repair is None:
            raise RuntimeError("no VM repair policy")
        return self._vm_repair.repair_vm(vm, requested_by=requested_by, failure=failure)

    async def restart_component(self, host: str, vnfc: str) -> None:
        await self._command(host, "vnfc.start", vnfc)

    async def kill_and_restart_component(self, host: str, vnfc: str,
                                         poll_s: float = 0.02) -> None:
        """Restart a VNFC that may still run (hung): ``vnfc.start`` leaves a live process
        alone, so SIGKILL it first, then start it once the agent has seen it exit."""
        reply = await self._agents.command(host, "vnfc.stop", vnfc, {"signal": "KILL"},
                                           timeout_s=self._timeout_s)
        if not reply.ok:
            raise RuntimeError(f"vnfc.stop {vnfc} on {host}: {reply.error}")
        for _ in range(max(1, int(self._timeout_s / poll_s))):
            reply = await self._agents.command(host, "vnfc.start", vnfc,
                                               timeout_s=self._timeout_s)
            if not reply.ok:
                raise RuntimeError(f"vnfc.start {vnfc} on {host}: {reply.error}")
            if not reply.result.get("already"):
                return
            await asyncio.sleep(poll_s)  # the agent has not seen the exit yet
        raise RuntimeError(f"{vnfc} on {host} still runs {self._timeout_s:g} s after SIGKILL")

    async def stop_vm(self, vm: str, host: str) -> None:
        await self._command(host, "vm.stop", vm)

    async def start_vm(self, vm: str, host: str) -> None:
        await self._command(host, "vm.start", vm)

    async def _command(self, host: str, op: CommandOp, target: str) -> None:
        reply = await self._agents.command(host, op, target, timeout_s=self._timeout_s)
        if not reply.ok:
            raise RuntimeError(f"{op} {target} on {host}: {reply.error}")
