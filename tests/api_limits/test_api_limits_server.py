"""The controller's API behind a real uvicorn server, configured as the controller
configures it (``ApiLimits.server_options``): oversize bodies are refused without
being allocated (memory stays flat under a flood of them), and the header size,
idle keep-alive and concurrent connections are bounded (ADR 0016)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import uvicorn
from api_limits_util import (
    AUTH,
    Answer,
    Controller,
    controller_app,
    get,
    listening_socket,
    read_answer,
    send_streaming,
)

from nfvha.model.api import ApiLimits

MIB = 1024 * 1024


@dataclass
class Served:
    port: int
    controller: Controller
    limits: ApiLimits


@contextlib.asynccontextmanager
async def served(tmp: Path, limits: ApiLimits) -> AsyncIterator[Served]:
    async with controller_app(tmp, limits) as controller:
        sock = listening_socket()
        server = uvicorn.Server(uvicorn.Config(
            controller.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1,
            **limits.server_options()))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield Served(sock.getsockname()[1], controller, limits)
        finally:
            server.should_exit = True
            await task
            sock.close()


class RssPeak:
    """The process's resident memory, sampled while a flood runs: its peak."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.005)

    def __enter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        self.peak = max(self.peak, self.proc.memory_info().rss)


async def test_a_flood_of_oversize_requests_is_refused_without_memory(tmp_path: Path) -> None:
    """30 requests of 10 MB each at once, half with Content-Length, half chunked, to the
    intake and the other routes: every one 413; Python allocated no more than a few MB
    at the peak (300 MB if the bodies were read), the process's RSS did not grow."""
    size = 10 * MIB
    routes = [("PUT", "/doctor/events"), ("POST", "/v1/notifications"),
              ("POST", "/vnffm/v1/subscriptions"), ("POST", "/v1/tokens"),
              ("PATCH", "/vnffm/v1/alarms/x")]
    async with served(tmp_path, ApiLimits()) as s:
        # Warm up: the first requests allocate what every later one reuses.
        for chunked in (False, True):
            await send_streaming(s.port, "PUT", "/doctor/events", size, chunked=chunked)
        tracemalloc.start()
        try:
            with RssPeak() as rss:
                answers: list[Answer] = await asyncio.gather(*(
                    send_streaming(s.port, *routes[i % len(routes)], size, chunked=i % 2 == 1,
                                   headers=AUTH)
                    for i in range(30)))
            _, traced_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [a.status for a in answers] == [413] * 30
        for a in answers:
            assert a.headers["connection"] == "close"
            assert "at most" in a.body.decode()
        # Each connection holds at most its limit, uvicorn's 64 KiB read-ahead and one
        # socket read; the client side its 64 KiB pieces.
        assert traced_peak < 40 * MIB, f"Python allocated {traced_peak / MIB:.1f} MB"
        assert rss.peak - rss.start < 60 * MIB, f"RSS grew {(rss.peak - rss.start) / MIB:.0f} MB"
        # And it still answers.
        answer, _, writer = await get(s.port, "/v1/health")
        writer.close()
        assert answer.status == 200


async def test_headers_larger_than_the_limit_are_refused(tmp_path: Path) -> None:
    async with served(tmp_path, ApiLimits(max_header_bytes=8 * 1024)) as s:
        answer, _, writer = await get(s.port, "/v1/health",
                                      extra_headers=f"X-Pad: {'p' * 6000}\r\n")
        writer.close()
        assert answer.status == 200
        # Headers still arriving beyond the limit: the server stops buffering them.
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(f"GET /v1/health HTTP/1.1\r\nHost: nfvha\r\nX-Pad: {'p' * 10_000}".encode())
        answer = await asyncio.wait_for(read_answer(reader), 30)
        writer.close()
        assert answer.status == 400


async def test_idle_keep_alive_connection_is_closed_after_the_timeout(tmp_path: Path) -> None:
    async with served(tmp_path, ApiLimits(keep_alive_timeout_s=1)) as s:
        answer, reader, writer = await get(s.port, "/v1/health")
        assert answer.status == 200
        idle_since = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # closed by the server
        assert time.monotonic() - idle_since >= 0.9
        writer.close()


async def test_connections_beyond_the_concurrency_limit_are_503(tmp_path: Path) -> None:
    limits = ApiLimits(max_concurrency=16)
    async with served(tmp_path, limits) as s:
        held = [await asyncio.open_connection("127.0.0.1", s.port)
                for _ in range(limits.max_concurrency)]
        answer, _, writer = await get(s.port, "/v1/health")
        writer.close()
        assert answer.status == 503
        for _, w in held:
            w.close()
            await w.wait_closed()
        # The server notices the closed connections as it reads them: ask until it has.
        deadline = time.monotonic() + 30
        while True:
            answer, _, writer = await get(s.port, "/v1/health")
            writer.close()
            if answer.status == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert answer.status == 200
