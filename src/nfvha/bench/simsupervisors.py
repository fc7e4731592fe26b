"""Simulated host supervisors: the host's side of liveness (ADR 0015), many hosts in
one process of ``nfvha bench scale``.

Each host has a UDP socket of its own on its own loopback address and does exactly
what ``LivenessEndpoint`` in a host's supervisor does:

- a 64-byte HEARTBEAT every ``host_heartbeat_interval_ms`` to the controller's address
  (the director listens there), on schedule, without a burst after a stall;
- an ACK (its own name, the ping's nonce) for every PING, to its sender;
- as a witness, on a PROBE_REQUEST from the controller's address only, for a target in
  the fabric or loopback: two PINGs within ``host_probe_timeout_ms``, PROBE_RESULT
  reached on the target's ACK (from the address it was pinged at), not reached at the
  timeout; at most ``MAX_PROBES`` at once.

This process does nothing else (the agents' streams are another process, as a host's
agent is another process than its supervisor): the heartbeats are timers of its event
loop, a heap over all hosts by due time, spread evenly over the interval as
independent machines' would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import socket
import time
from dataclasses import dataclass, field

from nfvha.bench.scaleplan import SimHostSpec, SimSpec
from nfvha.bench.simwire import SimCounters, SimStats
from nfvha.wire import liveness as lw

Address = tuple[str, int]
MAX_PROBES = 64  # probes one witness runs at once (as LivenessEndpoint)
MAX_DATAGRAMS_PER_WAKEUP = 256
_SEQ_OFFSET = 12  # of the heartbeat counter in the 64-byte datagram (wire.liveness)


@dataclass(eq=False)
class _Probe:
    witness: Supervisor
    requester: Address
    target: str
    target_addr: Address
    nonce: int  # the director's
    ping_nonce: int  # this witness's own
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class Supervisor:
    """One simulated host's supervisor: its UDP socket, heartbeats, pings, probes."""

    def __init__(self, spec: SimHostSpec) -> None:
        self.name = spec.name
        self.ip = spec.ip
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((spec.ip, 0))
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.powered = False
        self.boot = 0
        self.hb_seq = 0
        self.generation = 0  # a heartbeat scheduled before the last power-on is stale
        self._hb = bytearray()
        self.due = 0.0
        self.last_hb: float | None = None
        self.probes: dict[int, _Probe] = {}

    @property
    def address(self) -> Address:
        return self.ip, self.port

    def boot_up(self) -> None:
        self.powered = True
        self.boot = random.getrandbits(64) or 1
        self.hb_seq = 0
        self.generation += 1
        self._hb = bytearray(lw.Datagram(lw.Kind.HEARTBEAT, self.name, boot=self.boot).encode())
        self.last_hb = None

    def heartbeat(self) -> bytearray:
        self.hb_seq = (self.hb_seq + 1) & 0xFFFF_FFFF
        self._hb[_SEQ_OFFSET:_SEQ_OFFSET + 4] = self.hb_seq.to_bytes(4, "big")
        return self._hb


class SupervisorSim:
    def __init__(self, spec: SimSpec, hosts: list[SimHostSpec]) -> None:
        self.controller: Address = (spec.controller_ip, spec.controller_port)  # see start
        self.interval_s = spec.host_heartbeat_interval_ms / 1000
        self.probe_timeout_s = spec.host_probe_timeout_ms / 1000
        self.hosts: dict[str, Supervisor] = {}
        try:
            for h in hosts:
                self.hosts[h.name] = Supervisor(h)
        except OSError:
            self.close()
            raise
        self.counters = SimCounters()
        self._heap: list[tuple[float, int, int, Supervisor]] = []
        self._order = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._rng = random.Random()

    @property
    def ports(self) -> dict[str, int]:
        return {h.name: h.port for h in self.hosts.values()}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, controller: Address) -> None:
        """Power every host on, their first heartbeats spread over one interval."""
        self.controller = controller
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        now = loop.time()
        n = len(self.hosts)
        for i, h in enumerate(self.hosts.values()):
            loop.add_reader(h.sock.fileno(), self._readable, h)
            h.boot_up()
            self._schedule(h, now + self.interval_s * i / max(1, n))
        self._task = loop.create_task(self._heartbeats(), name="heartbeats")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
            for h in self.hosts.values():
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(h.sock.fileno())
        for h in self.hosts.values():
            self._drop_probes(h)
            h.sock.close()

    def power_off(self, name: str) -> int:
        """From now on the host sends nothing and answers nothing."""
        h = self._host(name)
        at = time.monotonic_ns()
        h.powered = False
        self._drop_probes(h)
        return at

    def power_on(self, name: str) -> int:
        h = self._host(name)
        if h.powered:
            raise ValueError(f"host {name} is on")
        h.boot_up()
        self._schedule(h, asyncio.get_running_loop().time())
        return time.monotonic_ns()

    def stats(self, reset: bool) -> SimStats:
        out = self.counters.stats(hosts=len(self.hosts),
                                  powered=sum(1 for h in self.hosts.values() if h.powered))
        if reset:
            self.counters = SimCounters()
        return out

    def _host(self, name: str) -> Supervisor:
        h = self.hosts.get(name)
        if h is None:
            raise ValueError(f"no host {name} here")
        return h

    @staticmethod
    def _drop_probes(h: Supervisor) -> None:
        for p in h.probes.values():
            for t in p.timers:
                t.cancel()
        h.probes.clear()

    # -- heartbeats --------------------------------------------------------------------
    def _schedule(self, h: Supervisor, due: float) -> None:
        h.due = due
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, h.generation, h))
        if self._wake is not None:
            self._wake.set()

    async def _heartbeats(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        interval = self.interval_s
        heap = self._heap
        while True:
            now = loop.time()
            c = self.counters  # a new one at every reset
            while heap and heap[0][0] <= now:
                _, _, generation, h = heapq.heappop(heap)
                if not h.powered or generation != h.generation:
                    continue  # off (power_on schedules it again), or from before that
                with contextlib.suppress(OSError):  # a full buffer: the datagram is lost
                    h.sock.sendto(h.heartbeat(), self.controller)
                c.heartbeats += 1
                if h.last_hb is not None:
                    gap = now - h.last_hb
                    if gap > c.max_gap_s:
                        c.max_gap_s = gap
                    if gap > 2 * interval:
                        c.late += 1
                h.last_hb = now
                # On schedule; after a stall of this process, one interval from now
                # (no burst to catch up, as the host supervisor does).
                nxt = h.due + interval
                h.due = nxt if nxt > now else now + interval
                self._order += 1
                heapq.heappush(heap, (h.due, self._order, generation, h))
            self._wake.clear()
            delay = heap[0][0] - loop.time() if heap else 1.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    # -- datagrams: pings, acks, probe requests -----------------------------------------
    def _readable(self, h: Supervisor) -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = h.sock.recvfrom(2 * lw.DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error for an earlier send: nothing to read
            if h.powered:  # a machine without power answers nothing
                self._datagram(h, data, addr)

    def _datagram(self, h: Supervisor, data: bytes, addr: Address) -> None:
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

    def _witness(self, h: Supervisor, d: lw.Datagram, requester: Address) -> None:
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
    def _send(h: Supervisor, data: bytes, addr: Address) -> None:
        with contextlib.suppress(OSError):
            h.sock.sendto(data, addr)
