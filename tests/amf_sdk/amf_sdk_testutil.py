"""Helpers for the SDK tests: a fake availability manager speaking the SDK wire protocol
of ADR 0008, counter processes, UDP probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nfvha.nfvi.spawn import NETNS_DIR, setns_net
from nfvha.testbed.services import free_tcp_udp_port as free_port  # noqa: F401 (the tests')

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
Message = dict[str, Any]


class AmConn:
    """One registered component, as the fake AM sees it."""

    def __init__(self, am: FakeAM, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 register: Message) -> None:
        self.am = am
        self.reader = reader
        self.writer = writer
        self.register = register
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.leases = 0  # lease requests received
        self.grants = 0  # grants sent
        self.deny = False  # answer lease requests with granted: false
        self.silent = False  # answer lease requests not at all
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def assignments(self) -> dict[str, Message]:
        """si -> the latest order to this component (any connection), as grants state it."""
        return self.am.assignments.setdefault(str(self.register.get("component")), {})

    async def send(self, message: Message, *, track: bool = True) -> None:
        """``track=False``: an order the AM's records do not state (a late one)."""
        op, si, epoch = message.get("op"), message.get("si"), message.get("epoch")
        if (track and op in ("assign", "remove") and isinstance(si, str) and isinstance(epoch, int)
                and epoch >= self.assignments.get(si, {}).get("epoch", 0)):
            self.assignments[si] = {
                "si": si, "epoch": epoch,
                "ha_state": message.get("ha_state") if op == "assign" else None,
                "vip": message.get("vip"), "peer": message.get("peer")}
        self.writer.write(json.dumps(message).encode() + b"\n")
        await self.writer.drain()

    async def grant(self, n: int) -> None:
        """Answer lease request ``n`` as the AM does (ADR 0008)."""
        if self.deny:
            await self.send({"op": "grant", "n": n, "granted": False})
        else:
            await self.send({"op": "grant", "n": n, "granted": True,
                             "assignments": list(self.assignments.values())})
        self.grants += 1

    async def recv(self, within_s: float = 5.0) -> Message:
        return await asyncio.wait_for(self.inbox.get(), within_s)

    async def recv_until(self, match: Callable[[Message], bool], within_s: float = 5.0
                         ) -> Message:
        deadline = time.monotonic() + within_s
        while True:
            message = await self.recv(max(0.0, deadline - time.monotonic()))
            if match(message):
                return message

    async def order(self, si: str, ha_state: str, epoch: int, *, vip: str | None = None,
                    peer: Message | None = None, within_s: float = 5.0) -> Message:
        """Send an assign order; return the component's answer for it."""
        await self.send({"op": "assign", "si": si, "ha_state": ha_state, "epoch": epoch,
                         "vip": vip, "peer": peer})
        return await self.recv_until(
            lambda m: m.get("op") in ("assigned", "refused") and m.get("si") == si
            and m.get("epoch") == epoch, within_s)

    async def wait_leases(self, n: int, within_s: float = 5.0) -> None:
        """Until ``n`` lease requests have arrived (and been answered, unless silent)."""
        deadline = time.monotonic() + within_s
        while self.leases < n:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.leases} lease requests, not {n}, in {within_s}s")
            await asyncio.sleep(0.005)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.writer.close()


