"""The client's address through the API front (ADR 0014 "The API front"): the front
replaces ``X-Forwarded-For`` (and drops ``Forwarded``) with the peer it sees; the
controller believes the header only from its fronts' addresses (loopback), so a
monitor's intake request without a token is taken from a trusted network and refused
from any other, through the front as without it, and a forged header is not believed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_limits_util import controller_app, doctor_event
from front_util import SlowUpstream, front_on, serving

from nfvha.model.api import ApiLimits

MGMT = "198.18.0.0/15"  # trusted besides loopback: the test bed's management fabric
MONITOR = "198.18.0.7"
STRANGER = "203.0.113.9"


@pytest.fixture
async def controller_url(tmp_path: Path) -> AsyncIterator[str]:
    async with controller_app(tmp_path, trusted=["127.0.0.0/8", MGMT]) as c, \
            serving(c.app) as url:
        yield url


async def intake(client: httpx.AsyncClient, headers: dict[str, str] | None = None
                 ) -> httpx.Response:
    """A Doctor monitor's event, without a token (as monitors send them)."""
    return await client.put("/doctor/events", json=[doctor_event()], headers=headers or {})


async def test_the_front_replaces_forwarding_headers_with_the_peer_it_sees() -> None:
    fake = SlowUpstream()
    async with serving(fake) as url, front_on(url, ApiLimits(), client=STRANGER) as (_, c):
        fake.release()
        r = await c.get("/v1/status", headers=[("X-Forwarded-For", "127.0.0.1"),
                                               ("X-Forwarded-For", MONITOR),
                                               ("Forwarded", "for=127.0.0.1")])
        assert r.status_code == 200
    (seen,) = fake.seen
    forwarding = [(k, v) for k, v in seen.headers if k in (b"x-forwarded-for", b"forwarded")]
    assert forwarding == [(b"x-forwarded-for", STRANGER.encode())]


async def test_an_intake_request_through_the_front_is_judged_by_the_client_address(
        controller_url: str) -> None:
    async with front_on(controller_url, ApiLimits(), client=MONITOR) as (_, monitor):
        r = await intake(monitor)
        assert r.status_code == 200, r.text
    async with front_on(controller_url, ApiLimits(), client=STRANGER) as (_, stranger):
        r = await intake(stranger)
        assert r.status_code == 401, r.text
        # Claiming to be a monitor, or the front itself, changes nothing.
        for forged in (MONITOR, "127.0.0.1", f"{MONITOR}, 127.0.0.1"):
            r = await intake(stranger, {"X-Forwarded-For": forged})
            assert r.status_code == 401, (forged, r.text)


async def test_the_controller_believes_the_header_from_its_front_only(
        controller_url: str) -> None:
    async def from_loopback(headers: list[tuple[str, str]]) -> int:
        """Straight to the controller's own API over loopback (where its front is)."""
        async with httpx.AsyncClient(base_url=controller_url, timeout=30) as c:
            return (await c.put("/doctor/events", json=[doctor_event()],
                                headers=headers)).status_code

    assert await from_loopback([]) == 200  # a monitor on the controller's host
    # With the header, the forwarded address is the client's.
    assert await from_loopback([("X-Forwarded-For", MONITOR)]) == 200
    assert await from_loopback([("X-Forwarded-For", STRANGER)]) == 401
    # Not what a front writes (one address): the client is not known, so not trusted.
    assert await from_loopback([("X-Forwarded-For", MONITOR),
                                         ("X-Forwarded-For", MONITOR)]) == 401
    assert await from_loopback([("X-Forwarded-For", f"{MONITOR}, 10.0.0.1")]) == 401
    assert await from_loopback([("X-Forwarded-For", "monitor")]) == 401


async def test_from_anywhere_but_a_front_the_header_is_not_believed(tmp_path: Path) -> None:
    async with controller_app(tmp_path, trusted=["127.0.0.0/8", MGMT]) as c:
        transport = httpx.ASGITransport(app=c.app, client=(STRANGER, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as direct:
            for claimed in (MONITOR, "127.0.0.1"):
                r = await intake(direct, {"X-Forwarded-For": claimed})
                assert r.status_code == 401, r.text
        transport = httpx.ASGITransport(app=c.app, client=(MONITOR, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as direct:
            r = await intake(direct, {"X-Forwarded-For": STRANGER})
            assert r.status_code == 200, r.text  # its own address, trusted
