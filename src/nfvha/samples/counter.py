"""A stateful sample VNFC: per-session counters served over UDP and TCP.

``python -m nfvha.samples.counter --name NAME --port PORT [--bind ADDR]``

The same line protocol on UDP and TCP, both on PORT:

- ``PING``          -> ``PONG <name>``
- ``INC <session>`` -> ``OK <session> <value> <name>`` (the session's counter, after +1)
- ``GET <session>`` -> ``VAL <session> <value> <name>`` (0 for an unknown session)
- anything else     -> ``ERR <reason>``

UDP: one request per datagram, one reply datagram without a line terminator.
TCP: one request per line, one ``\\n``-terminated reply line each; the connection stays
open.  Counters live in memory only, so a restart loses them: that is what a probe
measuring state loss looks for.  Exits 0 on SIGTERM or SIGINT.

HA mode: ``--am IP:PORT [--component NAME] [--state none|sync|checkpoint]
[--sync-port P] [--ifname IF]`` makes it a component managed by the availability
manager (``nfvha.amf.sdk``).  Only an active serves INC and GET; anything else answers
``ERR not-active <ha_state>`` (``standby``, ``quiesced``, ``unassigned``); PING always
answers; ``GRANTS [RESET]`` -> ``GRANTS <ms> <grants> <name>``: the longest wait from
an active-lease request to its grant since the last ``GRANTS RESET`` (which answers
the figures before it resets them) and the grants received in all.  An active with a
VIP claims it (``nfvha.amf.vip``) and answers UDP sent to the VIP from the VIP.
State:

- ``none``: in memory; a new active starts from nothing.
- ``sync`` (IF-3, direct): the active sends every change to the standby's sync port
  (TCP, JSON lines) and answers the client only after the standby acknowledged it.  A
  standby that is unreachable or slow makes the active go on unsynchronised (degraded)
  rather than stop; when it is back it first gets a full snapshot.
- ``checkpoint``: every change is written to the AM's checkpoint (key ``counters``)
  before the answer; a new active reads it first.

In HA mode two more requests answer on any role: ``SYNC`` (``SYNC up|degraded|none``:
whether a standby holds the active's full state) and ``TIMES``: ``TIMES <JSON>``, per
service instance when this process last took the active role, on CLOCK_MONOTONIC
(one clock machine-wide), for timing a failover stage by stage:
``{"<si>": {"epoch": E, "order_mono_ns": T, "vip_mono_ns": T|null,
"serving_mono_ns": T}}`` - the active order arrived, the VIP was configured and the
first gratuitous ARP sent (null: no VIP), it served.

Watchdog (VNFHA-1): ``--watchdog-ms MS`` arms the VM's watchdog (``nfvha.amf.watchdog``)
with that timeout and kicks it four times per timeout; ``WATCHDOG`` -> ``WATCHDOG
kicking|stopped <ms>``; ``WATCHDOG STOP`` stops the kicks while the counter goes on
serving - a VNFC stuck where its watchdog sees it, for fault injection - and answers
``OK watchdog stopped``.

Standard library only: this runs as a separate process inside a VM.  The HA modules
are imported only in HA mode, so the plain counter starts as fast as before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from nfvha.amf.sdk import ComponentClient, Peer

MAX_LINE = 4096


class CounterService:
    """The protocol logic, independent of any transport."""

    def __init__(self, name: str, watchdog: WatchdogKicker | None = None) -> None:
        self.name = name
        self.counters: dict[str, int] = {}
        self.watchdog = watchdog

    def handle(self, request: str) -> str:
        words = request.split()
        if not words:
            return "ERR empty request"
        command, args = words[0].upper(), words[1:]
        if command == "WATCHDOG" and self.watchdog is not None:
            if [a.upper() for a in args] == ["STOP"]:
                self.watchdog.stop()
                return "OK watchdog stopped"
            if not args:
                return f"WATCHDOG {self.watchdog.state} {self.watchdog.timeout_ms}"
        if command == "PING" and not args:
            return f"PONG {self.name}"
        if command in ("INC", "GET") and len(args) == 1:
            session = args[0]
            if command == "INC":
                self.counters[session] = self.counters.get(session, 0) + 1
                return f"OK {session} {self.counters[session]} {self.name}"
            return f"VAL {session} {self.counters.get(session, 0)} {self.name}"
        if command in ("PING", "INC", "GET"):
            return f"ERR usage: PING | INC <session> | GET <session> (got {request.strip()!r})"
        return f"ERR unknown command {words[0]!r}"

    async def ahandle(self, request: str) -> str:
        return self.handle(request)


class _UdpCounter(asyncio.DatagramProtocol):
    def __init__(self, service: CounterService) -> None:
        self._service = service
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: cast.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is None:
            return
        reply = self._service.handle(data[:MAX_LINE].decode(errors="replace"))
        self._transport.sendto(reply.encode(), addr)


Handler = Callable[[str], Awaitable[str]]


class WatchdogKicker:
    """Arms the VM's watchdog and kicks it until stopped."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.state = "kicking"
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        self.state = "stopped"
        self._stopped.set()

    async def run(self) -> None:
        from nfvha.amf.watchdog import Watchdog, WatchdogError

        wd = Watchdog()
        try:
            wd.arm(self.timeout_ms / 1000)
            while not self._stopped.is_set():
                with contextlib.suppress(WatchdogError):  # the guest's queue was full
                    wd.kick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), self.timeout_ms / 4000)
        finally:
            wd.close()  # stopped: not disarmed - the timer runs out, as it should


