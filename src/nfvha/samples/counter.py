"""A stateful sample VNFC: per-session counters served over UDP and TCP.

``python -m nfvha.samples.counter --name NAME --port PORT [--bind ADDR]``

The same line protocol on UDP and TCP, both on PORT:

- ``PING``          -> ``PONG <name>``
- ``INC <session>`` -> ``OK <session> <value> <name>`` (the session's counter, after +1)
- ``GET <session>`` -> ``VAL <session> <value> <name>`` (0 for an unknown session)
- anything else     -> ``ERR <reason>``

UDP: one request per datagram, one reply datagram without a line terminator.
TCP: one request per line, one ``\\n``-terminated reply line each; the connection stays
open.  Counters live in memory only, so a restart loses them: that is what a probe
measuring state loss looks for.  Exits 0 on SIGTERM or SIGINT.

Standard library only: this runs as a separate process inside a VM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import cast

MAX_LINE = 4096


class CounterService:
    """The protocol logic, independent of any transport."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters: dict[str, int] = {}

    def handle(self, request: str) -> str:
        words = request.split()
        if not words:
            return "ERR empty request"
        command, args = words[0].upper(), words[1:]
        if command == "PING" and not args:
            return f"PONG {self.name}"
        if command in ("INC", "GET") and len(args) == 1:
            session = args[0]
            if command == "INC":
                self.counters[session] = self.counters.get(session, 0) + 1
                return f"OK {session} {self.counters[session]} {self.name}"
            return f"VAL {session} {self.counters.get(session, 0)} {self.name}"
        if command in ("PING", "INC", "GET"):
            return f"ERR usage: PING | INC <session> | GET <session> (got {request.strip()!r})"
        return f"ERR unknown command {words[0]!r}"


class _UdpCounter(asyncio.DatagramProtocol):
    def __init__(self, service: CounterService) -> None:
        self._service = service
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: cast.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is None:
            return
        reply = self._service.handle(data[:MAX_LINE].decode(errors="replace"))
        self._transport.sendto(reply.encode(), addr)


async def _serve_tcp_client(
    service: CounterService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the stream limit
                writer.write(b"ERR line too long\n")
                break
            if not line:
                break
            writer.write((service.handle(line.decode(errors="replace")) + "\n").encode())
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_for_termination() -> None:
    """Return when SIGTERM or SIGINT arrives; ignore any repeat after that."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for sig in signals:
        # A second SIGTERM while shutting down (the guest's, after a process-group
        # one) must not turn a clean exit into a kill.
        loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)


async def serve(name: str, bind: str, port: int) -> None:
    service = CounterService(name)
    loop = asyncio.get_running_loop()
    udp_transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpCounter(service), local_addr=(bind, port)
    )
    tcp_server = await asyncio.start_server(
        lambda r, w: _serve_tcp_client(service, r, w), bind, port, limit=MAX_LINE
    )
    print(f"counter {name} serving udp+tcp on {bind}:{port}", flush=True)
    try:
        await wait_for_termination()
    finally:
        udp_transport.close()
        tcp_server.close()
    print(f"counter {name} stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.samples.counter", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.name, args.bind, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
