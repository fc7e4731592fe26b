"""Watching a running test bed: the controller's event log and the VNFCs' service."""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import socket
import time
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


def serving_round(addrs: list[tuple[str, int]], request: str,
                  timeout_s: float) -> tuple[int, int]:
    """(how many serve, how many answered): ``request`` sent to every address back to
    back from one thread, the answers awaited together."""
    socks: list[socket.socket] = []
    answers: dict[int, str] = {}
    with selectors.DefaultSelector() as sel:
        try:
            for i, addr in enumerate(addrs):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setblocking(False)
                with contextlib.suppress(OSError):
                    sock.connect(addr)
                    sock.send(request.encode())
                    sel.register(sock, selectors.EVENT_READ, i)
            end = time.monotonic() + timeout_s
            while sel.get_map() and (left := end - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    with contextlib.suppress(OSError):
                        answers[key.data] = socks[key.data].recv(65535).decode(
                            errors="replace")
                    sel.unregister(key.fileobj)
        finally:
            for sock in socks:
                sock.close()
    return sum(1 for a in answers.values() if is_serving(a)), len(answers)


def is_serving(answer: str) -> bool:
    """A counter's GET is answered (VAL) only by an active holding its lease; an LB's
    STATS says its role."""
    if answer.startswith("VAL"):
        return True
    if answer.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            return bool(json.loads(answer).get("role") == "active")
    return False
