"""API tokens with roles on the running controller: no anonymous writes."""

from __future__ import annotations

import httpx
import pytest
from bedkit import Bed

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]


async def test_roles_and_anonymous_access(bed: Bed) -> None:
    tokens = bed.tb.tokens
    async with httpx.AsyncClient(base_url=bed.tb.api_url, timeout=10) as c:
        assert (await c.get("/v1/health")).status_code == 200  # public
        r = await c.get("/v1/status")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"] == "application/problem+json"
        bad = {"Authorization": "Bearer not-a-token"}
        assert (await c.get("/v1/status", headers=bad)).status_code == 401
        reader = {"Authorization": f"Bearer {tokens['reader']}"}
        assert (await c.get("/vnffm/v1/alarms", headers=reader)).status_code == 200
        r = await c.post("/vnffm/v1/subscriptions", headers=reader,
                         json={"callbackUri": "http://127.0.0.1:9/x"})
        assert r.status_code == 403 and "operator" in r.json()["detail"]
        assert (await c.post("/v1/vms/vm-a/stop")).status_code == 401  # anonymous write
        operator = {"X-Auth-Token": tokens["operator"]}  # keystone-style header works too
        r = await c.post("/vnffm/v1/subscriptions", headers=operator,
                         json={"callbackUri": "http://127.0.0.1:9/x"})
        assert r.status_code == 201, r.text


async def test_token_less_intake_only_from_trusted_networks(bed: Bed) -> None:
    """Monitors without credentials (auth_type='none') may report from loopback and the
    management fabric; this test client is on loopback."""
    async with httpx.AsyncClient(base_url=bed.tb.api_url, timeout=10) as c:
        r = await c.put("/doctor/events", json=[{
            "time": "2026-11-21T10:00:00", "type": "compute.host.down",
            "details": {"hostname": "h1", "status": "up", "monitor": "m",
                        "monitor_event_id": "1"}}])
        assert r.status_code == 200, r.text
        # ... but not the rest of the API.
        assert (await c.get("/v1/notifications")).status_code == 200  # intake reads
        assert (await c.post("/vnffm/v1/subscriptions",
                             json={"callbackUri": "http://x"})).status_code == 401
