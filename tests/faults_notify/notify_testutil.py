"""Test helpers: a minimal HTTP/1.1 notification receiver on 127.0.0.1, alarms.

The receiver speaks just enough HTTP/1.1 for httpx (Content-Length bodies,
keep-alive) and records every request it gets; how it answers is decided by a
``respond`` coroutine per test (status code, delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nfvha.faults.model import (
    Alarm,
    AlarmLinks,
    FaultyResourceInfo,
    FaultyResourceType,
    Link,
    ResourceHandle,
)
from nfvha.faults.notifier import NOTIFICATION_ID_HEADER, Notifier
from nfvha.model.events import EventType, Severity

LOOPBACK = "127.0.0.1"
API_ROOT = "http://127.0.0.1:8080/vnffm/v1"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    mono: float = field(default_factory=time.monotonic)
    status: int | None = None  # what the receiver answered (None: no answer)

    @property
    def notification_id(self) -> str:
        return self.headers[NOTIFICATION_ID_HEADER.lower()]


Respond = Callable[[Request, int], Awaitable[int]]
NotifierFactory = Callable[..., Awaitable[Notifier]]


async def accept(_req: Request, _n: int) -> int:
    return 204


class Receiver:
    """An HTTP server on a free loopback port that records notifications."""

    def __init__(self, respond: Respond = accept, *, style: str = "plain",
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``style``: how answers look - "plain" (no body, keep-alive),
        "chunked" (a chunked body), "close" (``Connection: close``, then closed),
        "silent-close" (closed after the answer without saying so)."""
        self.respond = respond
        self.style = style
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[Request] = []
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{LOOPBACK}:{self.port}/notify"

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(
            self._connection, LOOPBACK, 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._connections):
            t.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    def accepted_ids(self) -> list[str]:
        """Ids of acknowledged notifications, first acknowledgement order, deduplicated."""
        seen: dict[str, None] = {}
        for r in self.accepted():
            seen.setdefault(r.notification_id, None)
        return list(seen)

    async def wait_until(self, cond: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not cond():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_accepted(self, ids: list[str], within: float) -> None:
        want = set(ids)
        await self.wait_until(lambda: want <= set(self.accepted_ids()), within)

    def _notify(self) -> None:
        self._changed.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections += 1
        try:
            while True:
                req = await _read_request(reader)
                if req is None:
                    return
                n = len(self.requests)
                self.requests.append(req)
                self._notify()
                status = await self.respond(req, n)
                req.status = status
                writer.write(_response(status, self.style))
                await writer.drain()
                self._notify()
                if self.style in ("close", "silent-close"):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            # close(): end quietly (asyncio's stream server would log a
            # cancelled handler as an error).
            return
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _response(status: int, style: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\n"
    if style == "chunked":
        return (head + "Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
                "3\r\nok\n\r\n0\r\n\r\n").encode("ascii")
    if style == "close":
        return (head + "Connection: close\r\nContent-Length: 0\r\n\r\n").encode("ascii")
    return (head + "Content-Length: 0\r\n\r\n").encode("ascii")


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


async def poll_until(cond: Callable[[], bool], within: float = 5.0) -> None:
    """For state that changes without a receiver event (e.g. acknowledgements
    being recorded, errors noted): check every 5 ms, for ``within`` seconds."""
    async with asyncio.timeout(within):
        while not cond():  # noqa: ASYNC110 - nothing to wait on: the state has no event
            await asyncio.sleep(0.005)


def refused_url() -> str:
    """A loopback URL nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    return f"http://{LOOPBACK}:{port}/notify"


def make_alarm(
    alarm_id: str = "a1",
    *,
    managed_object: str = "vnf-gw",
    resource_id: str | None = "vm/gw-vm1",
    resource_type: FaultyResourceType = FaultyResourceType.COMPUTE,
    severity: Severity = Severity.CRITICAL,
    event_type: EventType = EventType.EQUIPMENT_ALARM,
    probable_cause: str = "vm-failure",
    fault_details: list[str] | None = None,
    cleared: bool = False,
) -> Alarm:
    t = datetime(2027, 1, 15, 12, 0, 0, tzinfo=UTC)
    root = (
        FaultyResourceInfo(
            faultyResource=ResourceHandle(resourceId=resource_id),
            faultyResourceType=resource_type,
        )
        if resource_id is not None
        else None
    )
    return Alarm(
        id=alarm_id,
        managedObjectId=managed_object,
        rootCauseFaultyResource=root,
        alarmRaisedTime=t,
        alarmClearedTime=t if cleared else None,
        perceivedSeverity=severity,
        eventTime=t,
        eventType=event_type,
        probableCause=probable_cause,
        isRootCause=True,
        faultDetails=fault_details,
        links=AlarmLinks(self_=Link(href=f"{API_ROOT}/alarms/{alarm_id}")),
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
