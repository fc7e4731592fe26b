"""The controller's API behind a real uvicorn server, configured as the controller
configures it (``controller/httpserver.py`` ``server_config``): oversize bodies are
refused without being allocated (memory stays flat under a flood of them), and the
header size, idle keep-alive, slow clients and concurrent connections are bounded
(ADR 0016, ADR 0014 "The API front")."""

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

from nfvha.controller.httpserver import server_config
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
        server = uvicorn.Server(server_config(controller.app, "127.0.0.1", 0, limits,
                                              timeout_graceful_shutdown=1))
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


async def test_connections_beyond_the_concurrency_limit_are_503_after_retry_after(
        tmp_path: Path) -> None:
    limits = ApiLimits(max_concurrency=16, forward_waiting=8)
    async with served(tmp_path, limits) as s:
        held = [await asyncio.open_connection("127.0.0.1", s.port)
                for _ in range(limits.max_concurrency - 1)]
        # The last connection within the limit is served as ever...
        answer, inside_reader, inside = await get(s.port, "/v1/health")
        assert answer.status == 200
        # ...the next one is refused with Retry-After, after that long (a client that
        # asks again at once asks once a second), and closed.
        t0 = time.monotonic()
        answer, reader, writer = await get(s.port, "/v1/health")
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert time.monotonic() - t0 >= 0.9
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # The connections within the limit are not refused for it (uvicorn's own limit
        # answers every request 503 while the connections are at the limit).
        inside.write(b"GET /v1/health HTTP/1.1\r\nHost: nfvha\r\n\r\n")
        assert (await asyncio.wait_for(read_answer(inside_reader), 30)).status == 200
        inside.close()
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


async def trickle(writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                  byte: bytes, every_s: float, limit_s: float) -> tuple[bytes, float]:
    """Send ``byte`` every ``every_s`` until the server answers or closes (or ``limit_s``
    passes): what it sent, and after how many seconds."""
    t0 = time.monotonic()
    got = asyncio.create_task(reader.read())
    while time.monotonic() - t0 < limit_s:
        done, _ = await asyncio.wait({got}, timeout=every_s)
        if done:
            return got.result(), time.monotonic() - t0
        with contextlib.suppress(OSError):
            writer.write(byte)
    got.cancel()
    return b"", time.monotonic() - t0


async def test_a_request_head_trickled_byte_by_byte_is_cut_off_at_the_header_timeout(
        tmp_path: Path) -> None:
    async with served(tmp_path, ApiLimits(header_timeout_s=1.0)) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: nfvha\r\nX-Slow: ")
        answer, took = await trickle(writer, reader, b"a", 0.1, 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.9 <= took < 20
        # A connection that never sends anything is closed as well.
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        t0 = time.monotonic()
        assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 >= 0.9
        writer.close()
        # On a kept-alive connection the next request's head is timed from its first
        # byte, not from the previous answer.
        answer1, reader, writer = await get(s.port, "/v1/health")
        assert answer1.status == 200
        await asyncio.sleep(0.5)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: nfvha\r\nX-Slow: ")
        answer, took = await trickle(writer, reader, b"a", 0.1, 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and took >= 0.9


async def test_a_body_trickled_byte_by_byte_is_cut_off_at_the_body_timeout(
        tmp_path: Path) -> None:
    async with served(tmp_path, ApiLimits(body_timeout_s=1.0)) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(b"PUT /doctor/events HTTP/1.1\r\nHost: nfvha\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n[")
        answer, took = await trickle(writer, reader, b" ", 0.1, 30)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert 0.9 <= took < 20
        # The server goes on answering.
        answer2, _, writer = await get(s.port, "/v1/health")
        writer.close()
        assert answer2.status == 200


async def test_refused_connections_held_are_bounded_the_rest_are_reset(tmp_path: Path) -> None:
    limits = ApiLimits(max_concurrency=16, forward_waiting=8, retry_after_s=30)
    async with served(tmp_path, limits) as s:
        conns = [await asyncio.open_connection("127.0.0.1", s.port)
                 for _ in range(3 * limits.max_concurrency)]
        # 16 served, 16 refused and held (their answer due in 30 s), the rest reset.
        reset = 0
        for reader, _ in conns:
            with contextlib.suppress(TimeoutError):
                try:
                    if await asyncio.wait_for(reader.read(1), 0.05) == b"":
                        reset += 1
                except ConnectionResetError:
                    reset += 1
        assert reset == limits.max_concurrency, reset
        for _, writer in conns:
            writer.close()
