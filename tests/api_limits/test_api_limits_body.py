"""Request body limits on every route (ADR 0016): a body over the route's limit is 413
before it is read (Content-Length) or at the read that passes the limit (chunked);
nothing of it is taken; a body at the limit is taken. The cluster front holds the
same limits before it passes a body on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_limits_util import (
    AUTH,
    MERGE_PATCH,
    Controller,
    controller_app,
    doctor_event,
    masakari_notification,
)
from pydantic import ValidationError

from nfvha.controller.config import ControllerConfig
from nfvha.controller.front import FrontApp
from nfvha.model.api import ApiLimits

LIMITS = ApiLimits()
GENERAL, INTAKE = LIMITS.max_body_bytes, LIMITS.intake_max_body_bytes

# (method, path, extra headers, limit): every route family that takes a body, and
# one that takes none (a body sent anyway is bounded too).
ROUTES = [
    ("POST", "/v1/tokens", {}, GENERAL),
    ("POST", "/vnffm/v1/subscriptions", {}, GENERAL),
    ("PATCH", "/vnffm/v1/alarms/some-alarm", MERGE_PATCH, GENERAL),
    ("POST", "/v1/vms/gw-vm1/start", {}, GENERAL),
    ("GET", "/v1/status", {}, GENERAL),
    ("POST", "/v1/notifications", {}, INTAKE),
    ("PUT", "/doctor/events", {}, INTAKE),
]
ROUTE_IDS = [f"{m} {p}" for m, p, _, _ in ROUTES]
READING = [r for r in ROUTES if r[0] != "GET"]  # a route that reads no body reads none of it


class Source:
    """A request body produced on demand, counting what the server pulled of it."""

    def __init__(self, total: int, piece: int = 4096) -> None:
        self.total, self.piece, self.pulled = total, piece, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            n = min(self.piece, self.total - self.pulled)
            self.pulled += n
            yield b" " * n


def refusal(r: httpx.Response, path: str, status: int) -> str:
    """The message of a refusal, checked to be in the shape of the route's errors."""
    assert r.status_code == status, r.text
    if path.startswith("/v1/notifications"):  # Masakari's fault shape (openstacksdk)
        name = {400: "badRequest", 413: "overLimit"}[status]
        fault = r.json()[name]
        assert fault["code"] == status
        return str(fault["message"])
    if path.startswith("/doctor/") and r.headers["content-type"] == "application/json":
        return str(r.json()["detail"])  # the Doctor inspector's own errors: {"detail": ...}
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status
    return str(problem["detail"])


@pytest.mark.parametrize(("method", "path", "headers", "limit"), ROUTES, ids=ROUTE_IDS)
async def test_declared_oversize_body_is_413_before_a_byte_is_read(
        client: httpx.AsyncClient, controller: Controller, method: str, path: str,
        headers: dict[str, str], limit: int) -> None:
    before = controller.bus.last_id
    body = Source(10 * 1024 * 1024)
    r = await client.request(method, path, content=body,
                             headers={**headers, "Content-Length": str(body.total)})
    assert f"at most {limit} bytes" in refusal(r, path, 413)
    assert r.headers["connection"] == "close"  # the rest is never read
    assert body.pulled == 0
    assert controller.bus.last_id == before  # nothing taken


@pytest.mark.parametrize(("method", "path", "headers", "limit"), READING,
                         ids=[f"{m} {p}" for m, p, _, _ in READING])
async def test_chunked_oversize_body_is_cut_off_at_the_limit(
        client: httpx.AsyncClient, controller: Controller, method: str, path: str,
        headers: dict[str, str], limit: int) -> None:
    before = controller.bus.last_id
    body = Source(10 * 1024 * 1024)
    r = await client.request(method, path, content=body, headers=headers)  # chunked
    assert f"at most {limit} bytes" in refusal(r, path, 413)
    assert body.pulled <= limit + body.piece  # the read that passed the limit, no more
    assert controller.bus.last_id == before


def padded(doc: Any, size: int) -> bytes:
    """``doc`` as JSON of exactly ``size`` bytes (trailing whitespace is JSON too)."""
    raw = json.dumps(doc).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_limit_is_taken(client: httpx.AsyncClient, controller: Controller,
                                            chunked: bool) -> None:
    async def stream(raw: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i:i + 1000]

    def content(raw: bytes) -> bytes | AsyncIterator[bytes]:
        return stream(raw) if chunked else raw

    r = await client.post("/v1/notifications",
                          content=content(padded(masakari_notification(), INTAKE)))
    assert r.status_code == 202, r.text
    r = await client.put("/doctor/events", content=content(padded([doctor_event()], INTAKE)))
    assert r.status_code == 200, r.text
    r = await client.post("/v1/tokens",
                          content=content(padded({"role": "reader", "name": "edge"}, GENERAL)),
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    # One byte more is too much.
    r = await client.put("/doctor/events", content=padded([doctor_event()], INTAKE + 1))
    refusal(r, "/doctor/events", 413)


async def test_limits_are_configuration(tmp_path: Path) -> None:
    raised = ApiLimits(intake_max_body_bytes=64 * 1024)
    async with controller_app(tmp_path, raised) as c:
        transport = httpx.ASGITransport(app=c.app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha",
                                     headers=AUTH) as client:
            r = await client.put("/doctor/events",
                                 content=padded([doctor_event()], 32 * 1024))
            assert r.status_code == 200, r.text
    cfg = {"run_id": "r", "listen_ip": "127.0.0.1", "port": 1, "api_port": 2,
           "db_path": "/tmp/x.db", "hosts": [{"name": "h1"}]}
    assert ControllerConfig.model_validate(cfg).api == ApiLimits()
    loaded = ControllerConfig.model_validate({**cfg, "api": {"max_body_bytes": 1 << 20}})
    assert loaded.api.body_limit("/v1/tokens") == 1 << 20
    assert loaded.api.body_limit("/doctor/events/") == INTAKE
    for bad in ({"max_body_bytes": 0}, {"max_concurrency": 0}, {"keep_alive_timeout_s": 0},
                {"max_header_bytes": 10}, {"no_such_limit": 1}):
        with pytest.raises(ValidationError):
            ControllerConfig.model_validate({**cfg, "api": bad})


# -- the cluster front -------------------------------------------------------------------


@pytest.fixture
async def front() -> AsyncIterator[FrontApp]:
    # The leader's address answers nothing: a request passed on is a 503.
    app = FrontApp(lambda: "http://127.0.0.1:9", dict, dict)
    yield app
    await app.aclose()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("method", "path", "limit"), [
    ("POST", "/v1/tokens", GENERAL), ("POST", "/v1/notifications", INTAKE),
    ("PUT", "/doctor/events", INTAKE)])
async def test_front_refuses_an_oversize_body_instead_of_passing_it_on(
        front: FrontApp, method: str, path: str, limit: int, chunked: bool) -> None:
    transport = httpx.ASGITransport(app=front)
    async with httpx.AsyncClient(transport=transport, base_url="http://front") as c:
        body = Source(10 * 1024 * 1024)
        headers = {} if chunked else {"Content-Length": str(body.total)}
        r = await c.request(method, path, content=body, headers=headers)
        assert f"at most {limit} bytes" in refusal(r, path, 413)
        assert body.pulled <= (limit + body.piece if chunked else 0)
        assert front.proxied == 0
        # Within the limit it is passed on (and the leader here does not answer).
        r = await c.request(method, path, content=b"{}")
        assert r.status_code == 503, r.text
