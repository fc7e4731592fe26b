"""A fake VIM API for the VNF-level AM's tests: the routes the AM uses, an event log
with long polls, and failures on demand (a connection refused, a 503, an answer lost
after the VIM produced it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx

from nfvha.model.events import EventType, Kind, Severity, StoredEvent

TOKEN = "operator-secret"


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str]


@dataclass
class _Paged:
    """A page of a listing, as the VIM answers it (``Link: rel="next"``)."""

    items: list[dict[str, Any]]
    path: str
    next_offset: int
    total: int
    params: dict[str, str]


@dataclass
class FakeVim:
    """``faults``: what the next requests to a path meet, in order: "refused" (never
    sent), "lost" (the VIM handled it, the answer never arrived), "replay" (the event
    log answers from its start, whatever ``after`` said), or an HTTP status."""

    events: list[StoredEvent] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    faults: dict[str, list[str | int]] = field(default_factory=dict)
    vms: list[dict[str, Any]] = field(default_factory=list)
    vnfcs: list[dict[str, Any]] = field(default_factory=list)
    placement: dict[str, str] = field(default_factory=dict)
    repairs: list[dict[str, Any]] = field(default_factory=list)
    # VM repair: what it answers (None: a done repair of the VM itself), and a gate the
    # repair waits on (set: answers at once).
    repair_answer: Callable[[str, int | None], tuple[int, dict[str, Any]]] | None = None
    repair_gate: asyncio.Event = field(default_factory=asyncio.Event)
    already: dict[str, int] = field(default_factory=dict)  # vnfc -> "already" answers left
    _news: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.repair_gate.set()

    # -- the event log ------------------------------------------------------------------
    async def publish(self, kind: Kind, entity: str, host: str = "h1",
                      **details: Any) -> StoredEvent:
        now = time.time()
        ev = StoredEvent(id=len(self.events) + 1, host=host, seq=len(self.events) + 1,
                         kind=kind, entity=entity, severity=Severity.MAJOR,
                         event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="test",
                         event_time=now, detected_mono_ns=time.monotonic_ns(),
                         received_time=now, received_mono_ns=time.monotonic_ns(),
                         details=details)
        async with self._news:
            self.events.append(ev)
            self._news.notify_all()
        return ev

    def posts(self, prefix: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path.startswith(prefix)]

    def client_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- the API --------------------------------------------------------------------------
    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = {k: v[-1] for k, v in parse_qs(request.url.query.decode()).items()}
        queue = self.faults.get(path, [])
        fault = queue.pop(0) if queue else None
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "missing or unknown API token"})
        if isinstance(fault, int):
            return httpx.Response(fault, json={"detail": f"injected {fault}"})
        self.calls.append(Call(request.method, path, params))
        if fault == "replay":
            params = {**params, "after": "0"}
        status, body = await self._route(request.method, path, params)
        if fault == "lost":
            raise httpx.ReadError("connection reset while reading the answer", request=request)
        headers = {"content-type": "application/json"}
        if isinstance(body, _Paged):
            if body.next_offset < body.total:
                query = urlencode({**body.params, "offset": body.next_offset})
                headers["link"] = f'<{body.path}?{query}>; rel="next"'
            body = body.items
        return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)

    async def _route(self, method: str, path: str, params: dict[str, str]
                     ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/v1/events":
            return 200, await self._events(int(params.get("after", 0)),
                                           float(params.get("wait", 0)),
                                           int(params.get("limit", 1000)))
        if method == "GET" and path == "/v1/status":
            return 200, {"run_id": "x", "last_event_id": len(self.events)}
        if method == "GET" and path in ("/v1/vms", "/v1/vnfcs"):
            # One item a page, so that the AM's paging is exercised.
            items = [i for i in (self.vms if path == "/v1/vms" else self.vnfcs)
                     if path == "/v1/vms" or i.get("vnf") == params.get("vnf")]
            offset = int(params.get("offset", 0))
            return 200, _Paged(items[offset:offset + 1], path, offset + 1, len(items), params)
        if method == "GET" and path == "/v1/placement":
            return 200, self.placement
        if method == "GET" and path == "/v1/vm-repairs":
            return 200, self.repairs
        if method == "POST" and parts[:2] == ["v1", "vnfcs"]:
            name, action = parts[2], parts[3]
            already = action == "start" and self.already.get(name, 0) > 0
            if already:
                self.already[name] -= 1
            return 200, {"ok": True, "host": "h1",
                         "result": {"vnfc": name, **({"already": True} if already else {})}}
        if method == "POST" and parts[:2] == ["v1", "vms"] and parts[3] == "repair":
            vm = parts[2]
            failure = int(params["failure"]) if "failure" in params else None
            await self.repair_gate.wait()
            if self.repair_answer is not None:
                return self.repair_answer(vm, failure)
            return 200, {"ok": True, "host": "h1", "result": {
                "how": "started", "outcome": outcome(vm, failure)}}
        if method == "POST" and parts[:2] == ["v1", "vms"]:
            return 200, {"ok": True, "host": "h1", "result": {}}
        return 404, {"detail": f"no route {method} {path}"}

    async def _events(self, after: int, wait: float, limit: int) -> list[dict[str, Any]]:
        def found() -> list[StoredEvent]:
            return [e for e in self.events if e.id > after][:limit]

        async with self._news:
            if not found() and wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait_for(lambda: bool(found())), wait)
            return [e.model_dump(mode="json") for e in found()]


def outcome(vm: str, failure: int | None, *, replacement: str | None = None,
            stopped_first: bool = False, action: str = "restart-initial") -> dict[str, Any]:
    return {"vm": vm, "action": action, "requested_by": "api", "failure_event": failure,
            "stopped_first": stopped_first, "replacement": replacement or vm,
            "replacement_host": "h1", "replacement_address": None, "disk": None,
            "fallback": None, "ok": True, "error": None, "started_time": time.time(),
            "duration_ms": 5.0}


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not cond():
        if loop.time() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.005)
