"""Webhook receivers for benchmarks, in their own process so that receiving does not
compete with the controller's event loop: ``python -m nfvha.bench.receiver N``
listens on N loopback ports, prints ``PORTS p1 p2 ...`` once, then one line per
notification: ``<CLOCK_MONOTONIC ns> <port> <type> <alarm id> <resource id>``.
Standard library only; answers 204; exits when stdin closes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from typing import Any


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 port: int) -> None:
    out = sys.stdout
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            now = time.monotonic_ns()
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            note = json.loads(body)
            alarm = note.get("alarm", {})
            alarm_id = alarm.get("id") or note.get("alarmId") or "-"
            resource = (alarm.get("rootCauseFaultyResource") or {}).get(
                "faultyResource", {}).get("resourceId", "-")
            out.write(f"{now} {port} {note.get('notificationType')} {alarm_id} {resource}\n")
            out.flush()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        writer.close()
    except asyncio.CancelledError:
        writer.close()  # the receiver exits: quietly (asyncio logs a cancelled handler)


async def main_async(n: int) -> None:
    servers = []
    for _ in range(n):
        holder: list[int] = []

        def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                    h: list[int] = holder) -> Coroutine[Any, Any, None]:
            return _serve(r, w, h[0])

        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        holder.append(srv.sockets[0].getsockname()[1])
        servers.append(srv)
    print("PORTS " + " ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes stdin
    # Stop accepting before the loop ends: a connection accepted while asyncio.run
    # shuts down leaves a handler task that never ran ("Task was destroyed").
    for srv in servers:
        srv.close()
    await asyncio.gather(*(srv.wait_closed() for srv in servers))


def main() -> int:
    asyncio.run(main_async(int(sys.argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
