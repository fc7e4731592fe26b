"""The flood of ``nfvha bench abuse``: its bodies, and the flood process against a small
HTTP server on loopback that refuses bodies over a limit and drops slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.bench.floodbodies import NO_SUCH_HOST, ROUTES, SHAPES, Body, body

LIMIT = 1_000_000
HEAD_TIMEOUT_S = 1.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [200_000, 2_000_000])
def test_bodies_are_json_of_about_their_size(shape: str, size: int) -> None:
    for route in ROUTES:
        b = body(route, shape, size)
        raw = b.materialize()
        assert len(raw) == b.length
        assert size - 200 <= b.length <= size + 200, (route.name, shape, b.length)
        if shape == "json":
            json.loads(raw)  # well-formed
        elif shape == "nested":
            assert raw.startswith(b"[[[[") and raw.endswith(b"]]]]")
            assert raw.count(b"[") == raw.count(b"]")
        else:
            assert raw.startswith(b'{"n":1000') and raw.endswith(b"0}")
            assert raw[5:-1].isdigit()


def test_well_formed_bodies_ask_for_nothing_that_exists() -> None:
    """A flood must not fence a host or create a subscription or token: every
    well-formed body names what is not there or a value no route takes."""
    doctor = json.loads(body(ROUTES[0], "json", 10_000).materialize())
    assert {e["details"]["hostname"] for e in doctor} == {NO_SUCH_HOST}
    masakari = json.loads(body(ROUTES[1], "json", 10_000).materialize())
    assert masakari["notification"]["hostname"] == NO_SUCH_HOST
    subscription = json.loads(body(ROUTES[2], "json", 10_000).materialize())
    assert set(subscription["filter"]["notificationTypes"]) == {"FloodNotification"}
    assert json.loads(body(ROUTES[3], "json", 1_000).materialize())["ackState"] == "FLOODED"
    assert json.loads(body(ROUTES[4], "json", 1_000).materialize())["role"] == "flood"


def test_a_body_is_sent_in_bounded_chunks() -> None:
    b = Body(((b"[", 1), (b"x", 1_000_000), (b"]", 1)))
    chunks = list(b.chunks(4096))
    assert max(len(c) for c in chunks) <= 4096
    assert sum(len(c) for c in chunks) == b.length == 1_000_002


class Server:
    """HTTP/1.1 with keep-alive: a body over LIMIT (by its Content-Length) is 413 and the
    connection closed; a request head not complete within HEAD_TIMEOUT_S, or a body not
    complete within it, closes the connection."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length > LIMIT:
                    writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                    await writer.drain()
                    return
                await asyncio.wait_for(reader.readexactly(length), HEAD_TIMEOUT_S)
                status = b"200 OK" if head.startswith(b"GET") else b"400 Bad Request"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError,
                asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    listener = await asyncio.start_server(srv.serve, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        listener.close()


async def flood(tmp_path: Path, server: Server, mode: str, *extra: str) -> dict[str, Any]:
    stats = tmp_path / f"{mode}.json"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"admin": "secret"}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nfvha.bench.flood", mode, "--api",
        f"http://127.0.0.1:{server.port}", "--duration", "2", "--stats", str(stats),
        "--token-file", str(tokens), *extra)
    try:
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    result: dict[str, Any] = json.loads(stats.read_text())
    return result


async def test_connections_keep_alive_and_get(tmp_path: Path, server: Server) -> None:
    stats = await flood(tmp_path, server, "connections", "--workers", "10")
    assert stats["mode"] == "connections" and stats["answered"] > 100
    gets = stats["requests"]["GET /v1/status"]
    assert gets["status"].get("200", 0) > 0 and gets["p99_ms"] is not None
    assert server.connections == 10  # kept alive: one connection per worker


async def test_bodies_over_the_limit_are_refused_at_once(tmp_path: Path,
                                                         server: Server) -> None:
    stats = await flood(tmp_path, server, "bodies", "--workers", "2",
                        "--sizes", "10000000,200000")
    kinds = stats["requests"]
    big = [k for k in kinds if " 10MB " in k]
    small = [k for k in kinds if " 200kB " in k]
    assert big and small
    at_end = "unanswered at the end"  # in flight when the flood ended
    assert all(set(kinds[k]["status"]) <= {"413", "reset", at_end} for k in big), kinds
    assert any(kinds[k]["status"].get("413") for k in big)
    assert all(set(kinds[k]["status"]) <= {"400", at_end} for k in small), kinds
    assert any(kinds[k]["status"].get("400") for k in small), kinds


async def test_slow_clients_are_held_until_the_server_drops_them(tmp_path: Path,
                                                                 server: Server) -> None:
    stats = await flood(tmp_path, server, "slow", "--workers", "4", "--trickle-ms", "100")
    kinds = stats["requests"]
    assert set(kinds) == {"slow headers", "slow body"}
    for k in kinds.values():
        # Dropped after HEAD_TIMEOUT_S (1 s) and opened again within the 2 s.
        assert k["status"].get("closed", 0) >= 2, kinds
        assert k["max_ms"] >= HEAD_TIMEOUT_S * 1000 * 0.9
