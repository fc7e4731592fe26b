"""An L4 load balancer in front of active/active VNFCs (IF-2).

``python -m nfvha.samples.lb --name NAME --port PORT [--bind ADDR] --member NAME=IP:PORT ...
[--check-interval-ms 10] [--check-misses 3] [--request-timeout-ms T] [--retry all|idempotent]
[--am IP:PORT [--component NAME] [--ifname IF]]``

Front: UDP and TCP on ADDR:PORT (and on the VIP while it holds one).

- UDP: every request datagram goes to one healthy member, the least-outstanding one
  (round robin among equals: a hung member collects outstanding requests, so it is
  avoided even before it is detected).  The member's reply is relayed to the client
  from the front socket the request came in on.  The datagram ``STATS`` is answered by
  the LB itself with its statistics as JSON (also printed on SIGUSR1), and ``TIMES``
  with when it last took the active role, as the counter sample answers it
  (``nfvha.samples.counter``: for timing a failover stage by stage).
- TCP: per connection (L4): each new connection is spliced to one healthy member; a
  member that is excluded has its connections closed, so clients reconnect elsewhere.

Correlating replies: the protocol carries no request id and an L4 balancer must not
add one, so the LB opens one connected upstream UDP socket per (front, client address,
member), a *flow*, closed after ``--flow-idle-s`` without traffic.  The kernel then
routes each reply to its client's flow, and within a flow replies are matched to
requests first-in first-out (a member answers a client's requests in order; were two
swapped, both replies still go to the right client, only the timeout bookkeeping is off
by one).  A fixed pool of upstream sockets could not tell clients apart.  When a member
is excluded all its flows are closed, so a late reply of a hung member is dropped by the
kernel instead of being matched to a later request.

Health checks: ``--check-request`` (``PING``) to every member every check interval over
a connected UDP socket.  A member that misses ``--check-misses`` consecutive checks, or
one of whose forwarded requests times out (``--request-timeout-ms``, by default the
detection time interval x misses), or whose socket reports ICMP port unreachable, is
excluded at once; it is included again as soon as it answers a check.  A member that
answers ``ERR not-active ...`` (an AM-managed VNFC without the active role) is not
eligible either, but that is not a failure.  Members start unknown and are included on
their first answer.  Note the counter answers ``PING`` in every role: to keep
non-active members out by the check itself, use e.g. ``--check-request "GET lb-check"``.

Retry: a request is sent at most twice, the second time to another member, and only
when no reply came from the first one and that one was excluded meanwhile (timeout,
missed checks, ICMP), or when it answered ``ERR not-active`` (so it did not execute it).
A request the failed member may have executed before dying is thus executed at most
twice.  Default ``--retry all`` accepts that: a crashed active/active member takes the
state it counted with it, so the double count is not observable; a hung member's late
reply is dropped; and a client retrying by itself would take the same risk only later.
``--retry idempotent`` retries only ``PING`` and ``GET`` after a possible execution, for
members that share state.  A request left without a member's reply (after its one
retry, or not retried) is counted as failed and the client gets nothing, as from any
L4 hop; one that finds no healthy member is answered ``ERR no-healthy-member``.

Redundant pair (with ``--am``): the LB is a component of the availability manager
(``nfvha.amf.sdk``); only the one holding the active role forwards, and it claims the
SI's VIP (``nfvha.amf.vip``) if the order carries one.  The standby answers nothing but
``STATS`` (it has no VIP; on its own address it drops requests and closes TCP
connections) and keeps checking members so it takes over warm.  The active asks the AM
to recover each member it excludes (``member_failed``, ADR 0008).  Without ``--am`` the
LB is simply active.

Standard library, ``nfvha.util`` and the VNFC side of ``nfvha.amf`` only: a light process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import importlib
import json
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from nfvha.samples.counter import wait_for_termination
from nfvha.util.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from nfvha.amf.sdk import ComponentClient, Peer

Addr = tuple[Any, ...]
MAX_DATAGRAM = 65535
IDEMPOTENT_VERBS = frozenset({b"PING", b"GET"})
NOT_ACTIVE = b"ERR not-active"
_IP_FREEBIND = 15  # <linux/in.h>; the socket module of Python 3.11 lacks it

UNKNOWN, HEALTHY, INELIGIBLE, EXCLUDED = "unknown", "healthy", "ineligible", "excluded"


@dataclasses.dataclass(frozen=True)
class Options:
    name: str
    port: int
    members: tuple[tuple[str, str, int], ...]
    bind: str = "0.0.0.0"
    check_interval_s: float = 0.010
    check_misses: int = 3
    check_request: bytes = b"PING"
    request_timeout_s: float | None = None  # None: check_interval_s * check_misses
    retry: str = "all"  # all | idempotent
    flow_idle_s: float = 10.0
    tcp_connect_timeout_s: float = 0.1
    am: str | None = None
    component: str | None = None
    ifname: str = "eth0"

    @property
    def timeout_s(self) -> float:
        if self.request_timeout_s is not None:
            return self.request_timeout_s
        return self.check_interval_s * self.check_misses


@dataclasses.dataclass(eq=False)
class _Request:
    data: bytes
    client: Addr
    front: _Front
    attempts: int = 0
    flow: _Flow | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def idempotent(self) -> bool:
        words = self.data.split(None, 1)
        return bool(words) and words[0].upper() in IDEMPOTENT_VERBS


@dataclasses.dataclass(eq=False)
class _Flow:
    """A connected upstream UDP socket: one client (through one front) to one member."""

    member: _Member
    key: tuple[_Front, Addr]
    sock: socket.socket
    last_used_ns: int
    outstanding: collections.deque[_Request] = dataclasses.field(
        default_factory=collections.deque)


@dataclasses.dataclass(eq=False)
class _Member:
    name: str
    addr: tuple[str, int]
    check_sock: socket.socket
    state: str = UNKNOWN
    misses: int = 0
    probed: bool = False  # a check was sent ...
    answered: bool = False  # ... and answered since
    last_answer_ns: int | None = None
    in_flight: int = 0
    forwarded: int = 0
    failed: int = 0
    excluded_count: int = 0
    flows: dict[tuple[_Front, Addr], _Flow] = dataclasses.field(default_factory=dict)
    tcp: set[asyncio.StreamWriter] = dataclasses.field(default_factory=set)

    def stats(self) -> dict[str, Any]:
        return {"address": f"{self.addr[0]}:{self.addr[1]}", "state": self.state,
                "outstanding": self.in_flight, "forwarded": self.forwarded,
                "failed": self.failed, "excluded_count": self.excluded_count}


def _udp_socket(host: str, port: int = 0, *, freebind: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    # SO_REUSEADDR: a VIP's socket binds vip:port beside a wildcard *:port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if freebind:  # bound before the address is configured: serves from the first GARP
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
    sock.bind((host, port))
    return sock


def _tcp_listen_socket(host: str, port: int, *, freebind: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if freebind:
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
    sock.bind((host, port))
    return sock


def _connected_udp(addr: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET,
                         socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect(addr)  # replies from elsewhere never reach it; ICMP errors do
    return sock


class _Front(asyncio.DatagramProtocol):
    """One UDP front socket (the bind address, or a VIP)."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: cast.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.lb.on_request(self, data, addr)

    def send(self, data: bytes, addr: Addr) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class LoadBalancer:
    """Members, their health, and the forwarding; ``fronts`` are opened by ``serve``."""

    def __init__(self, opts: Options, clock: Clock = SYSTEM_CLOCK) -> None:
        self.opts = opts
        self.clock = clock
        self.members = [_Member(name, (host, port), _connected_udp((host, port)))
                        for name, host, port in opts.members]
        self.roles: dict[str, str] = {}
        # si -> when this LB last became its active (TIMES, as the counter answers it).
        self.became_active: dict[str, dict[str, int | None]] = {}
        self.client: ComponentClient | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.forwarded = self.replied = self.failed = self.retried = 0
        self.excluded_count = self.dropped = self.tcp_connections = 0
        self._rr = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.fronts = _Fronts(self)

    @property
    def serving(self) -> bool:
        if self.opts.am is None:
            return True
        # The lease check: as in the counter, for the moment before the quiesce callback.
        return "active" in self.roles.values() and (
            self.client is None or self.client.lease_valid())

    def role_text(self) -> str:
        if self.opts.am is None:
            return "active"
        for state in ("active", "standby", "quiesced"):
            if state in self.roles.values():
                return state
        return "unassigned"

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for m in self.members:
            loop.add_reader(m.check_sock.fileno(), self._check_readable, m)
        self._tick()
        self._sweep()

    def close(self) -> None:
        for handle in (self._tick_handle, self._sweep_handle):
            if handle is not None:
                handle.cancel()
        for m in self.members:
            self._close_flows(m)
            self._close_tcp(m)
            if self._loop is not None:
                self._loop.remove_reader(m.check_sock.fileno())
            m.check_sock.close()
        for task in self.tasks:
            task.cancel()

    def stats(self) -> dict[str, Any]:
        return {"name": self.opts.name, "role": self.role_text(),
                "members": {m.name: m.stats() for m in self.members},
                "healthy": [m.name for m in self.members if m.state == HEALTHY],
                "forwarded": self.forwarded, "replied": self.replied, "failed": self.failed,
                "retried": self.retried, "excluded_count": self.excluded_count,
                "dropped": self.dropped, "tcp_connections": self.tcp_connections}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- health --------------------------------------------------------------------------

    def _tick(self) -> None:
        for m in self.members:
            if m.probed and not m.answered:
                m.misses += 1
                if m.misses >= self.opts.check_misses and m.state != EXCLUDED:
                    self._member_failed(m, f"{m.misses} health checks missed")
            m.answered = False
            m.probed = True  # a send refused by an earlier ICMP error is a miss too
            with contextlib.suppress(OSError):
                m.check_sock.send(self.opts.check_request)
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(self.opts.check_interval_s, self._tick)

    def _check_readable(self, m: _Member) -> None:
        while True:
            try:
                data = m.check_sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                continue  # ICMP port unreachable: the tick counts the miss
            m.answered = True
            m.misses = 0
            m.last_answer_ns = self.clock.mono_ns()
            if data.startswith(NOT_ACTIVE):
                self._set_state(m, INELIGIBLE, data.decode(errors="replace"))
            else:
                self._set_state(m, HEALTHY, "answers health checks")

    def _set_state(self, m: _Member, state: str, why: str) -> None:
        if m.state != state:
            m.state = state
            word = "included" if state == HEALTHY else state
            _say(f"lb {self.opts.name} member {m.name} {word}: {why}")

    def _member_failed(self, m: _Member, reason: str) -> None:
        """Exclude ``m`` now; retry (or fail) what it has in flight; ask for its repair."""
        if m.state != EXCLUDED:
            why = reason
            if m.last_answer_ns is not None:
                ago_ms = (self.clock.mono_ns() - m.last_answer_ns) / 1e6
                why += f" (last answer {ago_ms:.1f} ms ago)"
            self._set_state(m, EXCLUDED, why)
            m.excluded_count += 1
            self.excluded_count += 1
            self._report(m, reason)
        m.misses = 0
        for request in self._close_flows(m):
            self._retry_or_fail(request, m)
        self._close_tcp(m)

    def _report(self, m: _Member, reason: str) -> None:
        client = self.client
        if client is None or not self.serving:
            return  # the standby leaves recovery requests to the active

        async def send() -> None:
            from nfvha.amf.sdk import NotConnected

            try:
                await client.member_failed(m.name, reason)
            except NotConnected:
                _say(f"lb {self.opts.name} cannot report {m.name}: no AM session")

        self._spawn(send())

    # -- UDP forwarding ------------------------------------------------------------------

    def on_request(self, front: _Front, data: bytes, client: Addr) -> None:
        if data.strip().upper() == b"STATS":
            front.send(json.dumps(self.stats()).encode(), client)
            return
        if data.strip().upper() == b"TIMES":
            front.send(b"TIMES " + json.dumps(self.became_active).encode(), client)
            return
        if not self.serving:
            self.dropped += 1
            return
        self._dispatch(_Request(data, client, front), avoid=None)

    def _pick(self, avoid: _Member | None) -> _Member | None:
        """The healthy member with the fewest requests in flight; round robin among ties."""
        best: _Member | None = None
        best_i = 0
        n = len(self.members)
        for i in range(n):
            m = self.members[(self._rr + i) % n]
            if m.state == HEALTHY and m is not avoid and (
                    best is None or m.in_flight < best.in_flight):
                best, best_i = m, i
        if best is not None:
            self._rr = (self._rr + best_i + 1) % n
        return best

    def _dispatch(self, request: _Request, avoid: _Member | None) -> None:
        m = self._pick(avoid)
        if m is None:
            self.failed += 1
            request.front.send(b"ERR no-healthy-member", request.client)
            return
        flow = self._flow(m, request)
        request.attempts += 1
        try:
            flow.sock.send(request.data)
        except OSError as exc:
            # A pending ICMP error of an earlier datagram: this one was not sent.
            request.attempts -= 1
            self._member_failed(m, f"send: {exc.strerror or exc}")
            self._dispatch(request, avoid=m)
            return
        self.forwarded += 1
        m.forwarded += 1
        m.in_flight += 1
        request.flow = flow
        flow.outstanding.append(request)
        assert self._loop is not None
        request.timer = self._loop.call_later(self.opts.timeout_s, self._timed_out, request)

    def _flow(self, m: _Member, request: _Request) -> _Flow:
        key = (request.front, request.client)
        now = self.clock.mono_ns()
        flow = m.flows.get(key)
        if flow is None:
            flow = m.flows[key] = _Flow(m, key, _connected_udp(m.addr), now)
            assert self._loop is not None
            self._loop.add_reader(flow.sock.fileno(), self._flow_readable, flow)
        flow.last_used_ns = now
        return flow

    def _flow_readable(self, flow: _Flow) -> None:
        m = flow.member
        while m.flows.get(flow.key) is flow:
            try:
                data = flow.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as exc:
                self._member_failed(m, f"upstream: {exc.strerror or exc}")
                return
            if not flow.outstanding:
                continue  # unsolicited: nobody waits for it
            request = flow.outstanding.popleft()
            self._done(request)
            if data.startswith(NOT_ACTIVE) and request.attempts < 2:
                # Not executed there: safe to send elsewhere, whatever the request is.
                self._set_state(m, INELIGIBLE, data.decode(errors="replace"))
                self.retried += 1
                self._dispatch(request, avoid=m)
                continue
            self.replied += 1
            request.front.send(data, request.client)

    def _done(self, request: _Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        if request.flow is not None:
            request.flow.member.in_flight -= 1
            request.flow = None

    def _timed_out(self, request: _Request) -> None:
        request.timer = None
        if request.flow is not None:
            self._member_failed(request.flow.member,
                                f"request timed out after {self.opts.timeout_s * 1e3:.0f} ms")

    def _retry_or_fail(self, request: _Request, failed: _Member) -> None:
        """No reply from ``failed``, which may have executed the request before failing."""
        failed.failed += 1
        if request.attempts >= 2 or (self.opts.retry == "idempotent" and not request.idempotent):
            self.failed += 1
            return
        self.retried += 1
        self._dispatch(request, avoid=failed)

    def _close_flows(self, m: _Member) -> list[_Request]:
        """Close every flow to ``m`` (late replies are dropped); what they had in flight."""
        flows, m.flows = m.flows, {}
        orphans: list[_Request] = []
        for flow in flows.values():
            if self._loop is not None:
                self._loop.remove_reader(flow.sock.fileno())
            flow.sock.close()
            while flow.outstanding:
                request = flow.outstanding.popleft()
                self._done(request)
                orphans.append(request)
        return orphans

    def _sweep(self) -> None:
        idle_ns = int(self.opts.flow_idle_s * 1e9)
        now = self.clock.mono_ns()
        for m in self.members:
            for key, flow in list(m.flows.items()):
                if not flow.outstanding and now - flow.last_used_ns >= idle_ns:
                    del m.flows[key]
                    assert self._loop is not None
                    self._loop.remove_reader(flow.sock.fileno())
                    flow.sock.close()
        assert self._loop is not None
        self._sweep_handle = self._loop.call_later(self.opts.flow_idle_s / 2, self._sweep)

    # -- TCP forwarding ------------------------------------------------------------------

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Splice one client connection to one member (a second one if the first fails)."""
        avoid: _Member | None = None
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        m: _Member | None = None
        for _ in range(2):
            m = self._pick(avoid)
            if m is None or not self.serving:
                break
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(*m.addr),
                                                  self.opts.tcp_connect_timeout_s)
                break
            except (OSError, TimeoutError) as exc:
                self._member_failed(m, f"tcp connect: {exc!r}")
                avoid = m
        if upstream is None or m is None:
            self.failed += 1
            writer.close()
            return
        self.tcp_connections += 1
        up_reader, up_writer = upstream
        m.tcp.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            m.tcp.difference_update((writer, up_writer))
            writer.close()
            up_writer.close()

    def _close_tcp(self, m: _Member) -> None:
        for writer in list(m.tcp):
            writer.transport.abort()
        m.tcp.clear()

    # -- role callbacks (pair mode, ComponentClient) -------------------------------------

    async def on_active(self, si: str, epoch: int, vip: str | None, peer: Peer | None) -> None:
        order_ns = None if self.client is None else self.client.order_received_mono_ns
        vip_ns = None
        if vip is not None:
            await self.fronts.claim_vip(si, vip)
            vip_ns = time.monotonic_ns()
        if self.roles.get(si) != "active":  # taking the role, not a refreshed order
            self.became_active[si] = {"epoch": epoch, "order_mono_ns": order_ns,
                                      "vip_mono_ns": vip_ns,
                                      "serving_mono_ns": time.monotonic_ns()}
        self.roles[si] = "active"
        _say(f"lb {self.opts.name} {si} active epoch {epoch} vip {vip}")
        for m in self.members:  # the old active may have died before asking
            if m.state == EXCLUDED:
                self._report(m, "excluded when this LB became active")

    async def on_standby(self, si: str, epoch: int, peer: Peer | None) -> None:
        await self._step_down(si, "standby")
        _say(f"lb {self.opts.name} {si} standby epoch {epoch}")

    async def on_quiesced(self, si: str, epoch: int) -> None:
        await self._step_down(si, "quiesced")
        _say(f"lb {self.opts.name} {si} quiesced epoch {epoch}")

    async def on_removed(self, si: str, epoch: int) -> None:
        await self._step_down(si, None)
        _say(f"lb {self.opts.name} {si} removed epoch {epoch}")

    async def _step_down(self, si: str, state: str | None) -> None:
        # Stop forwarding first, then give the address up, before the AM hears "assigned".
        if state is None:
            self.roles.pop(si, None)
        else:
            self.roles[si] = state
        await self.fronts.release_vip(si)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the half-close on (the other direction goes on)."""
    try:
        while data := await reader.read(MAX_DATAGRAM):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # reset, or the other side was aborted
        writer.transport.abort()


@dataclasses.dataclass
class _Vip:
    cidr: str
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server | None


class _Fronts:
    """The front sockets: the bind address for the life of the process, VIPs per SI."""

    def __init__(self, lb: LoadBalancer) -> None:
        self.lb = lb
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.vips: dict[str, _Vip] = {}

    async def open(self) -> None:
        opts, loop = self.lb.opts, asyncio.get_running_loop()
        self.udp, _ = await loop.create_datagram_endpoint(
            lambda: _Front(self.lb), sock=_udp_socket(opts.bind, opts.port))
        self.tcp = await asyncio.start_server(
            self._accept, sock=_tcp_listen_socket(opts.bind, opts.port))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.lb.serving:
            self.lb.dropped += 1
            writer.close()
            return
        await self.lb.serve_tcp(reader, writer)

    async def claim_vip(self, si: str, cidr: str) -> None:
        from nfvha.amf import vip as vipmod

        opts, loop = self.lb.opts, asyncio.get_running_loop()
        current = self.vips.get(si)
        if current is not None and current.cidr != cidr:
            await self.release_vip(si)
        if si not in self.vips:
            ip = str(vipmod.parse_vip(cidr).ip)
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _Front(self.lb), sock=_udp_socket(ip, opts.port, freebind=True))
            tcp = None
            if opts.bind not in ("0.0.0.0", "", "::"):  # a wildcard listener serves it already
                tcp = await asyncio.start_server(
                    self._accept, sock=_tcp_listen_socket(ip, opts.port, freebind=True))
            self.vips[si] = _Vip(cidr, udp, tcp)
        try:
            await vipmod.claim(cidr, opts.ifname)
        except BaseException:
            await self.release_vip(si)
            raise

    async def release_vip(self, si: str) -> None:
        from nfvha.amf import vip as vipmod

        endpoint = self.vips.pop(si, None)
        if endpoint is None:
            return
        try:
            await vipmod.release(endpoint.cidr, self.lb.opts.ifname)
        finally:
            endpoint.udp.close()
            if endpoint.tcp is not None:
                endpoint.tcp.close()

    async def close(self) -> None:
        for si in list(self.vips):
            with contextlib.suppress(OSError):
                await self.release_vip(si)
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()