@dataclass
class FakeAM:
    """An AM that registers components, grants leases (stating the orders the test
    gave) and answers checkpoints; the test gives orders."""

    lease_ms: int = 5000
    ping_interval_ms: int | None = None  # how often components ask for their lease
    grant_leases: bool = True  # False: the AM is silent (the leases run out)
    answer_checkpoints: bool = True
    checkpoint_error: str | None = None
    checkpoints: dict[str, Any] = field(default_factory=dict)
    host: str = LOOPBACK
    port: int = 0
    conns: list[AmConn] = field(default_factory=list)
    assignments: dict[str, dict[str, Message]] = field(default_factory=dict)  # per component
    _registered: asyncio.Queue[AmConn] = field(default_factory=asyncio.Queue)
    _server: asyncio.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, sock: socket.socket | None = None) -> FakeAM:
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock)
        else:
            self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                      reuse_address=True)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self

    async def stop(self) -> None:
        """Close the listener and every connection: an AM crash, as the components see it."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for conn in self.conns:
            conn.close()

    async def accept(self, within_s: float = 5.0) -> AmConn:
        """The next component that registered (after its welcome was sent)."""
        return await asyncio.wait_for(self._registered.get(), within_s)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if not line:
            writer.close()
            return
        conn = AmConn(self, reader, writer, json.loads(line))
        self.conns.append(conn)
        await conn.send({"op": "welcome", "lease_ms": self.lease_ms,
                         "ping_interval_ms": self.ping_interval_ms})
        self._registered.put_nowait(conn)
        try:
            while line := await reader.readline():
                await self._handle(conn, json.loads(line))
        except ConnectionError:
            pass
        finally:
            conn.closed.set()
            writer.close()

    async def _handle(self, conn: AmConn, message: Message) -> None:
        op = message.get("op")
        if op == "lease":
            conn.leases += 1
            if self.grant_leases and not conn.silent:
                await conn.grant(int(message["n"]))
            return
        if op in ("checkpoint_write", "checkpoint_read") and self.answer_checkpoints:
            reply: Message = {"op": "checkpoint", "id": message["id"], "ok": True,
                              "value": None, "error": None}
            if self.checkpoint_error is not None:
                reply.update(ok=False, error=self.checkpoint_error)
            elif op == "checkpoint_write":
                self.checkpoints[message["key"]] = message["value"]
            else:
                reply["value"] = self.checkpoints.get(message["key"])
            await conn.send(reply)
        conn.inbox.put_nowait(message)



class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.replies.put_nowait(data)


class UdpClient:
    """A connected UDP socket: only replies from host:port reach it."""

    def __init__(self, transport: asyncio.DatagramTransport, replies: _Replies) -> None:
        self._transport = transport
        self._replies = replies

    @classmethod
    async def open(cls, host: str, port: int, sock: socket.socket | None = None) -> UdpClient:
        loop = asyncio.get_running_loop()
        if sock is not None:
            sock.connect((host, port))
            transport, replies = await loop.create_datagram_endpoint(_Replies, sock=sock)
        else:
            transport, replies = await loop.create_datagram_endpoint(
                _Replies, remote_addr=(host, port))
        return cls(transport, replies)

    async def ask(self, request: str, *, within_s: float = 3.0, retry_s: float = 0.1) -> str:
        """Send ``request`` every ``retry_s`` until an answer arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not self._replies.replies.empty():  # a late answer to an earlier retry
            self._replies.replies.get_nowait()
        while True:
            self._transport.sendto(request.encode())
            try:
                reply = await asyncio.wait_for(self._replies.replies.get(), retry_s)
                return reply.decode()
            except TimeoutError:
                if loop.time() >= deadline:
                    raise AssertionError(f"no answer to {request!r}") from None

    def close(self) -> None:
        self._transport.close()


async def udp_ask(host: str, port: int, request: str, *, within_s: float = 3.0,
                  retry_s: float = 0.1) -> str:
    """One request from a fresh connected UDP socket."""
    client = await UdpClient.open(host, port)
    try:
        return await client.ask(request, within_s=within_s, retry_s=retry_s)
    finally:
        client.close()


class CounterProc:
    """A counter VNFC as a subprocess; its stdout lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, argv: list[str]) -> CounterProc:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._new_line.set()

    async def wait_line(self, needle: str, within_s: float = 5.0) -> str:
        deadline = time.monotonic() + within_s
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            self._new_line.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {needle!r} in {self.lines}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_line.wait(), remaining)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def counter_argv(name: str, port: int, am: str, *, state: str = "none",
                 sync_port: int | None = None, bind: str = LOOPBACK,
                 ifname: str | None = None, prefix: tuple[str, ...] = ()) -> list[str]:
    argv = [*prefix, sys.executable, "-m", "nfvha.samples.counter", "--name", name,
            "--port", str(port), "--bind", bind, "--am", am, "--component", name,
            "--state", state]
    if sync_port is not None:
        argv += ["--sync-port", str(sync_port)]
    if ifname is not None:
        argv += ["--ifname", ifname]
    return argv


def peer(component: str, port: int, address: str = LOOPBACK) -> Message:
    return {"component": component, "address": address, "port": port}


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread inside ``netns`` (setns acts on one thread only,
    and the thread dies with the namespace it entered)."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            setns_net(os.path.join(NETNS_DIR, netns))
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


# What the ``start_counter`` fixture returns.
StartCounter = Callable[[list[str]], Awaitable["CounterProc"]]
