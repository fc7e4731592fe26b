"""A slow fake controller API behind a real uvicorn server, for the front's tests: it
holds every request until the test lets it go, and counts how many it has at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from api_limits_util import listening_socket

from nfvha.controller.front import FrontApp
from nfvha.controller.httpserver import server_config
from nfvha.model.api import ApiLimits
from nfvha.util.bodylimit import Message, Receive, Scope, Send


@dataclass
class Seen:
    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class SlowUpstream:
    """Every request is counted in flight, then held until ``release`` lets it go (one
    ``release`` per request, in any order). The answer: 200 with what was seen. A GET
    of ``/v1/alarms/stream`` answers a first event at once and the rest on release."""

    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    async def until(self, what: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(what)

    async def _count(self, delta: int) -> None:
        async with self._changed:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.notify_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.seen.append(Seen(scope["method"], scope["path"], scope["query_string"],
                              list(scope["headers"]), body))
        await self._count(+1)
        try:
            if scope["path"] == "/v1/alarms/stream":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream")]})
                await send({"type": "http.response.body", "body": b"data: first\n\n",
                            "more_body": True})
                await self._gate.acquire()
                await send({"type": "http.response.body", "body": b"data: last\n\n",
                            "more_body": False})
                return
            await self._gate.acquire()
            data = json.dumps({"path": scope["path"], "body": body.decode()}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(data)).encode())]})
            await send({"type": "http.response.body", "body": data, "more_body": False})
        finally:
            await self._count(-1)


async def until(what: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Until ``what()`` holds (it changes in other tasks of this loop, as they run)."""
    deadline = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > deadline:
            raise TimeoutError("not within the time")
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def serving(app: Any, limits: ApiLimits | None = None) -> AsyncIterator[str]:
    """``app`` behind a real uvicorn server on loopback, configured as the controller's
    API is; yields its URL."""
    sock = listening_socket()
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0, limits or ApiLimits(),
                                          timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@contextlib.asynccontextmanager
async def front_on(url: str, limits: ApiLimits, client: str = "203.0.113.9"
                   ) -> AsyncIterator[tuple[FrontApp, httpx.AsyncClient]]:
    """A front passing on to ``url``, and a client of it from address ``client``."""
    front = FrontApp(lambda: url, limits=limits, upstream="the controller")
    transport = httpx.ASGITransport(app=front, client=(client, 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://front",
                                     timeout=30) as c:
            yield front, c
    finally:
        await front.aclose()


class Recorded:
    """An ASGI ``send`` that keeps what it is sent; ``block_body``: it never returns
    from a body message until ``unblock`` (a client that does not read its answer)."""

    def __init__(self, *, block_body: bool = False) -> None:
        self.messages: list[Message] = []
        self.started = asyncio.Event()
        self.got_body = asyncio.Event()
        self._blocked = asyncio.Event()
        if not block_body:
            self._blocked.set()

    def unblock(self) -> None:
        self._blocked.set()

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)
        if msg["type"] == "http.response.start":
            self.started.set()
        else:
            self.got_body.set()
            await self._blocked.wait()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages
                        if m["type"] == "http.response.body")


def get_scope(path: str, query: bytes = b"", client: str = "203.0.113.9") -> Scope:
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
            "query_string": query, "headers": [(b"host", b"front")],
            "client": (client, 40000), "scheme": "http", "http_version": "1.1"}


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
