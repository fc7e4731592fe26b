"""Helper process for test_netlink.py: a LinkMonitor inside a named network namespace.

Usage: python netlink_probe.py NETNS [--iface NAME ...] [--rcvbuf BYTES]

Prints JSON lines on stdout:
  {"ready": {ifname: state}}                    after start() (the initial dump)
  {"change": {"old": state|null, "new": state, "mono_ns": n}}
  {"state": {ifname: state}, "overruns": n, "dumps": n}   on the "state" command
Reads commands on stdin, one per line:
  state    print the current snapshot
  stall    block the event loop until a "resume" line, so that the kernel has to
           drop notifications on a small receive buffer (ENOBUFS)
  quit     close the monitor and exit
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import os
import sys
from typing import Any

from nfvha.agent.netlink import LinkMonitor, LinkState

CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def as_json(state: LinkState | None) -> dict[str, Any] | None:
    return None if state is None else dataclasses.asdict(state)


def snapshot_json(monitor: LinkMonitor) -> dict[str, Any]:
    return {name: as_json(s) for name, s in monitor.snapshot().items()}


def read_line_blocking(buf: bytearray) -> str:
    while b"\n" not in buf:
        chunk = os.read(0, 4096)
        if not chunk:
            raise EOFError
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode().strip()


async def run(args: argparse.Namespace) -> None:
    monitor = LinkMonitor(set(args.iface) if args.iface else None, rcvbuf=args.rcvbuf)
    await monitor.start()
    out({"ready": snapshot_json(monitor)})
    loop = asyncio.get_running_loop()
    quit_event = asyncio.Event()
    stdin_buf = bytearray()

    def handle(cmd: str) -> None:
        if cmd == "state":
            out(
                {
                    "state": snapshot_json(monitor),
                    "overruns": monitor.overruns,
                    "dumps": monitor.dumps,
                }
            )
        elif cmd == "stall":
            out({"stalled": True})
            # Deliberately block the loop: the netlink socket is not read meanwhile.
            while read_line_blocking(stdin_buf) != "resume":
                pass
            out({"resumed": True})
        elif cmd == "quit":
            quit_event.set()

    def on_stdin() -> None:
        chunk = os.read(0, 4096)
        if not chunk:
            quit_event.set()
            return
        stdin_buf.extend(chunk)
        while b"\n" in stdin_buf:
            line, _, rest = bytes(stdin_buf).partition(b"\n")
            stdin_buf[:] = rest
            handle(line.decode().strip())

    async def forward_changes() -> None:
        async for old, new, mono_ns in monitor.changes():
            out({"change": {"old": as_json(old), "new": as_json(new), "mono_ns": mono_ns}})

    loop.add_reader(0, on_stdin)
    forwarder = asyncio.create_task(forward_changes())
    try:
        await quit_event.wait()
    finally:
        loop.remove_reader(0)
        await monitor.close()
        await forwarder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("netns")
    parser.add_argument("--iface", action="append", default=[])
    parser.add_argument("--rcvbuf", type=int, default=1 << 20)
    args = parser.parse_args()
    enter_netns(args.netns)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
