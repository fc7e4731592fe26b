"""The real controller API app (``create_app`` with a SQLite event and alarm store and a
started notifier) for the bounded-input tests, and a raw HTTP client that streams a
body while it waits for the answer (an oversize body is answered before it is sent)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from nfvha.api.app import create_app
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.view import InventoryView
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.api import ApiLimits
from nfvha.model.auth import AuthConfig, TokenEntry, token_hash
from nfvha.model.topology import Topology, default_topology_path, load_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import SYSTEM_CLOCK

TOKEN = "an-admin-token-for-the-bounded-input-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@dataclass
class Controller:
    app: FastAPI
    bus: EventBus
    alarms: AlarmManager
    notifier: Notifier
    topology: Topology


@contextlib.asynccontextmanager
async def controller_app(tmp: Path, limits: ApiLimits | None = None, *,
                         trusted: list[str] | None = None) -> AsyncIterator[Controller]:
    """``trusted``: the intake's trusted networks (default: loopback only)."""
    topology = load_topology(default_topology_path())
    db = tmp / "events.db"
    store, alarm_store = SqliteEventStore(db), SqliteAlarmStore(db)
    outbox = Outbox(tmp / "notifications.db")
    notifier = Notifier(outbox, SYSTEM_CLOCK)
    await notifier.start()
    bus = EventBus(store, SYSTEM_CLOCK)
    liveness = HostStates(topology.host_names(), SYSTEM_CLOCK)
    agents = AgentServer(("127.0.0.1", 0), bus, liveness, SYSTEM_CLOCK)
    alarms = AlarmManager(topology, alarm_store, SYSTEM_CLOCK, topology.settings)
    auth = AuthConfig(tokens=[TokenEntry(sha256=token_hash(TOKEN), role="admin")],
                      **({} if trusted is None else {"intake_trusted_networks": trusted}))
    app = create_app("bound", topology, InventoryView(topology, agents, liveness, SYSTEM_CLOCK),
                     bus, agents, alarms, notifier, AlarmStream(), "/vnffm/v1", auth,
                     limits=limits)
    try:
        yield Controller(app, bus, alarms, notifier, topology)
    finally:
        await notifier.close()
        outbox.close()
        alarm_store.close()
        store.close()


def masakari_notification(generated_time: str = "2027-01-15T08:00:00", *,
                          host: str = "host1", **payload: str) -> dict[str, Any]:
    return {"notification": {"type": "COMPUTE_HOST", "hostname": host,
                             "generated_time": generated_time,
                             "payload": payload or {"event": "STOPPED"}}}


def doctor_event(time: str = "2027-01-15T09:00:00", *, host: str = "host1",
                 status: str = "down") -> dict[str, Any]:
    return {"time": time, "type": "compute.host.down",
            "details": {"hostname": host, "status": status, "monitor": "m"}}


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def huge_int(digits: int) -> bytes:
    return b'{"ackState": ' + b"7" * digits + b"}"


# -- a raw HTTP/1.1 client -------------------------------------------------------------

CHUNK = b"x" * 65536


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client had written when the answer came

    def json(self) -> Any:
        return json.loads(self.body)


async def send_streaming(port: int, method: str, path: str, total: int, *,
                         chunked: bool, headers: dict[str, str] | None = None,
                         timeout_s: float = 60.0) -> Answer:
    """Send ``total`` body bytes (declared with Content-Length, or chunked) while
    reading the answer; stop sending once it has come."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = [f"{method} {path} HTTP/1.1", "Host: nfvha", "Content-Type: application/json",
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}",
            *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = 0

    async def pump() -> None:
        nonlocal sent
        with contextlib.suppress(ConnectionError):
            while sent < total:
                piece = CHUNK[:total - sent]
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                sent += len(piece)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    pumping = asyncio.create_task(pump())
    try:
        answer = await asyncio.wait_for(read_answer(reader), timeout_s)
        answer.sent = sent
        return answer
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed without an answer")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return Answer(status, headers, body, 0)


async def get(port: int, path: str, *, extra_headers: str = ""
              ) -> tuple[Answer, asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive GET; the connection stays open for the caller (who closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: nfvha\r\nAuthorization: Bearer {TOKEN}\r\n"
                 f"{extra_headers}\r\n".encode())
    await writer.drain()
    return await asyncio.wait_for(read_answer(reader), 30), reader, writer


def listening_socket() -> socket.socket:
    """Bound and listening before the server starts: clients can connect at once (the
    kernel queues them until uvicorn accepts)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock
