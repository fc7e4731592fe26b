"""The stand-in for a host's vswitch: a supervised host process that forwards UDP.

``python -m nfvha.samples.vswitch --name NAME --port PORT [--bind ADDR]``

Every datagram received on PORT is sent back to its sender prefixed with
``FWD <name> ``, so a probe can tell the vswitch is forwarding (and which one is).
The host agent supervises it like any host process: it watches it, restarts it per
policy and raises alarms when it dies.  Exits 0 on SIGTERM or SIGINT.

Standard library only: this runs as a separate process on a host.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import cast

MAX_DATAGRAM = 65507


class _UdpForwarder(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self._prefix = f"FWD {name} ".encode()
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Python 3.11's selector transport does not subclass DatagramTransport: cast.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self._transport is not None:
            self._transport.sendto((self._prefix + data)[:MAX_DATAGRAM], addr)


async def serve(name: str, bind: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _UdpForwarder(name), local_addr=(bind, port)
    )
    print(f"vswitch {name} forwarding udp on {bind}:{port}", flush=True)
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        for sig in signals:  # a repeated SIGTERM must not turn a clean exit into a kill
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    finally:
        transport.close()
    print(f"vswitch {name} stopping", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.samples.vswitch", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.name, args.bind, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
