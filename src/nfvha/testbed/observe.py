"""Watching a running test bed: the controller's event log and the VNFCs' service."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx


class EventWaiter:
    """Long-polls the controller's event log for the next matching event."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.after = 0

    async def sync(self) -> int:
        """Forget everything so far: wait only for events that come after now."""
        r = await self.client.get("/v1/status")
        r.raise_for_status()
        self.after = int(r.json()["last_event_id"])
        return self.after

    async def wait(self, kind: str, entity: str | None = None, timeout_s: float = 15.0,
                   after: int | None = None) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        params: dict[str, Any] = {"kind": kind, "after": self.after if after is None else after}
        if entity is not None:
            params["entity"] = entity
        while True:
            remaining = end - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} for {entity or 'any entity'} within {timeout_s} s")
            params["wait"] = min(remaining, 10.0)
            r = await self.client.get("/v1/events", params=params, timeout=15.0)
            r.raise_for_status()
            found = r.json()
            if found:
                ev: dict[str, Any] = found[0]
                return ev


def udp_request(addr: tuple[str, int], line: str, timeout_s: float = 0.5) -> str | None:
    """One request to a sample VNFC over UDP; None if nothing answered in time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout_s)
        try:
            s.sendto(line.encode(), addr)
            data, _ = s.recvfrom(4096)
        except OSError:
            return None
    return data.decode().strip()


def tcp_request(addr: tuple[str, int], line: str, timeout_s: float = 1.0) -> str | None:
    try:
        with socket.create_connection(addr, timeout=timeout_s) as s:
            s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    return buf.decode().strip()


async def wait_serving(addr: tuple[str, int], timeout_s: float = 10.0) -> str:
    """Until a VNFC answers PING (a started process is not yet a serving one)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        reply = await asyncio.to_thread(udp_request, addr, "PING", 0.2)
        if reply is not None:
            return reply
        if loop.time() >= end:
            raise TimeoutError(f"nothing answers on {addr[0]}:{addr[1]} after {timeout_s} s")
