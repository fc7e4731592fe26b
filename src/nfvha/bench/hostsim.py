"""``python -m nfvha.bench.hostsim``: many simulated hosts in one process, talking to the
real controller and HA director over real loopback sockets (``nfvha bench scale``).

Each simulated host does what a host's supervisor and agent do on the wire, nothing
less:

- its supervisor's side of liveness (ADR 0015), from one UDP socket of its own on its
  own loopback address: the 64-byte HEARTBEAT every ``host_heartbeat_interval_ms`` to
  the controller's address (the director listens there); ACK for every PING; as a
  witness, a PROBE_REQUEST from the controller's address makes it PING the target
  twice within ``host_probe_timeout_ms`` and answer PROBE_RESULT (reached on the
  target's ACK, not reached at the timeout) - exactly as ``LivenessEndpoint`` does;
- its agent's event stream (TCP, ``nfvha.wire.frames``): ``hello``, then after the
  ``welcome`` the events not yet stored and an ``inventory`` (its VMs and VNFCs
  running), then events with rising sequence numbers, kept until acknowledged and
  sent again after a reconnect; commands are answered ``reply`` ok and change the
  simulated VM's state; a VM crash sends the agent's failure ``notice`` to the
  director first (ADR 0014), then the events.

Heartbeats come from a thread of their own (a host's supervisor does not wait for its
agent), over all hosts by due time, spread evenly over the interval as independent
machines' would be. The simulator measures itself - the
longest gap between two heartbeats of a host, its CPU time - so a run can tell the
controller's slowness from its own.

Control: ``nfvha.bench.simwire`` requests on stdin, replies on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import random
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from nfvha.bench.scaleplan import SimHostSpec, SimSpec, shard
from nfvha.bench.simwire import (
    SIM_REQUEST,
    Bound,
    Crash,
    GetStats,
    PowerOff,
    PowerOn,
    Reply,
    SimStats,
    Start,
    Stop,
)
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.wire import liveness as lw
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
MAX_PROBES = 64  # probes one witness runs at once (as LivenessEndpoint)
MAX_DATAGRAMS_PER_WAKEUP = 256
MAX_UNACKED = 10_000  # events kept for re-sending (the real agent's spool is on disk)
CONNECT_TIMEOUT_S = 0.5  # as the agent's ControllerLink
_SEQ_OFFSET = 12  # of the heartbeat counter in the 64-byte datagram (wire.liveness)


@dataclass(eq=False)
class _Probe:
    witness: SimHost
    requester: Address
    target: str
    target_addr: Address
    nonce: int  # the director's
    ping_nonce: int  # this witness's own
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


VmState = Literal["running", "crashed", "stopped"]


@dataclass
class _Vm:
    name: str
    vnfcs: list[str]
    pid: int
    state: VmState = "running"
    since: float = field(default_factory=time.time)


class SimHost:
    """One simulated host: its supervisor's UDP socket and its agent's stream."""

    def __init__(self, spec: SimHostSpec, pids: _Pids) -> None:
        self.spec = spec
        self.name = spec.name
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((spec.ip, 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.pids = pids
        self.vms = {v.name: _Vm(v.name, list(v.vnfcs), pids.next()) for v in spec.vms}
        self.vswitch_pid = pids.next()
        self.powered = False
        self.boot = 0
        self.incarnation = ""
        self.started_time = 0.0
        self.hb_seq = 0
        self.hb_generation = 0  # a heartbeat scheduled before the last power-on is stale
        self._hb = bytearray()
        self.due = 0.0
        self.last_hb: float | None = None
        self.probes: dict[int, _Probe] = {}
        self.event_seq = 0
        self.unacked: deque[Event] = deque()
        self.writer: asyncio.StreamWriter | None = None
        self.ready = False  # welcomed: events go out as they happen
        self.agent_task: asyncio.Task[None] | None = None
        self.silent_stream: asyncio.StreamWriter | None = None  # kept open while off

    def boot_up(self) -> None:
        self.powered = True
        self.boot = random.getrandbits(64) or 1
        self.incarnation = uuid.uuid4().hex
        self.started_time = time.time()
        self.hb_seq = 0
        self.hb_generation += 1
        self._hb = bytearray(lw.Datagram(lw.Kind.HEARTBEAT, self.name, boot=self.boot).encode())
        self.last_hb = None

    def heartbeat(self) -> bytearray:
        self.hb_seq = (self.hb_seq + 1) & 0xFFFF_FFFF
        self._hb[_SEQ_OFFSET:_SEQ_OFFSET + 4] = self.hb_seq.to_bytes(4, "big")
        return self._hb

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


class _Pids:
    """Stand-in process ids for the simulated VMs and VNFCs: distinct, never reused."""

    def __init__(self, base: int) -> None:
        self._next = base

    def next(self, span: int = 8) -> int:
        pid = self._next
        self._next += span
        return pid


@dataclass
class _Counters:
    started: float = field(default_factory=time.monotonic)
    cpu_start: float = field(default_factory=time.process_time)
    heartbeats: int = 0
    max_gap_s: float = 0.0
    late: int = 0
    pings: int = 0
    probes: int = 0
    events: int = 0
    commands: int = 0


class HeartbeatSender:
    """Every powered host's heartbeat, on time, from a thread of its own.

    A host's supervisor is a process of its own: its heartbeats do not wait for its
    agent. Here one thread sends them all (a heap by due time), so a burst of agent
    work in the event loop - hundreds of streams connecting at once - delays them by
    at most the interpreter's thread switch interval (5 ms), not by the burst."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self.lock = threading.Lock()
        self._heap: list[tuple[float, int, int, SimHost]] = []
        self._order = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def schedule(self, h: SimHost, due: float) -> None:
        """The next heartbeat of ``h`` (just booted) at ``due``; the lock is held."""
        h.due = due
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, h.hb_generation, h))
        self._wake.set()

    def _run(self) -> None:
        interval = self._sim.interval_s
        heap = self._heap
        while not self._stop.is_set():
            with self.lock:
                now = time.monotonic()
                c = self._sim.counters  # a new one at every reset
                controller = self._sim.controller
                while heap and heap[0][0] <= now:
                    _, _, generation, h = heapq.heappop(heap)
                    if not h.powered or generation != h.hb_generation:
                        continue  # off (power_on schedules it again), or from before that
                    with contextlib.suppress(OSError):  # a full buffer: it is lost
                        h.sock.sendto(h.heartbeat(), controller)
                    c.heartbeats += 1
                    if h.last_hb is not None:
                        gap = now - h.last_hb
                        if gap > c.max_gap_s:
                            c.max_gap_s = gap
                        if gap > 2 * interval:
                            c.late += 1
                    h.last_hb = now
                    # On schedule; after a stall, one interval from now (no burst to
                    # catch up, as the host supervisor does).
                    nxt = h.due + interval
                    h.due = nxt if nxt > now else now + interval
                    self._order += 1
                    heapq.heappush(heap, (h.due, self._order, generation, h))
                self._wake.clear()
                delay = heap[0][0] - time.monotonic() if heap else 1.0
            if delay > 0:
                self._wake.wait(delay)