async def _serve_tcp_client(
    handle: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the stream limit
                writer.write(b"ERR line too long\n")
                break
            if not line:
                break
            writer.write((await handle(line.decode(errors="replace")) + "\n").encode())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_for_termination() -> None:
    """Return when SIGTERM or SIGINT arrives; ignore any repeat after that."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in signals:
        # A second SIGTERM while shutting down (the guest's, after a process-group
        # one) must not turn a clean exit into a kill.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


def _start_kicker(service: CounterService) -> asyncio.Task[None] | None:
    if service.watchdog is None:
        return None
    return asyncio.get_running_loop().create_task(service.watchdog.run())


async def serve(name: str, bind: str, port: int, watchdog_ms: int | None = None) -> None:
    service = CounterService(name, WatchdogKicker(watchdog_ms) if watchdog_ms else None)
    kicker = _start_kicker(service)
    loop = asyncio.get_running_loop()
    udp_transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpCounter(service), local_addr=(bind, port)
    )
    tcp_server = await asyncio.start_server(
        lambda r, w: _serve_tcp_client(service.ahandle, r, w), bind, port, limit=MAX_LINE
    )
    print(f"counter {name} serving udp+tcp on {bind}:{port}", flush=True)
    try:
        await wait_for_termination()
    finally:
        udp_transport.close()
        tcp_server.close()
        if kicker is not None:
            kicker.cancel()
    print(f"counter {name} stopping", flush=True)


# -- HA mode ---------------------------------------------------------------------------

CHECKPOINT_KEY = "counters"
_IP_FREEBIND = 15  # <linux/in.h>; the socket module of Python 3.11 lacks it


@dataclasses.dataclass(frozen=True)
class HaOptions:
    name: str
    bind: str
    port: int
    am: str
    component: str
    state: str = "none"  # none | sync | checkpoint
    sync_port: int | None = None
    ifname: str = "eth0"
    sync_ack_timeout_s: float = 0.25
    sync_connect_timeout_s: float = 0.2
    checkpoint_timeout_s: float = 1.0
    watchdog_ms: int | None = None


def _udp_socket(host: str, port: int, *, freebind: bool = False) -> socket.socket:
    # SO_REUSEADDR on both: the VIP's socket binds vip:port beside a wildcard *:port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if freebind:  # bind before the address is configured, so it serves from the first GARP
        sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
    sock.bind((host, port))
    return sock


def _tcp_listen_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_IP, _IP_FREEBIND, 1)
    sock.bind((host, port))
    return sock


class _UdpHa(asyncio.DatagramProtocol):
    """Like _UdpCounter, but the answer may wait (for a sync ack or a checkpoint)."""

    def __init__(self, handle: Handler, tasks: set[asyncio.Task[None]]) -> None:
        self._handle = handle
        self._tasks = tasks
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        task = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = await self._handle(data[:MAX_LINE].decode(errors="replace"))
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply.encode(), addr)


@dataclasses.dataclass
class _VipEndpoint:
    cidr: str
    udp: asyncio.DatagramTransport
    tcp: asyncio.Server | None


class _SyncLink:
    """The active's side of direct state sync to one standby (IF-3).

    A standby that joins is brought up to date without holding the clients: the full
    state goes first, then, round by round, the sessions changed meanwhile; answers in
    the meantime do not wait for it (a standby that does not hold the state yet
    protects nothing by making them wait, and a standby that has just started may take
    tens of milliseconds to answer). Once it holds everything (``caught_up``), every
    change is answered only after the standby acknowledged it, under the counter's lock,
    so at most one message is in flight. Down (unreachable, slow), the link is
    ``degraded`` and comes back the same way.
    """

    CATCH_UP_ROUNDS = 3  # then the last round holds the clients (changes keep coming)

    def __init__(self, owner: HaCounter, si: str, epoch: int, peer: Peer) -> None:
        self.owner = owner
        self.si = si
        self.epoch = epoch
        self.peer = peer
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.seq = 0
        self.closed = False
        self.degraded = False
        self.caught_up = False
        self.dirty: set[str] = set()  # sessions changed while catching up
        self.bring_up: asyncio.Task[None] | None = None  # the first connect and catch-up
        self._retry: asyncio.Task[None] | None = None

    async def connect(self) -> bool:
        """Connect, then bring the standby up to date. True once it holds everything."""
        opts = self.owner.opts
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.peer.address, self.peer.port, limit=2**24),
                opts.sync_connect_timeout_s)
        except (OSError, TimeoutError):
            self._down("unreachable")
            return False
        if self.closed:  # closed while connecting
            self.close()
            return False
        self._write({"op": "hello", "component": opts.component, "si": self.si,
                     "epoch": self.epoch})
        self.dirty.clear()
        counters = dict(self.owner.service.counters)
        if not await self._exchange([{"op": "snapshot", "counters": counters}]):
            return False
        for _ in range(self.CATCH_UP_ROUNDS):
            if not self.dirty:
                break
            if not await self._exchange(self._take_dirty()):
                return False
        if self.dirty:
            async with self.owner.lock:  # the last few changes, with the clients held
                if self.writer is None or not await self._exchange(self._take_dirty()):
                    return False
                return self._caught_up(len(counters))
        return self._caught_up(len(counters))  # no await since the last ack: none missing

    def _caught_up(self, sessions: int) -> bool:
        if self.closed or self.writer is None:
            return False
        self.caught_up = True
        self.degraded = False
        _say(f"counter {self.owner.opts.name} sync {self.si} to {self.peer.component} up "
             f"({sessions} sessions)")
        return True

    def _take_dirty(self) -> list[dict[str, Any]]:
        counters = self.owner.service.counters
        changed, self.dirty = self.dirty, set()
        return [{"op": "set", "session": s, "value": counters[s]}
                for s in sorted(changed) if s in counters]

    async def replicate(self, session: str, value: int) -> bool:
        """Send one change and wait for the ack (caller holds the lock). False: not
        synced - degraded, or still catching up (then it goes in a later round)."""
        if not self.caught_up:
            if self.writer is not None:
                self.dirty.add(session)
            return False
        return await self._exchange([{"op": "set", "session": session, "value": value}])

    def _write(self, message: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(json.dumps(message).encode() + b"\n")

    async def _exchange(self, messages: list[dict[str, Any]]) -> bool:
        """Send messages (one write) and wait for the ack of each, in order."""
        reader, writer = self.reader, self.writer
        if writer is None or reader is None:
            return False
        first = self.seq + 1
        self.seq += len(messages)
        reply: Any = {}
        try:
            writer.write(b"".join(json.dumps({**m, "seq": first + i}).encode() + b"\n"
                                  for i, m in enumerate(messages)))
            await writer.drain()
            for i in range(len(messages)):
                line = await asyncio.wait_for(reader.readline(),
                                              self.owner.opts.sync_ack_timeout_s)
                reply = json.loads(line) if line else {}
                if not isinstance(reply, dict) or reply.get("op") != "ack" \
                        or reply.get("seq") != first + i:
                    break
            else:
                return True
        except (OSError, TimeoutError, ValueError):
            reply = {}
        self._down((reply.get("reason") if isinstance(reply, dict) else None) or "no ack")
        return False

    def _down(self, why: str) -> None:
        if self.writer is not None:
            self.writer.close()
        self.caught_up = False
        self.dirty.clear()  # the next connect starts from a full snapshot
        if not self.degraded:
            self.degraded = True
            _say(f"counter {self.owner.opts.name} sync {self.si} to {self.peer.component} "
                 f"degraded: {why}")
        self.reader = self.writer = None
        if not self.closed and (self._retry is None or self._retry.done()):
            self._retry = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self, first_s: float = 0.05, max_s: float = 1.0) -> None:
        delay = first_s
        while not self.closed:
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_s)
            if self.closed or await self.connect():
                return

    def close(self) -> None:
        self.closed = True
        self.caught_up = False
        if self._retry is not None:
            self._retry.cancel()
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HaCounter:
    """The counter as a component of the availability manager."""

    def __init__(self, service: CounterService, opts: HaOptions) -> None:
        self.service = service
        self.opts = opts
        self.client: ComponentClient | None = None
        self.roles: dict[str, str] = {}
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self._vips: dict[str, _VipEndpoint] = {}
        self._links: dict[str, _SyncLink] = {}
        self._inbound: set[asyncio.StreamWriter] = set()
        # si -> when this process last became its active (see TIMES in the docstring).
        self.became_active: dict[str, dict[str, int | None]] = {}

    @property
    def serving(self) -> bool:
        # The lease check covers the moment between a lease running out (a VM frozen
        # and thawed, say) and the client's quiesce callback having run.
        return "active" in self.roles.values() and (
            self.client is None or self.client.lease_valid())

    def role_text(self) -> str:
        if self.serving:
            return "active"
        for state in ("standby", "quiesced"):
            if state in self.roles.values():
                return state
        return "quiesced" if "active" in self.roles.values() else "unassigned"

    def sync_text(self) -> str:
        """``SYNC up``: every standby link holds the full state (a failover now loses
        nothing acknowledged); ``degraded``: changes are answered without a standby (it
        is down, or still being brought up to date); ``none``: no direct sync here (not
        active, or another state model)."""
        links = list(self._links.values())
        if self.opts.state != "sync" or not links:
            return "SYNC none"
        up = all(link.caught_up and not link.degraded for link in links)
        return "SYNC up" if up else "SYNC degraded"

    def grants_text(self, args: list[str]) -> str:
        """How late the AM's lease grants came (``GRANTS``; ``GRANTS RESET`` restarts
        the measurement): what ``nfvha bench abuse`` reads at the components."""
        if [a.upper() for a in args] not in ([], ["RESET"]):
            return "ERR usage: GRANTS [RESET]"
        if self.client is None:
            return "ERR no AM session"
        late_ms = self.client.grant_rtt_max_ms(reset=bool(args))
        return f"GRANTS {late_ms:.3f} {self.client.grants} {self.service.name}"

    async def handle(self, request: str) -> str:
        words = request.split()
        if [w.upper() for w in words] == ["SYNC"]:
            return self.sync_text()
        if words and words[0].upper() == "GRANTS":
            return self.grants_text(words[1:])
        if [w.upper() for w in words] == ["TIMES"]:
            return "TIMES " + json.dumps(self.became_active, separators=(",", ":"))
        if len(words) != 2 or words[0].upper() not in ("INC", "GET"):
            return self.service.handle(request)  # PING, usage errors
        if not self.serving:
            return f"ERR not-active {self.role_text()}"
        if words[0].upper() == "GET" or self.opts.state == "none":
            return self.service.handle(request)
        session = words[1]
        async with self.lock:
            if not self.serving:  # quiesced while this waited
                return f"ERR not-active {self.role_text()}"
            value = self.service.counters.get(session, 0) + 1
            if self.opts.state == "checkpoint":
                assert self.client is not None
                try:
                    await self.client.checkpoint_write(
                        CHECKPOINT_KEY, {**self.service.counters, session: value},
                        timeout_s=self.opts.checkpoint_timeout_s)
                except Exception as exc:  # not stored: not counted either
                    return f"ERR checkpoint-failed {type(exc).__name__}"
                self.service.counters[session] = value
            else:
                self.service.counters[session] = value
                for link in list(self._links.values()):
                    await link.replicate(session, value)
        return f"OK {session} {value} {self.service.name}"

    # -- role callbacks (ComponentClient) ------------------------------------------------

    async def on_active(self, si: str, epoch: int, vip: str | None, peer: Peer | None) -> None:
        order_ns = None if self.client is None else self.client.order_received_mono_ns
        vip_ns: int | None = None
        if self.opts.state == "checkpoint":
            assert self.client is not None
            stored = await self.client.checkpoint_read(
                CHECKPOINT_KEY, timeout_s=self.opts.checkpoint_timeout_s)
            if isinstance(stored, dict):
                async with self.lock:
                    self.service.counters = {str(k): int(v) for k, v in stored.items()}
        if self.opts.state == "sync":
            self._close_inbound()  # fence: nothing may overwrite an active's state
        current = self._vips.get(si)
        if current is not None and current.cidr != vip:
            await self._release_vip(si)
        if vip is not None:
            await self._claim_vip(si, vip)
            vip_ns = time.monotonic_ns()
        self._close_link(si)
        if self.opts.state == "sync" and peer is not None:
            # In the background: a dead standby host costs a connect timeout, and a
            # starting one may be slow to answer; the clients do not wait for either.
            link = self._links[si] = _SyncLink(self, si, epoch, peer)
            link.bring_up = self._spawn(self._bring_up(link))
        if self.roles.get(si) != "active":  # taking the role, not a refreshed order
            self.became_active[si] = {"epoch": epoch, "order_mono_ns": order_ns,
                                      "vip_mono_ns": vip_ns,
                                      "serving_mono_ns": time.monotonic_ns()}
        self.roles[si] = "active"
        _say(f"counter {self.opts.name} {si} active epoch {epoch} vip {vip}")

    async def _bring_up(self, link: _SyncLink) -> None:
        await link.connect()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def on_standby(self, si: str, epoch: int, peer: Peer | None) -> None:
        await self._step_down(si, "standby")
        _say(f"counter {self.opts.name} {si} standby epoch {epoch}")

    async def on_quiesced(self, si: str, epoch: int) -> None:
        await self._step_down(si, "quiesced")
        _say(f"counter {self.opts.name} {si} quiesced epoch {epoch}")

    async def on_removed(self, si: str, epoch: int) -> None:
        await self._step_down(si, None)
        _say(f"counter {self.opts.name} {si} removed epoch {epoch}")

    async def _step_down(self, si: str, state: str | None) -> None:
        # Stop serving first, then give the address up, before the AM hears "assigned".
        if state is None:
            self.roles.pop(si, None)
        else:
            self.roles[si] = state
        await self._release_vip(si)
        await self._finish_catch_up(si)
        self._close_link(si)

    async def _finish_catch_up(self, si: str) -> None:
        """A standby still being brought up to date gets what was answered meanwhile
        before the link closes (a planned switchover keeps every acknowledged change).
        After the VIP is released: a lease that ran out must not keep the address."""
        link = self._links.get(si)
        task = None if link is None or link.caught_up else link.bring_up
        if task is None or task.done():
            return
        opts = self.opts
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), opts.sync_connect_timeout_s
                                   + (_SyncLink.CATCH_UP_ROUNDS + 2) * opts.sync_ack_timeout_s)

    async def shutdown(self) -> None:
        self.roles.clear()
        for si in list(self._links):
            self._close_link(si)
        for si in list(self._vips):
            await self._release_vip(si)
        self._close_inbound()

    # -- VIP -------------------------------------------------------------------------------

    async def _claim_vip(self, si: str, cidr: str) -> None:
        from nfvha.amf import vip as vipmod

        loop = asyncio.get_running_loop()
        ip = str(vipmod.parse_vip(cidr).ip)
        endpoint = self._vips.get(si)
        if endpoint is None:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpHa(self.handle, self.tasks),
                sock=_udp_socket(ip, self.opts.port, freebind=True))
            tcp = None
            if self.opts.bind not in ("0.0.0.0", ""):  # a wildcard listener already serves it
                tcp = await asyncio.start_server(
                    lambda r, w: _serve_tcp_client(self.handle, r, w),
                    sock=_tcp_listen_socket(ip, self.opts.port), limit=MAX_LINE)
            endpoint = self._vips[si] = _VipEndpoint(cidr, udp, tcp)
        try:
            await vipmod.claim(cidr, self.opts.ifname)
        except BaseException:
            await self._release_vip(si)
            raise

    async def _release_vip(self, si: str) -> None:
        from nfvha.amf import vip as vipmod

        endpoint = self._vips.pop(si, None)
        if endpoint is None:
            return
        try:
            await vipmod.release(endpoint.cidr, self.opts.ifname)
        finally:
            endpoint.udp.close()
            if endpoint.tcp is not None:
                endpoint.tcp.close()

    # -- state sync --------------------------------------------------------------------------

    def _close_link(self, si: str) -> None:
        link = self._links.pop(si, None)
        if link is not None:
            link.close()

    def _close_inbound(self) -> None:
        for writer in list(self._inbound):
            writer.close()
        self._inbound.clear()

    async def serve_sync(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The standby's side: apply what the active sends, acknowledge each message."""
        self._inbound.add(writer)
        try:
            hello = json.loads(await reader.readline() or b"{}")
            si, epoch = hello.get("si"), hello.get("epoch")
            seen = None if self.client is None else self.client.highest_epoch(str(si))
            if self.serving or not isinstance(epoch, int) or (seen is not None and epoch < seen):
                reason = "active here" if self.serving else f"stale epoch {epoch} < {seen}"
                writer.write(json.dumps({"op": "reject", "reason": reason}).encode() + b"\n")
                return
            while line := await reader.readline():
                message = json.loads(line)
                if self.serving or writer not in self._inbound:
                    return
                if message.get("op") == "snapshot":
                    self.service.counters = {
                        str(k): int(v) for k, v in message["counters"].items()}
                elif message.get("op") == "set":
                    self.service.counters[str(message["session"])] = int(message["value"])
                ack = {"op": "ack", "seq": message.get("seq")}
                writer.write(json.dumps(ack).encode() + b"\n")
                await writer.drain()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        finally:
            self._inbound.discard(writer)
            writer.close()


