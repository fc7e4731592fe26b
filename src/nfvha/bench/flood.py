"""One flood of the controller's API for ``nfvha bench abuse``, in a process of its own
so that flooding never competes with the benchmark's own event loop:

    python -m nfvha.bench.flood MODE --api http://127.0.0.1:PORT --duration S
        --stats FILE [--token-file tokens.json] [--workers N] [--alarm ID]
        [--sizes 10000000,200000] [--trickle-ms 500]

MODE:

- ``bodies``: ``--workers`` loops, each sending one large body after another on a new
  connection, rotating over every route of ``floodbodies.ROUTES``, every size and
  every shape (well-formed, nested, huge number);
- ``connections``: ``--workers`` keep-alive connections, each GETting cheap reads
  (``/v1/status``, a page of ``/v1/events``) as fast as they are answered;
- ``slow``: ``--workers`` connections trickling a request one byte every
  ``--trickle-ms`` (half of them the headers, half a declared body), held until the
  server closes them, then opened again.

It ends after ``--duration`` or on SIGTERM and writes what it did to ``--stats``
(JSON): per kind of request, how many were sent and answered, the answers by status
(or ``timeout``, ``reset``, ``refused``, ``unanswered at the end``), latency
p50/p99/max; for the slow clients how long the server held them (``held``: still when
the flood ended). Standard library and ``nfvha.util`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nfvha.bench.floodbodies import ROUTES, SHAPES, Body, body
from nfvha.util.files import atomic_write_json

MODES = ("bodies", "connections", "slow")
CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 60.0  # the landed code took 52 s over one 10 MB body
RESPONSE_HEAD_LIMIT = 64 * 1024
RETRY_PAUSE_S = 0.05  # after a failed connect: no hot loop against a refusing server
RESERVOIR = 10_000  # latency samples kept per kind
SLOW_BODY_BYTES = 4_000  # a slow body's declared length: under the intake's limit
CHEAP_GETS = ("/v1/status", "/v1/events?limit=50")


@dataclass
class Tally:
    """What one kind of request got."""

    sent: int = 0
    status: Counter[str] = field(default_factory=Counter)
    max_ms: float = 0.0
    samples: list[float] = field(default_factory=list)
    _seen: int = 0

    def record(self, outcome: str, ms: float) -> None:
        self.status[outcome] += 1
        self.max_ms = max(self.max_ms, ms)
        # Reservoir sampling: a fair sample of every latency in bounded memory.
        self._seen += 1
        if len(self.samples) < RESERVOIR:
            self.samples.append(ms)
        elif (k := random.randrange(self._seen)) < RESERVOIR:
            self.samples[k] = ms

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.samples)

        def pct(p: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)

        answered = sum(n for s, n in self.status.items() if s.isdigit())
        return {"sent": self.sent, "answered": answered, "status": dict(self.status),
                "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": round(self.max_ms, 1)}


class Flood:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.api)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.args = args
        self.token = _read_token(args.token_file)
        self.tallies: dict[str, Tally] = {}
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    def tally(self, kind: str) -> Tally:
        return self.tallies.setdefault(kind, Tally())

    def head(self, method: str, path: str, *, token: bool, length: int | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if token and self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        if length is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {length}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=RESPONSE_HEAD_LIMIT),
            CONNECT_TIMEOUT_S)

    # -- bodies ----------------------------------------------------------------------------

    async def bodies_worker(self, first: int) -> None:
        combos = [(r, size, shape) for r in ROUTES for size in self.args.sizes
                  for shape in SHAPES]
        i = first
        while not self.stop.is_set():
            route, size, shape = combos[i % len(combos)]
            i += self.args.workers
            b = body(route, shape, size)
            kind = f"{route.name} {_size_label(size)} {shape}"
            path = route.target(self.args.alarm)
            await self.one_body(kind, route.method, path, route.needs_token, b)

    async def one_body(self, kind: str, method: str, path: str, token: bool, b: Body) -> None:
        tally = self.tally(kind)
        t0 = time.monotonic()
        try:
            reader, writer = await self.connect()
        except (OSError, TimeoutError):
            tally.record("refused", (time.monotonic() - t0) * 1e3)
            await asyncio.sleep(RETRY_PAUSE_S)
            return
        tally.sent += 1
        try:
            writer.write(self.head(method, path, token=token, length=b.length))
            sender = asyncio.create_task(_send_body(writer, b))
            try:
                # The answer may come before the body is sent (a 413 on the declared
                # length): then the rest is never sent.
                status, _ = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
                outcome = str(status)
            except TimeoutError:
                outcome = "timeout"
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError):
                outcome = "reset"
            except asyncio.CancelledError:  # the flood ended with this one unanswered
                tally.record("unanswered at the end", (time.monotonic() - t0) * 1e3)
                raise
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await sender
            tally.record(outcome, (time.monotonic() - t0) * 1e3)
        finally:
            writer.close()

    # -- many connections --------------------------------------------------------------------

    async def connection_worker(self, first: int) -> None:
        i = first
        while not self.stop.is_set():
            try:
                reader, writer = await self.connect()
            except (OSError, TimeoutError):
                self.tally("connect").record("refused", 0.0)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            try:
                while not self.stop.is_set():
                    path = CHEAP_GETS[i % len(CHEAP_GETS)]
                    i += 1
                    if not await self.one_get(reader, writer, path):
                        break
            finally:
                writer.close()

    async def one_get(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      path: str) -> bool:
        """One GET on a kept-alive connection; False when the connection is done."""
        tally = self.tally(f"GET {path.split('?')[0]}")
        tally.sent += 1
        t0 = time.monotonic()
        try:
            writer.write(self.head("GET", path, token=True))
            status, keep = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
        except TimeoutError:
            tally.record("timeout", (time.monotonic() - t0) * 1e3)
            return False
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.record("reset", (time.monotonic() - t0) * 1e3)
            return False
        except asyncio.CancelledError:
            tally.record("unanswered at the end", (time.monotonic() - t0) * 1e3)
            raise
        tally.record(str(status), (time.monotonic() - t0) * 1e3)
        return keep

    # -- slow clients --------------------------------------------------------------------------

    async def slow_worker(self, first: int) -> None:
        headers_only = first % 2 == 0
        kind = "slow headers" if headers_only else "slow body"
        while not self.stop.is_set():
            tally = self.tally(kind)
            try:
                reader, writer = await self.connect()
            except (OSError, TimeoutError):
                tally.record("refused", 0.0)
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            tally.sent += 1
            t0 = time.monotonic()
            try:
                outcome = await self.trickle(reader, writer, headers_only)
            except asyncio.CancelledError:  # the flood ended while it was held
                tally.record("held", (time.monotonic() - t0) * 1e3)
                raise
            finally:
                writer.close()
            tally.record(outcome, (time.monotonic() - t0) * 1e3)

    async def trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers_only: bool) -> str:
        """Send a request a byte at a time until the server closes the connection (or
        answers): what it did then; ``held`` if the flood ended first."""
        if headers_only:
            # An endless header, never the blank line that ends the request head.
            writer.write(f"GET /v1/status HTTP/1.1\r\nHost: {self.host}\r\nX-Flood: ".encode())
        else:
            writer.write(self.head("PUT", "/doctor/events", token=False,
                                   length=SLOW_BODY_BYTES) + b"[")
        answer = asyncio.create_task(_read_response(reader))
        interval_s = self.args.trickle_ms / 1e3
        try:
            while not self.stop.is_set():
                done, _ = await asyncio.wait({answer}, timeout=interval_s)
                if done:
                    try:
                        status, _ = answer.result()
                    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                            ValueError):
                        return "closed"
                    return str(status)
                writer.write(b"a" if headers_only else b" ")
                try:
                    await writer.drain()
                except OSError:
                    return "closed"
            return "held"
        finally:
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        worker = {"bodies": self.bodies_worker, "connections": self.connection_worker,
                  "slow": self.slow_worker}[self.args.mode]
        tasks = [asyncio.create_task(worker(i)) for i in range(self.args.workers)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), self.args.duration)
        self.stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self.started
        requests = {k: t.summary() for k, t in sorted(self.tallies.items())}
        sent = sum(r["sent"] for r in requests.values())
        answered = sum(r["answered"] for r in requests.values())
        return {"mode": self.args.mode, "workers": self.args.workers,
                "elapsed_s": round(elapsed, 2), "sent": sent, "answered": answered,
                "sent_per_s": round(sent / elapsed, 1) if elapsed > 0 else None,
                "answered_per_s": round(answered / elapsed, 1) if elapsed > 0 else None,
                "requests": requests}


async def _send_body(writer: asyncio.StreamWriter, b: Body) -> None:
    for chunk in b.chunks():
        writer.write(chunk)
        await writer.drain()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status and whether the connection may be used again; the body is read and
    dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    keep = headers.get("connection", "").lower() != "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:
        await reader.read()  # until the server closes
        keep = False
    return status, keep


def _size_label(size: int) -> str:
    return f"{size / 1e6:g}MB" if size >= 1_000_000 else f"{size / 1e3:g}kB"


def _read_token(path: Path | None) -> str | None:
    if path is None:
        return None
    tokens = json.loads(path.read_text())
    token = tokens.get("admin") if isinstance(tokens, dict) else None
    return str(token) if token else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nfvha.bench.flood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=MODES)
    p.add_argument("--api", required=True, help="the controller's API, http://IP:PORT")
    p.add_argument("--duration", type=float, required=True, help="seconds")
    p.add_argument("--stats", type=Path, required=True, help="where the JSON stats go")
    p.add_argument("--token-file", type=Path, help="the run's tokens.json (admin token)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--alarm", default="no-such-alarm", help="alarm id for the PATCH")
    p.add_argument("--sizes", default="10000000,200000",
                   help="body sizes in bytes, comma-separated")
    p.add_argument("--trickle-ms", type=float, default=500.0)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    if args.workers < 1 or not args.sizes or min(args.sizes) < 1:
        p.error("--workers and every size must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flood = Flood(args)
    try:
        asyncio.run(flood.run())
    finally:
        atomic_write_json(args.stats, flood.stats())
    return 0


if __name__ == "__main__":
    sys.exit(main())