class Simulator:
    def __init__(self, spec: SimSpec, hosts: list[SimHostSpec], pid_base: int) -> None:
        self.spec = spec
        self.controller: Address = (spec.controller_ip, spec.controller_port)  # see start
        self.interval_s = spec.host_heartbeat_interval_ms / 1000
        self.probe_timeout_s = spec.host_probe_timeout_ms / 1000
        pids = _Pids(pid_base)
        self.hosts: dict[str, SimHost] = {}
        try:
            for h in hosts:
                self.hosts[h.name] = SimHost(h, pids)
        except OSError:
            self.close()
            raise
        self.counters = _Counters()
        self.heartbeats = HeartbeatSender(self)
        self._rng = random.Random()
        self._tasks: list[asyncio.Task[Any]] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, controller: Address) -> None:
        self.controller = controller
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        n = len(self.hosts)
        for i, h in enumerate(self.hosts.values()):
            loop.add_reader(h.sock.fileno(), self._readable, h)
            # Independent machines: heartbeats spread evenly over the interval.
            self._power_on(h, now + self.interval_s * i / max(1, n))
        self.heartbeats.start()

    def close(self) -> None:
        self.heartbeats.stop()
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            for h in self.hosts.values():
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(h.sock.fileno())
        for h in self.hosts.values():
            if h.agent_task is not None:
                h.agent_task.cancel()
            for w in (h.writer, h.silent_stream):
                if w is not None:
                    w.transport.abort()
            h.sock.close()

    def _power_on(self, h: SimHost, first_heartbeat: float) -> None:
        with self.heartbeats.lock:
            h.boot_up()
            self.heartbeats.schedule(h, first_heartbeat)
        h.agent_task = asyncio.get_running_loop().create_task(self._agent(h),
                                                              name=f"agent-{h.name}")

    def power_off(self, h: SimHost) -> int:
        at = time.monotonic_ns()
        with self.heartbeats.lock:
            h.powered = False  # from now on: no heartbeat, no answer to anything
        for p in list(h.probes.values()):
            for t in p.timers:
                t.cancel()
        h.probes.clear()
        if h.writer is not None:
            # Silence, not a close: a machine without power sends no FIN.
            transport = h.writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
            h.silent_stream = h.writer
        if h.agent_task is not None:
            h.agent_task.cancel()
            h.agent_task = None
        return at

    def power_on(self, h: SimHost) -> int:
        if h.powered:
            raise ValueError(f"host {h.name} is on")
        if h.silent_stream is not None:
            # The rebooted machine answers the old connection's next segment with a
            # reset; here it goes at once.
            h.silent_stream.transport.abort()
            h.silent_stream = None
        for vm in h.vms.values():  # its VMs died with it
            vm.state, vm.since = "stopped", time.time()
        self._power_on(h, time.monotonic())
        return time.monotonic_ns()

    # -- datagrams: pings, acks, probe requests ---------------------------------------------
    def _readable(self, h: SimHost) -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = h.sock.recvfrom(2 * lw.DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error for an earlier send: nothing to read
            if h.powered:
                self._datagram(h, data, addr)

    def _datagram(self, h: SimHost, data: bytes, addr: Address) -> None:
        if not lw.is_liveness(data):
            return
        try:
            d = lw.decode(data)
        except lw.BadDatagram:
            return
        if d.kind is lw.Kind.PING:
            self._send(h, lw.Datagram(lw.Kind.ACK, h.name, nonce=d.nonce).encode(), addr)
            self.counters.pings += 1
        elif d.kind is lw.Kind.ACK:
            p = h.probes.get(d.nonce)
            # Only the target itself, from where it was pinged, answers for it.
            if p is not None and addr == p.target_addr and d.name == p.target:
                self._finish(p, reached=True)
        elif d.kind is lw.Kind.PROBE_REQUEST:
            self._witness(h, d, addr)

    def _witness(self, h: SimHost, d: lw.Datagram, requester: Address) -> None:
        if requester != self.controller:
            return  # only the director asks
        if not lw.probe_target_allowed(d.ip) or d.port == 0 or len(h.probes) >= MAX_PROBES:
            return
        nonce = self._rng.getrandbits(64)
        while nonce == 0 or nonce in h.probes:
            nonce = self._rng.getrandbits(64)
        p = _Probe(h, requester, d.name, (d.ip, d.port), d.nonce, nonce)
        h.probes[nonce] = p
        self.counters.probes += 1
        loop = asyncio.get_running_loop()
        self._ping(p)
        p.timers = [loop.call_later(self.probe_timeout_s / 2, self._ping, p),
                    loop.call_later(self.probe_timeout_s, self._finish, p, False)]

    def _ping(self, p: _Probe) -> None:
        if p.witness.probes.get(p.ping_nonce) is p:
            self._send(p.witness, lw.Datagram(lw.Kind.PING, p.target,
                                              nonce=p.ping_nonce).encode(), p.target_addr)

    def _finish(self, p: _Probe, reached: bool) -> None:
        if p.witness.probes.pop(p.ping_nonce, None) is not p:
            return
        for t in p.timers:
            t.cancel()
        result = lw.Datagram(lw.Kind.PROBE_RESULT, p.target, nonce=p.nonce, reached=reached)
        self._send(p.witness, result.encode(), p.requester)

    @staticmethod
    def _send(h: SimHost, data: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):
            h.sock.sendto(data, addr)

    # -- the agent's event stream ------------------------------------------------------
    async def _agent(self, h: SimHost) -> None:
        backoff = self.spec.reconnect_backoff_initial_s
        while h.powered:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    *self.controller, local_addr=(h.spec.ip, 0), limit=MAX_FRAME_BYTES),
                    CONNECT_TIMEOUT_S)
            except (OSError, TimeoutError):
                await asyncio.sleep(backoff * (0.5 + self._rng.random()))
                backoff = min(backoff * 2, self.spec.reconnect_backoff_max_s)
                continue
            welcomed = False
            try:
                welcomed = await self._session(h, reader, writer)
            except (OSError, asyncio.IncompleteReadError, ValidationError, ValueError):
                pass
            finally:
                h.ready = False
                h.writer = None
                if h.powered:
                    writer.close()
            if welcomed:
                backoff = self.spec.reconnect_backoff_initial_s
            await asyncio.sleep(backoff)

    async def _session(self, h: SimHost, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        h.writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(encode(h.hello()))
        await writer.drain()
        line = await reader.readline()
        if not line:
            return False
        welcome = CONTROLLER_FRAME.validate_json(line)
        if not isinstance(welcome, Welcome):
            raise ConnectionResetError(f"expected welcome, got {welcome.t}")
        while h.unacked and h.unacked[0].seq <= welcome.last_seq:
            h.unacked.popleft()
        for ev in h.unacked:
            writer.write(encode(EventFrame(event=ev)))
        writer.write(encode(h.inventory()))
        h.ready = True
        await writer.drain()
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionResetError("controller closed the stream")
            frame = CONTROLLER_FRAME.validate_json(line)
            if isinstance(frame, Ack):
                while h.unacked and h.unacked[0].seq <= frame.seq:
                    h.unacked.popleft()
            elif isinstance(frame, Command):
                self.counters.commands += 1
                writer.write(encode(self._command(h, frame)))

    def _emit(self, h: SimHost, kind: Kind, entity: str, *, severity: Severity,
              cause: str, description: str, detected_mono_ns: int | None = None,
              clears: bool = False, informational: bool = False,
              details: dict[str, Any] | None = None, notice: bool = False) -> Event:
        ev = Event(host=h.name, seq=h.next_event_seq(), kind=kind, entity=entity,
                   severity=Severity.CLEARED if clears else severity,
                   event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause=cause,
                   description=description, clears=clears, informational=informational,
                   event_time=time.time(),
                   detected_mono_ns=detected_mono_ns or time.monotonic_ns(),
                   details=details or {})
        if notice:
            # First, as the agent does: a failover must not wait for the stored event.
            pid = ev.details.get("pid")
            self._send(h, Notice(host=h.name, incarnation=h.incarnation, seq=ev.seq,
                                 kind="vm.crashed", entity=entity,
                                 pid=pid if isinstance(pid, int) else None,
                                 detected_mono_ns=ev.detected_mono_ns
                                 ).model_dump_json().encode(), self.controller)
        h.unacked.append(ev)
        if len(h.unacked) > MAX_UNACKED:
            h.unacked.popleft()
        if h.ready and h.writer is not None:
            h.writer.write(encode(EventFrame(event=ev)))
        self.counters.events += 1
        return ev

    def _inventory_changed(self, h: SimHost) -> None:
        if h.ready and h.writer is not None:
            h.writer.write(encode(h.inventory()))

    def crash_vm(self, h: SimHost, vm_name: str) -> int:
        vm = h.vms.get(vm_name)
        if vm is None:
            raise ValueError(f"no VM {vm_name} on {h.name}")
        if not h.powered:
            raise ValueError(f"host {h.name} is off")
        if vm.state != "running":
            raise ValueError(f"VM {vm_name} is {vm.state}")
        detected = time.monotonic_ns()
        vm.state, vm.since = "crashed", time.time()
        entity = f"vm/{vm.name}"
        self._emit(h, Kind.VM_CRASHED, entity, severity=Severity.CRITICAL, cause="vm-crash",
                   description=f"VM {vm.name} (pid {vm.pid}) died: killed by SIGKILL",
                   detected_mono_ns=detected, notice=True,
                   details={"pid": vm.pid, "exit_status": 9, "exit_desc": "killed by SIGKILL",
                            "detected_late": False})
        for c in vm.vnfcs:
            self._emit(h, Kind.VNFC_CRASHED, f"vnfc/{c}", severity=Severity.MAJOR,
                       cause="vm-crash", description=f"VNFC {c} lost with its VM {vm.name}",
                       detected_mono_ns=detected, details={"cause_entity": entity})
        self._inventory_changed(h)
        return detected

    def _command(self, h: SimHost, cmd: Command) -> CommandReply:
        target = cmd.target
        vm = h.vms.get(target) or next(
            (v for v in h.vms.values() if target in v.vnfcs), None)
        if vm is None:
            return CommandReply(id=cmd.id, ok=False, error=f"no VM or VNFC {target} here")
        result: dict[str, Any] = {"vm": vm.name}
        if cmd.op == "vm.start" and vm.state != "running":
            vm.state, vm.since, vm.pid = "running", time.time(), h.pids.next()
            self._emit(h, Kind.VM_STARTED, f"vm/{vm.name}", severity=Severity.INDETERMINATE,
                       cause="vm-start", description=f"VM {vm.name} started (pid {vm.pid})",
                       clears=True, details={"pid": vm.pid})
            result.update(pid=vm.pid, ready=True)
        elif cmd.op == "vm.stop" and vm.state == "running":
            vm.state, vm.since = "stopped", time.time()
            self._emit(h, Kind.VM_STOPPED, f"vm/{vm.name}", severity=Severity.INDETERMINATE,
                       cause="vm-stop", description=f"VM {vm.name} stopped",
                       informational=True)
        elif cmd.op == "vm.start":
            result.update(pid=vm.pid, already=True, ready=True)
        self._inventory_changed(h)
        return CommandReply(id=cmd.id, ok=True, result=result)

    # -- measuring itself --------------------------------------------------------------
    def stats(self, reset: bool) -> SimStats:
        c = self.counters
        out = SimStats(
            window_s=round(time.monotonic() - c.started, 3), hosts=len(self.hosts),
            powered=sum(1 for h in self.hosts.values() if h.powered),
            agents_connected=sum(1 for h in self.hosts.values() if h.ready),
            heartbeats_sent=c.heartbeats, max_heartbeat_gap_ms=round(c.max_gap_s * 1000, 2),
            late_heartbeats=c.late, pings_answered=c.pings, probes_witnessed=c.probes,
            events_sent=c.events, commands=c.commands,
            cpu_s=round(time.process_time() - c.cpu_start, 3))
        if reset:
            self.counters = _Counters()
        return out


# -- the process -----------------------------------------------------------------------------
def _write(out: Bound | Reply) -> None:
    sys.stdout.write(out.model_dump_json() + "\n")
    sys.stdout.flush()


async def _control(sim: Simulator) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _write(Bound(pid=os.getpid(), ports={h.name: h.port for h in sim.hosts.values()},
                 nice=os.getpriority(os.PRIO_PROCESS, 0)))
    started = False
    while True:
        line = await reader.readline()
        if not line:
            return  # the bench is gone: so are its hosts
        try:
            req = SIM_REQUEST.validate_json(line)
        except ValidationError as e:
            _write(Reply(id=-1, ok=False, error=f"bad request: {e}"))
            continue
        if isinstance(req, Stop):
            _write(Reply(id=req.id))
            return
        if isinstance(req, Start):
            if not started:
                sim.start((req.controller_ip, req.controller_port))
                started = True
            _write(Reply(id=req.id, at_mono_ns=time.monotonic_ns()))
            continue
        if isinstance(req, GetStats):
            _write(Reply(id=req.id, stats=sim.stats(req.reset)))
            continue
        host = sim.hosts.get(req.host)
        if host is None:
            _write(Reply(id=req.id, ok=False, error=f"no host {req.host} here"))
            continue
        try:
            if isinstance(req, Crash):
                at = sim.crash_vm(host, req.vm)
            elif isinstance(req, PowerOff):
                at = sim.power_off(host)
            else:
                assert isinstance(req, PowerOn)
                at = sim.power_on(host)
        except ValueError as e:
            _write(Reply(id=req.id, ok=False, error=str(e)))
            continue
        _write(Reply(id=req.id, at_mono_ns=at))


async def _main(spec: SimSpec, index: int, count: int) -> None:
    # Distinct stand-in pids per simulator process.
    sim = Simulator(spec, shard(spec.hosts, index, count), pid_base=4_000_000 + index * 10**6)
    try:
        await _control(sim)
    finally:
        sim.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nfvha.bench.hostsim")
    p.add_argument("--spec", type=Path, required=True, help="a SimSpec (JSON)")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--nice", type=int, default=None,
                   help="run at this niceness if allowed (root: e.g. -10), before any"
                        " thread starts, so every thread has it")
    args = p.parse_args(argv)
    if args.nice is not None:
        # Simulated hosts stand for machines of their own, which the controller's
        # machine never starves: served before the controller, they keep their timing
        # on a busy machine (they use little CPU). Not allowed: as it is.
        with contextlib.suppress(PermissionError, OSError):
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    spec = SimSpec.model_validate_json(args.spec.read_bytes())
    asyncio.run(_main(spec, args.shard, args.shards))
    return 0


if __name__ == "__main__":
    sys.exit(main())