def _say(line: str) -> None:
    print(line, flush=True)


async def serve(opts: Options) -> None:
    from nfvha.amf.sdk import ComponentClient

    lb = LoadBalancer(opts)
    await lb.fronts.open()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: _say(json.dumps(lb.stats())))
    lb.start()
    members = ",".join(f"{m.name}={m.addr[0]}:{m.addr[1]}" for m in lb.members)
    _say(f"lb {opts.name} serving udp+tcp on {opts.bind}:{opts.port} members {members}")
    if opts.am is not None:
        # Imported now, not at the first claim: that is a failover (lb-crash), and an
        # import on a busy machine takes tens of milliseconds.
        importlib.import_module("nfvha.amf.vip")
        lb.client = ComponentClient(opts.component or opts.name, opts.am,
                                    on_active=lb.on_active, on_standby=lb.on_standby,
                                    on_quiesced=lb.on_quiesced, on_removed=lb.on_removed)
        _say(f"lb {opts.name} component {lb.client.component} of AM {opts.am}")
        await lb.client.start()
    try:
        await wait_for_termination()
    finally:
        if lb.client is not None:
            await lb.client.close()
        lb.roles.clear()
        await lb.fronts.close()
        lb.close()
    _say(f"lb {opts.name} stopping")


def _member(text: str) -> tuple[str, str, int]:
    name, sep, endpoint = text.partition("=")
    host, colon, port = endpoint.rpartition(":")
    if not sep or not name or not colon or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=IP:PORT")
    return name, host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.samples.lb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--member", type=_member, action="append", required=True,
                        metavar="NAME=IP:PORT")
    parser.add_argument("--check-interval-ms", type=float, default=10.0)
    parser.add_argument("--check-misses", type=int, default=3)
    parser.add_argument("--check-request", default="PING")
    parser.add_argument("--request-timeout-ms", type=float,
                        help="default: check interval x check misses")
    parser.add_argument("--retry", choices=("all", "idempotent"), default="all")
    parser.add_argument("--flow-idle-s", type=float, default=10.0)
    parser.add_argument("--tcp-connect-timeout-ms", type=float, default=100.0)
    ha = parser.add_argument_group("redundant pair (with --am)")
    ha.add_argument("--am", help="the availability manager, IP:PORT")
    ha.add_argument("--component", help="the component name the AM knows (default: --name)")
    ha.add_argument("--ifname", default="eth0", help="interface a VIP goes on")
    args = parser.parse_args(argv)
    names = [m[0] for m in args.member]
    if len(set(names)) != len(names):
        parser.error("member names must be unique")
    if args.check_misses < 1 or args.check_interval_ms <= 0:
        parser.error("--check-misses must be >= 1 and --check-interval-ms > 0")
    if args.am is None and args.component:
        parser.error("--component needs --am")
    timeout = args.request_timeout_ms
    opts = Options(
        name=args.name, port=args.port, bind=args.bind, members=tuple(args.member),
        check_interval_s=args.check_interval_ms / 1e3, check_misses=args.check_misses,
        check_request=args.check_request.encode(),
        request_timeout_s=None if timeout is None else timeout / 1e3, retry=args.retry,
        flow_idle_s=args.flow_idle_s, tcp_connect_timeout_s=args.tcp_connect_timeout_ms / 1e3,
        am=args.am, component=args.component, ifname=args.ifname)
    asyncio.run(serve(opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
