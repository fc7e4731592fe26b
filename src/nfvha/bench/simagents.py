"""Simulated host agents: their event streams to the controller, many hosts in one
process of ``nfvha bench scale`` (the supervisors' side is ``simsupervisors``).

Each host's agent keeps a real event stream (TCP, ``nfvha.wire.frames``) from its own
loopback address, as ``ControllerLink`` does: ``hello``, then after the ``welcome`` the
events the controller has not stored yet and an ``inventory`` (its VMs and VNFCs),
then events with rising sequence numbers, kept until acknowledged (``ack``) and sent
again on the next stream; every ``command`` is answered with a ``reply`` and changes
the simulated VM's state. It reconnects with the configured back-off.

A VM crash sends the director the agent's failure ``notice`` first (ADR 0014), then
``vm.crashed`` (``detected_mono_ns``: the crash) and ``vnfc.crashed`` for its VNFCs,
then the new inventory. A power-off makes the stream silent - no FIN: a machine without
power sends nothing - and a power-on starts a new agent (new incarnation) whose VMs
are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from nfvha.bench.scaleplan import SimHostSpec, SimSpec
from nfvha.bench.simwire import SimCounters, SimStats
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.wire.director import Notice
from nfvha.wire.frames import (
    CONTROLLER_FRAME,
    MAX_FRAME_BYTES,
    Ack,
    Command,
    EventFrame,
    Hello,
    Inventory,
    ProcessInfo,
    VmInfo,
    VnfcInfo,
    Welcome,
    encode,
)
from nfvha.wire.frames import Reply as CommandReply

Address = tuple[str, int]
MAX_UNACKED = 10_000  # events kept for re-sending (the real agent's spool is on disk)
CONNECT_TIMEOUT_S = 0.5  # as the agent's ControllerLink
VmState = Literal["running", "crashed", "stopped"]


@dataclass
class _Vm:
    name: str
    vnfcs: list[str]
    pid: int
    state: VmState = "running"
    since: float = field(default_factory=time.time)


class _Pids:
    """Stand-in process ids for the simulated VMs and VNFCs: distinct, never reused."""

    def __init__(self, base: int) -> None:
        self._next = base

    def next(self, span: int = 8) -> int:
        pid = self._next
        self._next += span
        return pid


class Agent:
    """One simulated host's agent."""

    def __init__(self, spec: SimHostSpec, pids: _Pids) -> None:
        self.spec = spec
        self.name = spec.name
        self.pids = pids
        self.vms = {v.name: _Vm(v.name, list(v.vnfcs), pids.next()) for v in spec.vms}
        self.vswitch_pid = pids.next()
        self.powered = False
        self.incarnation = ""
        self.started_time = 0.0
        self.event_seq = 0  # the spool's: it survives a reboot
        self.unacked: deque[Event] = deque()
        self.writer: asyncio.StreamWriter | None = None
        self.ready = False  # welcomed: events go out as they happen
        self.task: asyncio.Task[None] | None = None
        self.silent_stream: asyncio.StreamWriter | None = None  # kept open while off

    def boot_up(self) -> None:
        self.powered = True
        self.incarnation = uuid.uuid4().hex
        self.started_time = time.time()

    def next_event_seq(self) -> int:
        self.event_seq += 1
        return self.event_seq

    def inventory(self) -> Inventory:
        vms = [VmInfo(name=v.name, state=v.state,
                      pid=v.pid if v.state == "running" else None, since=v.since)
               for v in self.vms.values()]
        vnfcs = [VnfcInfo(name=c, vm=v.name,
                          state="running" if v.state == "running" else "exited",
                          pid=v.pid + 1 + i if v.state == "running" else None, since=v.since)
                 for v in self.vms.values() for i, c in enumerate(v.vnfcs)]
        return Inventory(host=self.name, vms=vms, vnfcs=vnfcs, processes=[
            ProcessInfo(name=p, state="running", pid=self.vswitch_pid)
            for p in self.spec.processes])

    def hello(self) -> Hello:
        return Hello(host=self.name, agent_pid=os.getpid(), incarnation=self.incarnation,
                     started_time=self.started_time)


