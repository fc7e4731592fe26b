"""``Director``: the HA director process's work (ADR 0014).

One event loop that does nothing but the HA path:

- one UDP socket on the controller's agent address: host heartbeats and the
  witnesses' probe results (64-byte datagrams, ADR 0015) and the agents' failure
  notices (small JSON), read to the end at every wake-up;
- a liveness tick every quarter heartbeat interval, its work proportional to what
  changed (``HostLiveness``); its transitions go to the availability manager at
  once, and to the controller as events to store and as host states to mirror;
- the generic availability manager (``AvailabilityManager``): the components' SDK
  sessions, lease grants, readiness, role decisions and orders;
- the channel to the controller: stored events in, repairs and answers out.

In a cluster the liveness and the availability manager run per term of the member
(``TermGate``), built fresh at its start from the shared stores and torn down at its
end, as the member's own work is (ADR 0013).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from nfvha.amf.manager import AvailabilityManager
from nfvha.controller.config import ControllerConfig
from nfvha.controller.directorlink import director_socket
from nfvha.controller.fencing import Fencing, build_fencing
from nfvha.director.channel import ControllerChannel, ToDirectorMsg
from nfvha.director.liveness import HostLiveness, ProbeRequest, Transition
from nfvha.director.remote import ChannelRepair
from nfvha.director.term import TermGate
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.hosts import HostState
from nfvha.model.topology import Topology
from nfvha.store.assignments import AssignmentStore, SqliteAssignmentStore
from nfvha.store.etcd import EtcdAssignmentStore
from nfvha.store.etcd_client import EtcdClient, cmp_create_revision
from nfvha.store.leader_records import LeaderRecords
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.tasks import background
from nfvha.wire import liveness as lw
from nfvha.wire.director import (
    NOTICE_MAX_BYTES,
    Answer,
    Events,
    Notice,
    Placed,
    Publish,
    Published,
    Query,
    RepairUpdate,
    Term,
)
from nfvha.wire.director import HostState as HostStateMsg

log = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 8 << 20  # a burst of every host's heartbeat, many times over
MAX_DATAGRAMS_PER_WAKEUP = 20_000  # then the loop serves the rest and comes back
MAX_UNPUBLISHED = 10_000  # liveness events the controller has not stored yet
PUBLISH_RETRY_S = 0.5
LATE_LOG_EVERY_S = 10


class Director:
    def __init__(self, cfg: ControllerConfig, topology: Topology,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.cfg = cfg
        self.topology = topology
        self.clock = clock
        self.settings = cfg.settings
        self.gate = TermGate(clock, single=cfg.cluster is None)
        self.channel = ControllerChannel(director_socket(cfg), cfg.run_id, self._resume_after,
                                         self._on_message, on_connected=self._connected,
                                         on_lost=self._channel_lost)
        self.repair = ChannelRepair(self.channel, clock)
        self.fencing: Fencing = build_fencing(cfg, clock)
        self.liveness: HostLiveness | None = None
        self.am: AvailabilityManager | None = None
        self._term_epoch = 0  # the epoch whose work runs (0: none; single: always 0)
        self._term_lock = asyncio.Lock()
        self._last_event_id: int | None = None
        self._udp: socket.socket | None = None
        self._addresses = {h.name: h for h in cfg.hosts}
        # Probe results are taken from the witnesses' own sockets only (on the loopback
        # fallback every host is 127.0.0.1, with a port of its own).
        self._witness_at = {(h.mgmt_ip, h.probe_port): h.name for h in cfg.hosts
                            if h.mgmt_ip is not None}
        self._sqlite_store: SqliteAssignmentStore | None = None
        self._unpublished: OrderedDict[int, list[Event]] = OrderedDict()
        self._etcd: EtcdClient | None = None
        self._records: LeaderRecords | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.late_ticks = 0  # ticks skipped because the director itself stalled
        self._late_since_log = 0
        self._late_worst_s = 0.0
        self._late_logged_ns = -(LATE_LOG_EVERY_S * 10**9)

    # -- the process --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or self._stop
        await self.channel.start()
        self._open_udp()
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="liveness"))
        self._tasks.append(asyncio.create_task(self._term_watch(), name="term-watch"))
        if self.gate.single:
            await self._start_work(0)
        log.info("HA director %s: heartbeats on %s:%d, channel %s", self.cfg.run_id,
                 self.cfg.listen_ip, self.cfg.port, director_socket(self.cfg))
        try:
            await stop.wait()
        finally:
            for t in self._tasks:
                t.cancel()
            await self._end_work("the director stops")
            if self._udp is not None:
                asyncio.get_running_loop().remove_reader(self._udp.fileno())
                self._udp.close()
            await self.channel.close()
            await self.fencing.close()
            if self._etcd is not None:
                self._etcd.close()

    def _open_udp(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Sized for bursts: a thousand hosts' heartbeats arrive within milliseconds of
        # each other. As root the system's cap (rmem_max) does not apply.
        for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
            if opt is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, RECEIVE_BUFFER_BYTES)
                break
            except PermissionError:
                continue
        sock.setblocking(False)
        sock.bind((self.cfg.listen_ip, self.cfg.port))
        self._udp = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._drain)

    # -- datagrams ----------------------------------------------------------------------------
    def _drain(self) -> None:
        sock = self._udp
        if sock is None:
            return
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self._datagram(data, addr)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        hb = lw.heartbeat_fields(data)
        if hb is not None:
            if self.liveness is not None:
                self._apply(self.liveness.heartbeat(*hb))
            return
        if lw.is_liveness(data):
            try:
                d = lw.decode(data)
            except lw.BadDatagram:
                return
            witness = self._witness_at.get(addr)
            if d.kind is lw.Kind.PROBE_RESULT and self.liveness is not None \
                    and witness is not None:
                self._apply(self.liveness.probe_result(witness, d.name, d.nonce, d.reached))
                self._send_reasons()
            return
        if data[:1] == b"{" and len(data) <= NOTICE_MAX_BYTES:
            try:
                notice = Notice.model_validate_json(data)
            except ValidationError:
                return
            if self.am is not None and self.gate.is_leader():
                self.am.on_notice(notice)

    async def _tick_loop(self) -> None:
        tick_s = self.settings.host_heartbeat_interval_ms / 4000
        loop = asyncio.get_running_loop()
        expected = loop.time() + tick_s
        while True:
            await asyncio.sleep(max(0.0, expected - loop.time()))
            late = loop.time() - expected
            expected = loop.time() + tick_s
            self._drain()
            if self.liveness is None:
                continue
            if late > tick_s:
                # The director itself stalled: silence measured across the stall says
                # nothing about the hosts. Judge on the next, punctual tick.
                self._late_tick(late)
                continue
            result = self.liveness.tick()
            self._send_probes(result.probes)
            self._apply(result.transitions)
            self._send_reasons()

    def _late_tick(self, late_s: float) -> None:
        """Counted; logged at most every ``LATE_LOG_EVERY_S`` (a busy machine makes many)."""
        self.late_ticks += 1
        self._late_since_log += 1
        self._late_worst_s = max(self._late_worst_s, late_s)
        now = self.clock.mono_ns()
        if now - self._late_logged_ns >= LATE_LOG_EVERY_S * 1e9:
            log.warning("liveness ticks late (the director itself stalled): %d since the last"
                        " report, the worst %.0f ms; hosts were not judged on them",
                        self._late_since_log, self._late_worst_s * 1000)
            self._late_logged_ns, self._late_since_log, self._late_worst_s = now, 0, 0.0

    def _send_probes(self, probes: Sequence[ProbeRequest]) -> None:
        sock = self._udp
        if sock is None:
            return
        for p in probes:
            witness, target = self._addresses.get(p.witness), self._addresses.get(p.target)
            if witness is None or target is None or witness.mgmt_ip is None \
                    or target.probe_ip is None:
                continue
            data = lw.Datagram(lw.Kind.PROBE_REQUEST, p.target, nonce=p.nonce,
                               ip=target.probe_ip, port=target.probe_port).encode()
            with contextlib.suppress(OSError):  # a witness down is normal: UDP drops
                sock.sendto(data, (witness.mgmt_ip, witness.probe_port))

    # -- liveness transitions -----------------------------------------------------------------
    def _apply(self, transitions: Sequence[Transition]) -> None:
        if not transitions:
            return
        events = [e for t in transitions if (e := self._transition_event(t)) is not None]
        for t in transitions:
            self.channel.send(HostStateMsg(host=t.host, state=t.new.value, reason=t.reason,
                                           since_mono_ns=t.at_mono_ns,
                                           boot=self._boot_of(t.host)))
        if not events or not self.gate.is_leader():
            return
        if self.am is not None:
            # The availability manager learns of a host down here, not after the VIM
            # stored it: the failover does not wait for the VIM process.
            now = self.clock.mono_ns()
            self.am.on_events([StoredEvent(**e.model_dump(), id=0,
                                           received_time=self.clock.wall(),
                                           received_mono_ns=now)
                               for e in events if e.kind == Kind.HOST_DOWN])
        self._publish(events)

    def _send_reasons(self) -> None:
        """A suspect's reason changed without a transition (what its confirmation found):
        the controller's mirror shows why it is still suspect."""
        live = self.liveness
        if live is None or not live.reasons_changed:
            return
        changed, live.reasons_changed = live.reasons_changed, {}
        for host in changed:
            rec = live.state(host)
            self.channel.send(HostStateMsg(host=host, state=rec.state.value, reason=rec.reason,
                                           since_mono_ns=rec.since_mono_ns, boot=rec.boot))

    def _boot_of(self, host: str) -> int | None:
        return self.liveness.state(host).boot if self.liveness is not None else None

    def _transition_event(self, t: Transition) -> Event | None:
        if t.new == HostState.SUSPECT:
            return self._event(Kind.HOST_SUSPECT, t.host, Severity.MAJOR, "host-unreachable",
                               f"host {t.host} suspect: {t.reason}", t.at_mono_ns,
                               EventType.COMMUNICATIONS_ALARM)
        if t.new == HostState.DOWN:
            return self._event(Kind.HOST_DOWN, t.host, Severity.CRITICAL, "host-failure",
                               f"host {t.host} is down: {t.reason}", t.at_mono_ns,
                               EventType.EQUIPMENT_ALARM)
        if t.new == HostState.UP and t.old in (HostState.SUSPECT, HostState.DOWN):
            return self._event(Kind.HOST_UP, t.host, Severity.CLEARED, "host-failure",
                               f"host {t.host} is up: {t.reason}", t.at_mono_ns,
                               EventType.EQUIPMENT_ALARM, clears=True)
        return None

    def _event(self, kind: Kind, host: str, severity: Severity, cause: str, description: str,
               at_mono_ns: int, event_type: EventType, *, clears: bool = False) -> Event:
        return Event(host=host, seq=0, origin="controller", kind=kind, entity=f"host/{host}",
                     severity=severity, event_type=event_type, probable_cause=cause,
                     description=description, clears=clears, event_time=self.clock.wall(),
                     detected_mono_ns=at_mono_ns)

    def _publish(self, events: list[Event]) -> None:
        pid = self.channel.next_id()
        self._unpublished[pid] = events
        while len(self._unpublished) > MAX_UNPUBLISHED:
            _, dropped = self._unpublished.popitem(last=False)
            log.error("controller unreachable: liveness events dropped: %s",
                      [e.description for e in dropped])
        self.channel.send(Publish(id=pid, events=events))

    def _published(self, msg: Published) -> None:
        events = self._unpublished.get(msg.id)
        if events is None:
            return
        if msg.ok:
            del self._unpublished[msg.id]
            return
        log.warning("controller did not store liveness events (%s); trying again", msg.error)
        asyncio.get_running_loop().call_later(PUBLISH_RETRY_S, self._republish, msg.id)

    def _republish(self, pid: int) -> None:
        events = self._unpublished.get(pid)
        if events is not None and self.gate.is_leader():
            self.channel.send(Publish(id=pid, events=events))

    # -- the channel --------------------------------------------------------------------------
    def _resume_after(self) -> int | None:
        return self._last_event_id

    def _connected(self) -> None:
        """A (new) controller: all host states again, and what it has not stored yet."""
        if self.liveness is not None:
            for host, rec in self.liveness.hosts.items():
                self.channel.send(HostStateMsg(host=host, state=rec.state.value,
                                               reason=rec.reason,
                                               since_mono_ns=rec.since_mono_ns,
                                               boot=rec.boot))
        for pid, events in self._unpublished.items():
            self.channel.send(Publish(id=pid, events=events))

    def _channel_lost(self) -> None:
        self.repair.channel_lost()

    def _on_message(self, msg: ToDirectorMsg) -> None:
        if isinstance(msg, Events):
            if msg.events:
                self._last_event_id = max(self._last_event_id or 0, msg.events[-1].id)
            if self.am is not None and self.gate.is_leader():
                self.am.on_events(msg.events)
        elif isinstance(msg, RepairUpdate):
            self.repair.on_update(msg)
        elif isinstance(msg, Answer):
            self.repair.on_answer(msg)
        elif isinstance(msg, Published):
            self._published(msg)
        elif isinstance(msg, Placed):
            if self.am is not None:
                self.am.vm_placed(msg.vm, msg.host)
        elif isinstance(msg, Query):
            self.channel.send(self._answer(msg))
        elif isinstance(msg, Term):
            self._term(msg)

    def _answer(self, q: Query) -> Answer:
        if q.what == "availability":
            am = self.am
            result: Any = [] if am is None else [s.model_dump(mode="json") for s in am.status()]
        else:
            live = self.liveness
            now = self.clock.mono_ns()
            result = {} if live is None else {
                h: {"state": r.state.value, "reason": r.reason, "boot": r.boot,
                    "last_heartbeat_ms_ago": (now - r.last_hb_mono_ns) // 1_000_000
                    if r.boot is not None else None}
                for h, r in live.hosts.items()}
        return Answer(id=q.id, result=result)

    # -- terms ----------------------------------------------------------------------------------
    def _term(self, msg: Term) -> None:
        self.gate.update(msg)
        if msg.epoch and msg.epoch != self._term_epoch and self.gate.is_leader():
            background(self._start_work(msg.epoch), name=f"term-{msg.epoch}")
        elif not msg.epoch and self._term_epoch:
            background(self._end_work("the member does not lead any more"))

    async def _term_watch(self) -> None:
        """End a term's work once its deadline has passed without a renewal: the gate
        already stopped every decision; this tears the work down."""
        while True:
            await asyncio.sleep(0.05)
            if self._term_epoch and not self.gate.is_leader():
                await self._end_work("the term's deadline passed without a renewal")

    async def _start_work(self, epoch: int) -> None:
        async with self._term_lock:
            if not self.gate.single and (epoch != self.gate.epoch or not self.gate.is_leader()):
                return  # over before it could start
            await self._end_work_locked("a new term starts")
            self.liveness = self._new_liveness()
            self._last_event_id = None  # a new term acts on new events only (ADR 0013)
            self.channel.hello()
            if self.cfg.amf is not None:
                if not self.gate.single:
                    await self._wait_for_amf_address(epoch)
                    if epoch != self.gate.epoch or not self.gate.is_leader():
                        return
                am = AvailabilityManager(
                    self.topology, self.cfg.amf, self._assignment_store(epoch), self.repair,
                    self.settings, self.clock, decisions_allowed=self.gate.is_leader)
                am.use_host_repair(self.repair.host_repair)
                await am.start()
                self.am = am
            self._term_epoch = epoch
            log.info("HA director deciding%s", f" (epoch {epoch})" if epoch else "")

    async def _end_work(self, why: str) -> None:
        async with self._term_lock:
            await self._end_work_locked(why)

    async def _end_work_locked(self, why: str) -> None:
        am, self.am = self.am, None
        if am is not None:
            log.info("HA director stops deciding (epoch %d): %s", self._term_epoch, why)
            await am.close()
        if self._records is not None:
            self._records.close()
            self._records = None
        if self._sqlite_store is not None:
            self._sqlite_store.close()
            self._sqlite_store = None
        if not self.gate.single:
            self.liveness = None
        self._term_epoch = 0

    def _new_liveness(self) -> HostLiveness:
        return HostLiveness(self.cfg.hosts, self.settings, self.clock,
                            self.fencing.power_status)

    def _assignment_store(self, epoch: int) -> AssignmentStore | LeaderRecords:
        if self.gate.single:
            self._sqlite_store = SqliteAssignmentStore(self.cfg.db_path.with_name("amf.db"),
                                                       fsync=self.cfg.db_fsync)
            return self._sqlite_store
        s = self.cfg.store
        if self._etcd is None:
            self._etcd = EtcdClient(s.etcd_endpoints, op_timeout_s=s.etcd_op_timeout_s)
        fence = [cmp_create_revision(self.gate.leader_key.encode(), epoch)]
        self._records = LeaderRecords(EtcdAssignmentStore(
            self._etcd, prefix=s.etcd_prefix,
            fence=lambda: fence if self.gate.is_leader() else None))
        return self._records

    async def _wait_for_amf_address(self, epoch: int) -> None:
        """The generic AM's address is the leader's alone (ADR 0013): the previous
        leader's director lets it go when its term ends, before ours could start,
        unless its process hangs."""
        amf = self.cfg.amf
        while amf is not None and not _bindable(amf.listen_ip, amf.port):
            if epoch != self.gate.epoch or not self.gate.is_leader():
                return
            await asyncio.sleep(0.02)


def _bindable(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
        return True