def _say(line: str) -> None:
    print(line, flush=True)


async def serve_ha(opts: HaOptions) -> None:
    from nfvha.amf.sdk import ComponentClient

    # Imported now, not at the first claim: that is a failover, and an import on a busy
    # machine takes tens of milliseconds.
    importlib.import_module("nfvha.amf.vip")

    service = CounterService(
        opts.name, WatchdogKicker(opts.watchdog_ms) if opts.watchdog_ms else None)
    kicker = _start_kicker(service)
    ha = HaCounter(service, opts)
    loop = asyncio.get_running_loop()
    udp_transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpHa(ha.handle, ha.tasks), sock=_udp_socket(opts.bind, opts.port))
    tcp_server = await asyncio.start_server(
        lambda r, w: _serve_tcp_client(ha.handle, r, w), opts.bind, opts.port, limit=MAX_LINE,
        reuse_address=True)
    sync_server = None
    if opts.state == "sync":
        sync_server = await asyncio.start_server(ha.serve_sync, opts.bind, opts.sync_port,
                                                 limit=2**24, reuse_address=True)
    client = ComponentClient(opts.component, opts.am, on_active=ha.on_active,
                             on_standby=ha.on_standby, on_quiesced=ha.on_quiesced,
                             on_removed=ha.on_removed)
    ha.client = client
    print(f"counter {opts.name} serving udp+tcp on {opts.bind}:{opts.port}", flush=True)
    _say(f"counter {opts.name} component {opts.component} of AM {opts.am} state {opts.state}")
    await client.start()
    try:
        await wait_for_termination()
    finally:
        if kicker is not None:
            kicker.cancel()
        await client.close()
        await ha.shutdown()
        udp_transport.close()
        tcp_server.close()
        if sync_server is not None:
            sync_server.close()
    print(f"counter {opts.name} stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.samples.counter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--watchdog-ms", type=int, default=None,
                        help="arm the VM's watchdog with this timeout and kick it")
    ha = parser.add_argument_group("HA mode (with --am)")
    ha.add_argument("--am", help="the availability manager, IP:PORT")
    ha.add_argument("--component", help="the component name the AM knows (default: --name)")
    ha.add_argument("--state", choices=("none", "sync", "checkpoint"), default=None)
    ha.add_argument("--sync-port", type=int, help="TCP port for state sync (--state sync)")
    ha.add_argument("--ifname", default="eth0", help="interface a VIP goes on")
    args = parser.parse_args(argv)
    if args.am is None:
        if args.component or args.state or args.sync_port is not None:
            parser.error("--component, --state and --sync-port need --am")
        asyncio.run(serve(args.name, args.bind, args.port, args.watchdog_ms))
        return 0
    if args.state == "sync" and args.sync_port is None:
        parser.error("--state sync needs --sync-port")
    asyncio.run(serve_ha(HaOptions(
        name=args.name, bind=args.bind, port=args.port, am=args.am,
        component=args.component or args.name, state=args.state or "none",
        sync_port=args.sync_port, ifname=args.ifname, watchdog_ms=args.watchdog_ms)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
