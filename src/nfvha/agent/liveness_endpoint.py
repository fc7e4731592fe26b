"""The host's side of liveness (ADR 0015): heartbeats to the director, answers to
pings, and a witness's part of an indirect probe.

- every ``interval`` a 64-byte HEARTBEAT (host, boot id, counter) to each controller
  address (every member of a cluster: whichever directs hears it) and to nobody else;
- a PING is answered with an ACK (same nonce, this host's name) to its sender, from
  the socket it came in on: a witness pinging this host's data address is answered
  over the data network;
- a PROBE_REQUEST - only from a controller address, only for a target address in the
  fabric or loopback (``probe_target_allowed``) - makes this host a witness: it pings
  the target twice within the probe timeout, from its data address, and tells the
  requester PROBE_RESULT as soon as the target's ACK arrives, or "not reached" when the
  timeout ends.

Two sockets on one port: the management address (heartbeats out, probe requests in,
results out) and the data address (pings in and out); one when they are the same (the
loopback fallback). Every datagram is fixed-size and handled with fixed work; at most
``MAX_PROBES`` probes run at once, so a flood of requests costs bounded memory.

Standard library only: it runs inside the host supervisor (a light process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nfvha.wire.liveness import (
    DATAGRAM_BYTES,
    BadDatagram,
    Datagram,
    Kind,
    decode,
    is_liveness,
    probe_target_allowed,
)

Address = tuple[str, int]
MAX_PROBES = 64  # probes a witness runs at once; further requests wait for the next round
# Datagrams read per wake-up: the socket is read to the end in any real load; the cap
# only keeps a flood from starving the heartbeat (the reader is level-triggered: the
# rest is read on the next loop iteration).
MAX_DATAGRAMS_PER_WAKEUP = 4096


@dataclass(eq=False)
class _Probe:
    requester: Address
    answer_from: socket.socket  # the socket the request came in on
    target: str
    target_addr: Address
    nonce: int  # the director's, echoed in the result
    ping_nonce: int  # this witness's own, in its pings
    timers: list[asyncio.TimerHandle] = field(default_factory=list)


class LivenessEndpoint:
    def __init__(self, host: str, mgmt_ip: str, port: int, controllers: Sequence[Address], *,
                 probe_ip: str | None = None, interval_s: float = 0.1,
                 probe_timeout_s: float = 0.06, boot: int | None = None) -> None:
        if len(host.encode()) > 32:
            raise ValueError(f"host name {host!r} longer than 32 bytes")
        self.host = host
        self.mgmt = (mgmt_ip, port)
        self.probe = (probe_ip or mgmt_ip, port)
        self.controllers = frozenset((ip, int(p)) for ip, p in controllers)
        self._controller_list = sorted(self.controllers)
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        # Random per supervisor start: the director tells a reboot from a lost packet.
        self.boot = boot if boot is not None else int.from_bytes(os.urandom(8)) or 1
        self.seq = 0
        self._rng = random.Random()
        self._mgmt_sock: socket.socket | None = None
        self._probe_sock: socket.socket | None = None
        self._pings: dict[int, _Probe] = {}
        self._beat: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LivenessEndpoint:
        """From the host's ``agent.json`` (read as plain JSON: no pydantic here)."""
        s = cfg.get("settings", {})
        controllers = [(c["ip"], int(c["port"])) for c in cfg.get("controllers") or []] \
            or [(cfg["controller_ip"], int(cfg["controller_port"]))]
        return cls(cfg["host"], cfg["mgmt_ip"], int(cfg["heartbeat_port"]), controllers,
                   probe_ip=cfg.get("probe_ip"),
                   interval_s=s.get("host_heartbeat_interval_ms", 100) / 1000,
                   probe_timeout_s=s.get("host_probe_timeout_ms", 60) / 1000)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Bind both addresses and start heartbeating (within a running event loop)."""
        loop = asyncio.get_running_loop()
        self._mgmt_sock = self._bind(self.mgmt)
        loop.add_reader(self._mgmt_sock.fileno(), self._drain, self._mgmt_sock)
        if self.probe != self.mgmt:
            self._probe_sock = self._bind(self.probe)
            loop.add_reader(self._probe_sock.fileno(), self._drain, self._probe_sock)
        else:
            self._probe_sock = self._mgmt_sock
        self._beat = loop.create_task(self._heartbeats(), name="heartbeats")

    def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        for p in list(self._pings.values()):
            for t in p.timers:
                t.cancel()
        self._pings.clear()
        loop = asyncio.get_running_loop()
        for sock in {self._mgmt_sock, self._probe_sock}:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()
        self._mgmt_sock = self._probe_sock = None

    @staticmethod
    def _bind(addr: Address) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        return sock

    # -- heartbeats --------------------------------------------------------------------
    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            self.seq = (self.seq + 1) & 0xFFFF_FFFF
            data = Datagram(Kind.HEARTBEAT, self.host, boot=self.boot, seq=self.seq).encode()
            for addr in self._controller_list:
                self._send(self._mgmt_sock, data, addr)
            # On schedule, without a burst to catch up after a stall.
            due = max(due + self.interval_s, loop.time())
            await asyncio.sleep(due - loop.time())

    # -- datagrams ---------------------------------------------------------------------
    def _drain(self, sock: socket.socket) -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, addr = sock.recvfrom(DATAGRAM_BYTES * 2)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. an ICMP error for an earlier send: nothing to read
            self.handle(sock, data, addr)

    def handle(self, sock: socket.socket, data: bytes, addr: Address) -> None:
        if not is_liveness(data):
            return
        try:
            d = decode(data)
        except BadDatagram:
            return
        if d.kind is Kind.PING:
            self._send(sock, Datagram(Kind.ACK, self.host, nonce=d.nonce).encode(), addr)
        elif d.kind is Kind.ACK:
            p = self._pings.get(d.nonce)
            # Only the target itself, from where it was pinged, answers for it.
            if p is not None and addr == p.target_addr and d.name == p.target:
                self._finish(p, reached=True)
        elif d.kind is Kind.PROBE_REQUEST:
            self._witness(sock, d, addr)

    def _witness(self, sock: socket.socket, d: Datagram, requester: Address) -> None:
        if requester not in self.controllers:
            return  # only a director asks; anyone else could aim this host at a victim
        if not probe_target_allowed(d.ip) or d.port == 0 or len(self._pings) >= MAX_PROBES:
            return
        nonce = self._rng.getrandbits(64)
        while nonce == 0 or nonce in self._pings:
            nonce = self._rng.getrandbits(64)
        p = _Probe(requester, sock, d.name, (d.ip, d.port), d.nonce, nonce)
        self._pings[nonce] = p
        loop = asyncio.get_running_loop()
        self._ping(p)
        p.timers = [loop.call_later(self.probe_timeout_s / 2, self._ping, p),
                    loop.call_later(self.probe_timeout_s, self._finish, p, False)]

    def _ping(self, p: _Probe) -> None:
        if self._pings.get(p.ping_nonce) is p:
            ping = Datagram(Kind.PING, p.target, nonce=p.ping_nonce).encode()
            self._send(self._probe_sock, ping, p.target_addr)

    def _finish(self, p: _Probe, reached: bool) -> None:
        if self._pings.pop(p.ping_nonce, None) is not p:
            return
        for t in p.timers:
            t.cancel()
        result = Datagram(Kind.PROBE_RESULT, p.target, nonce=p.nonce, reached=reached)
        self._send(p.answer_from, result.encode(), p.requester)

    @staticmethod
    def _send(sock: socket.socket | None, data: bytes, addr: Address) -> None:
        if sock is None:
            return
        # A peer or director that is down, a link that is cut: UDP just drops.
        with contextlib.suppress(OSError):
            sock.sendto(data, addr)
