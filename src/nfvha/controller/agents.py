"""The controller's side of the agents: their event streams (TCP) and commands.

Each agent event is committed to the store before it is acknowledged; the
controller itself raises the event nobody else can: an agent whose stream broke
(the hypervisor failed, MW-2). Host liveness (the heartbeats) is the HA director's
(ADR 0014, 0015); a host it confirms down takes its agent's session with it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.leadership import LeaderGate, NotLeader
from nfvha.model.events import Event, EventType, Kind, Severity, StoredEvent
from nfvha.model.hosts import HostState
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock
from nfvha.util.tasks import background
from nfvha.wire.frames import (
    AGENT_FRAME,
    MAX_FRAME_BYTES,
    Ack,
    Command,
    CommandOp,
    EventFrame,
    Hello,
    Inventory,
    Reply,
    Started,
    VmInfo,
    VnfcInfo,
    Welcome,
    encode,
)

log = logging.getLogger(__name__)


@dataclass
class AgentSession:
    hello: Hello
    writer: asyncio.StreamWriter
    connected_time: float
    replies: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    started: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    broken: bool = False  # an event of this stream could not be stored


class HostInventory:
    """An agent's latest inventory, its VMs and VNFCs indexed by name once, when it
    arrives: the views look a VM or VNFC up per item, and a scan of the host's list
    each time made a listing O(VMs x VMs per host)."""

    def __init__(self, frame: Inventory) -> None:
        self.frame = frame
        self._vms: dict[str, VmInfo] = {}
        for vm in frame.vms:
            self._vms.setdefault(vm.name, vm)  # the first one, as a scan found it
        # One name may be reported twice on a host (a VM and its standby VM both placed
        # there after an evacuation): every report, in the agent's order.
        self._vnfcs: dict[str, list[VnfcInfo]] = {}
        for c in frame.vnfcs:
            self._vnfcs.setdefault(c.name, []).append(c)

    def vm(self, name: str) -> VmInfo | None:
        return self._vms.get(name)

    def vnfc(self, name: str) -> VnfcInfo | None:
        """The first report of VNFC ``name``."""
        found = self._vnfcs.get(name)
        return found[0] if found else None

    def vnfc_reports(self, name: str) -> list[VnfcInfo]:
        return self._vnfcs.get(name, [])


class AgentServer:
    def __init__(self, listen: tuple[str, int], bus: EventBus, hosts: HostStates,
                 clock: Clock, *, gate: LeaderGate | None = None,
                 command_queue_timeout_s: float = 10.0) -> None:
        """``hosts``: the director's host states as the controller mirrors them.
        ``gate``: in a cluster, the leader's (ADR 0013): every command carries its
        epoch and none goes out once the term is over; None: a single controller."""
        self._listen = listen
        self._gate = gate
        self._bus = bus
        self._hosts = hosts
        self._clock = clock
        self.sessions: dict[str, AgentSession] = {}
        self.inventories: dict[str, HostInventory] = {}
        self.agent_lost: dict[str, float] = {}  # host -> wall time the stream broke
        self._cmd_ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._closing = False
        hosts.on_change(self._host_changed)
        # How long a command may wait at its agent before the agent starts it.
        self.command_queue_timeout_s = command_queue_timeout_s

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self._listen,
                                                  limit=MAX_FRAME_BYTES, reuse_address=True)

    async def close(self) -> None:
        self._closing = True  # streams ended by our own shutdown are no agent failure
        self._hosts.remove_listener(self._host_changed)
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions.values()):
            s.writer.close()

    def _host_changed(self, host: str, old: HostState, new: HostState) -> None:
        if new is HostState.DOWN:
            # Its agent is gone with it; the broken stream is a consequence, not news.
            s = self.sessions.pop(host, None)
            if s is not None:
                s.writer.close()
            self.inventories.pop(host, None)

    def _own_event(self, kind: Kind, entity: str, severity: Severity, cause: str,
                   description: str, at_mono_ns: int, *, clears: bool = False) -> Event:
        """An event about the agent itself (lost, back): the hypervisor level (MW-2)."""
        return Event(
            host=entity.partition("/")[2], seq=0, origin="controller", kind=kind,
            entity=entity, severity=severity, event_type=EventType.PROCESSING_ERROR_ALARM,
            probable_cause=cause, description=description, clears=clears,
            event_time=self._clock.wall(), detected_mono_ns=at_mono_ns,
        )

    async def _publish(self, events: list[Event]) -> None:
        try:
            await self._bus.publish(events)
        except StoreUnavailable:
            log.exception("could not store controller events %s", [e.kind for e in events])

    # -- agent streams -----------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            hello = AGENT_FRAME.validate_json(line)
        except (TimeoutError, ValidationError, OSError, ValueError):
            writer.close()
            return
        if not isinstance(hello, Hello) or hello.host not in self._hosts.hosts:
            writer.close()
            return
        if self._gate is not None and not self._gate.is_leader():
            writer.close()  # its agent tries the next controller address
            return
        host = hello.host
        old = self.sessions.get(host)
        session = AgentSession(hello, writer, self._clock.wall())
        self.sessions[host] = session
        if old is not None:
            old.writer.close()
        writer.write(encode(Welcome(last_seq=self._bus.store.last_seq(host),
                                    leader_epoch=self._gate.epoch if self._gate else 0)))
        lost_at = self.agent_lost.pop(host, None)
        if lost_at is not None or hello.restarted_after:
            await self._publish([self._own_event(
                Kind.AGENT_CONNECTED, f"host/{host}", Severity.CLEARED, "hypervisor-failure",
                f"agent on {host} is back (pid {hello.agent_pid})"
                + (f"; previous agent ended: {hello.restarted_after}"
                   if hello.restarted_after else ""),
                self._clock.mono_ns(), clears=True)])
        try:
            await self._read_stream(host, session, reader, writer)
        finally:
            for fut in session.replies.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"agent on {host} disconnected"))
            if self.sessions.get(host) is session:
                del self.sessions[host]
                self._stream_broken(host)
            writer.close()

    async def _read_stream(self, host: str, session: AgentSession,
                           reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readline()
            except (OSError, ValueError):
                return
            if not line:
                return
            received = self._clock.mono_ns()
            try:
                frame = AGENT_FRAME.validate_json(line)
            except ValidationError as e:
                # Acks are cumulative: acknowledging anything after an event we could
                # not store would make the agent drop it. Close; it is re-sent.
                log.error("agent %s sent a frame this controller cannot read; closing the"
                          " stream so nothing is acknowledged past it: %s", host, e)
                return
            if isinstance(frame, EventFrame):
                ev = frame.event
                if ev.host != host:
                    log.warning("agent %s sent an event for host %s; dropped", host, ev.host)
                    continue
                # Pipelined: read on while earlier events wait for their group commit.
                # Commits complete in submission order, so acks go out in order.
                self._bus.submit([ev], received).add_done_callback(
                    functools.partial(self._acknowledge, host, session, ev.seq))
                if session.broken:
                    return
                if not self._bus.has_room():
                    # The store lags far behind: read on once it caught up (the socket
                    # buffers and the agent's spool hold the rest meanwhile).
                    await self._bus.room()
            elif isinstance(frame, Inventory):
                self.inventories[host] = HostInventory(frame)
            elif isinstance(frame, Started):
                began = session.started.pop(frame.id, None)
                if began is not None and not began.done():
                    began.set_result(None)
            elif isinstance(frame, Reply):
                fut = session.replies.pop(frame.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)

    def _acknowledge(self, host: str, session: AgentSession, seq: int,
                     done: asyncio.Future[list[StoredEvent]]) -> None:
        if session.broken:
            return
        if done.cancelled() or done.exception() is not None:
            # Acks are cumulative: acknowledging a later event would make the agent
            # drop this one. Close; the agent re-sends everything unacknowledged.
            log.error("store unavailable; not acknowledging %s#%d: %s", host, seq,
                      None if done.cancelled() else done.exception())
            session.broken = True
            session.writer.close()
            return
        session.writer.write(encode(Ack(seq=seq)))

    def _stream_broken(self, host: str) -> None:
        if self._closing or self._hosts.state(host).state == HostState.DOWN:
            return
        self.agent_lost[host] = self._clock.wall()
        self.inventories.pop(host, None)
        background(self._publish([self._own_event(
            Kind.AGENT_LOST, f"host/{host}", Severity.CRITICAL, "hypervisor-failure",
            f"agent on {host} lost: its event stream broke", self._clock.mono_ns())]))

    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0,
                      *, queue_timeout_s: float | None = None) -> Reply:
        """Send a command and wait for its reply: first up to ``queue_timeout_s``
        (default: the server's) for the agent to start it - it may be busy with the
        host's other work - then ``timeout_s`` from that start. Raises TimeoutError,
        ConnectionError, NotLeader."""
        session = self.sessions.get(host)
        if session is None:
            raise ConnectionError(f"agent on {host} is not connected")
        # Checked as the command goes out: a term that ended stops every action here,
        # whoever decided it (the VNFM, VM repair, host repair).
        epoch = 0
        if self._gate is not None:
            epoch = self._gate.epoch
            if not epoch or not self._gate.is_leader():
                raise NotLeader(f"{op} {target}: this controller does not lead")
        cmd = Command(id=next(self._cmd_ids), op=op, target=target, args=dict(args or {}),
                      leader_epoch=epoch, timeout_s=timeout_s)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        began: asyncio.Future[None] = loop.create_future()
        session.replies[cmd.id] = fut
        session.started[cmd.id] = began
        session.writer.write(encode(cmd))
        queue_s = self.command_queue_timeout_s if queue_timeout_s is None else queue_timeout_s
        try:
            # An agent that replies without saying it started (an older one) is fine.
            waits: list[asyncio.Future[Any]] = [fut, began]
            await asyncio.wait(waits, timeout=queue_s, return_when=asyncio.FIRST_COMPLETED)
            if fut.done():
                return fut.result()
            if not began.done():
                raise TimeoutError(f"agent on {host} did not start {op} {target} within"
                                   f" {queue_s:g} s")
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            session.replies.pop(cmd.id, None)
            session.started.pop(cmd.id, None)