class AgentSim:
    def __init__(self, spec: SimSpec, hosts: list[SimHostSpec], pid_base: int) -> None:
        self.spec = spec
        self.controller: Address = (spec.controller_ip, spec.controller_port)  # see start
        pids = _Pids(pid_base)
        self.hosts = {h.name: Agent(h, pids) for h in hosts}
        self.counters = SimCounters()
        self._rng = random.Random()
        # The agents' notices to the director: best effort, from a socket of their own.
        self._notices = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._notices.setblocking(False)

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, controller: Address) -> None:
        self.controller = controller
        for a in self.hosts.values():
            self._boot(a)

    def close(self) -> None:
        for a in self.hosts.values():
            if a.task is not None:
                a.task.cancel()
            for w in (a.writer, a.silent_stream):
                if w is not None:
                    w.transport.abort()
        self._notices.close()

    def _boot(self, a: Agent) -> None:
        a.boot_up()
        a.task = asyncio.get_running_loop().create_task(self._run(a), name=f"agent-{a.name}")

    def power_off(self, name: str) -> int:
        a = self._agent(name)
        at = time.monotonic_ns()
        a.powered = False
        if a.writer is not None:
            # Silence, not a close: a machine without power sends no FIN.
            transport = a.writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
            a.silent_stream = a.writer
        if a.task is not None:
            a.task.cancel()
            a.task = None
        return at

    def power_on(self, name: str) -> int:
        a = self._agent(name)
        if a.powered:
            raise ValueError(f"host {name} is on")
        if a.silent_stream is not None:
            # The rebooted machine answers the old connection's next segment with a
            # reset; here it goes at once.
            a.silent_stream.transport.abort()
            a.silent_stream = None
        for vm in a.vms.values():  # its VMs died with it
            vm.state, vm.since = "stopped", time.time()
        self._boot(a)
        return time.monotonic_ns()

    def stats(self, reset: bool) -> SimStats:
        out = self.counters.stats(
            hosts=len(self.hosts), powered=sum(1 for a in self.hosts.values() if a.powered),
            agents_connected=sum(1 for a in self.hosts.values() if a.ready))
        if reset:
            self.counters = SimCounters()
        return out

    def _agent(self, name: str) -> Agent:
        a = self.hosts.get(name)
        if a is None:
            raise ValueError(f"no host {name} here")
        return a

    # -- the stream --------------------------------------------------------------------
    async def _run(self, a: Agent) -> None:
        backoff = self.spec.reconnect_backoff_initial_s
        while a.powered:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    *self.controller, local_addr=(a.spec.ip, 0), limit=MAX_FRAME_BYTES),
                    CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, self.spec.reconnect_backoff_max_s)
                continue
            welcomed = False
            try:
                welcomed = await self._session(a, reader, writer)
            except (OSError, asyncio.IncompleteReadError, ValidationError, ValueError):
                pass
            finally:
                a.ready = False
                a.writer = None
                if a.powered:
                    writer.close()
            if welcomed:
                backoff = self.spec.reconnect_backoff_initial_s
            await asyncio.sleep(backoff)

    async def _session(self, a: Agent, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        a.writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(encode(a.hello()))
        await writer.drain()
        line = await reader.readline()
        if not line:
            return False
        welcome = CONTROLLER_FRAME.validate_json(line)
        if not isinstance(welcome, Welcome):
            raise ConnectionResetError(f"expected welcome, got {welcome.t}")
        while a.unacked and a.unacked[0].seq <= welcome.last_seq:
            a.unacked.popleft()
        for ev in a.unacked:
            writer.write(encode(EventFrame(event=ev)))
        writer.write(encode(a.inventory()))
        a.ready = True
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionResetError("controller closed the stream")
            frame = CONTROLLER_FRAME.validate_json(line)
            if isinstance(frame, Ack):
                while a.unacked and a.unacked[0].seq <= frame.seq:
                    a.unacked.popleft()
            elif isinstance(frame, Command):
                self.counters.commands += 1
                writer.write(encode(self._command(a, frame)))

    # -- events ------------------------------------------------------------------------
    def _emit(self, a: Agent, kind: Kind, entity: str, *, severity: Severity,
              cause: str, description: str, detected_mono_ns: int | None = None,
              clears: bool = False, informational: bool = False,
              details: dict[str, Any] | None = None, notice: bool = False) -> Event:
        ev = Event(host=a.name, seq=a.next_event_seq(), kind=kind, entity=entity,
                   severity=Severity.CLEARED if clears else severity,
                   event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause=cause,
                   description=description, clears=clears, informational=informational,
                   event_time=time.time(),
                   detected_mono_ns=detected_mono_ns or time.monotonic_ns(),
                   details=details or {})
        if notice:
            # First, as the agent does: a failover must not wait for the stored event.
            pid = ev.details.get("pid")
            with contextlib.suppress(OSError):
                self._notices.sendto(Notice(
                    host=a.name, incarnation=a.incarnation, seq=ev.seq, kind="vm.crashed",
                    entity=entity, pid=pid if isinstance(pid, int) else None,
                    detected_mono_ns=ev.detected_mono_ns).model_dump_json().encode(),
                    self.controller)
        a.unacked.append(ev)
        if len(a.unacked) > MAX_UNACKED:
            a.unacked.popleft()
        if a.ready and a.writer is not None:
            a.writer.write(encode(EventFrame(event=ev)))
        self.counters.events += 1
        return ev

    def _inventory_changed(self, a: Agent) -> None:
        if a.ready and a.writer is not None:
            a.writer.write(encode(a.inventory()))

    def crash_vm(self, name: str, vm_name: str) -> int:
        """The VM dies; returns when it was detected (CLOCK_MONOTONIC ns)."""
        a = self._agent(name)
        vm = a.vms.get(vm_name)
        if vm is None:
            raise ValueError(f"no VM {vm_name} on {name}")
        if not a.powered:
            raise ValueError(f"host {name} is off")
        if vm.state != "running":
            raise ValueError(f"VM {vm_name} is {vm.state}")
        detected = time.monotonic_ns()
        vm.state, vm.since = "crashed", time.time()
        entity = f"vm/{vm.name}"
        self._emit(a, Kind.VM_CRASHED, entity, severity=Severity.CRITICAL, cause="vm-crash",
                   description=f"VM {vm.name} (pid {vm.pid}) died: killed by SIGKILL",
                   detected_mono_ns=detected, notice=True,
                   details={"pid": vm.pid, "exit_status": 9, "exit_desc": "killed by SIGKILL",
                            "detected_late": False})
        for c in vm.vnfcs:
            self._emit(a, Kind.VNFC_CRASHED, f"vnfc/{c}", severity=Severity.MAJOR,
                       cause="vm-crash", description=f"VNFC {c} lost with its VM {vm.name}",
                       detected_mono_ns=detected, details={"cause_entity": entity})
        self._inventory_changed(a)
        return detected

    def _command(self, a: Agent, cmd: Command) -> CommandReply:
        target = cmd.target
        vm = a.vms.get(target) or next(
            (v for v in a.vms.values() if target in v.vnfcs), None)
        if vm is None:
            return CommandReply(id=cmd.id, ok=False, error=f"no VM or VNFC {target} here")
        result: dict[str, Any] = {"vm": vm.name}
        if cmd.op == "vm.start" and vm.state != "running":
            vm.state, vm.since, vm.pid = "running", time.time(), a.pids.next()
            self._emit(a, Kind.VM_STARTED, f"vm/{vm.name}", severity=Severity.INDETERMINATE,
                       cause="vm-start", description=f"VM {vm.name} started (pid {vm.pid})",
                       clears=True, details={"pid": vm.pid})
            result.update(pid=vm.pid, ready=True)
        elif cmd.op == "vm.stop" and vm.state == "running":
            vm.state, vm.since = "stopped", time.time()
            self._emit(a, Kind.VM_STOPPED, f"vm/{vm.name}", severity=Severity.INDETERMINATE,
                       cause="vm-stop", description=f"VM {vm.name} stopped",
                       informational=True)
        elif cmd.op == "vm.start":
            result.update(pid=vm.pid, already=True, ready=True)
        self._inventory_changed(a)
        return CommandReply(id=cmd.id, ok=True, result=result)
