"""HV-1 without a fence device, on the real test bed (ADR 0015): a silent host is
confirmed down only by witness hosts that cannot reach it over the data network, never
by the controller's view alone."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from bedkit import Bed

from nfvha.model.topology import Topology, parse_topology

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]

NO_FENCE = {"type": "none"}
UNFENCED: dict[str, Any] = {
    "name": "unfenced",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1", "fence": NO_FENCE}]},
        {"name": "rack2", "hosts": [{"name": "h2", "fence": NO_FENCE}]},
        {"name": "rack3", "hosts": [{"name": "h3", "fence": NO_FENCE}]},
    ]}],
    "vms": [{"name": "vm-a", "host": "h2", "memory_mb": 96}],
    "vnfs": [{"name": "db", "redundancy": "none", "stateful": False, "vnfm": "none",
              "components": [{"name": "db-1", "vm": "vm-a", "port": 7200}]}],
}


@pytest.fixture
def bed_topology() -> Topology:
    return parse_topology(UNFENCED, "tests/testbed/test_liveness_witnesses.py")


async def host(bed: Bed, name: str) -> dict[str, Any]:
    r = await bed.client.get(f"/v1/hosts/{name}")
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


@pytest.mark.req("HV-1")
async def test_powered_off_host_without_fence_is_confirmed_down_by_witnesses(
    bed: Bed,
) -> None:
    await bed.events.sync()
    inj = bed.faults.inject("host-down", "h2")
    suspect = await bed.events.wait("host.suspect", "host/h2")
    down = await bed.events.wait("host.down", "host/h2")
    assert suspect["id"] < down["id"]
    # The peers' word, both of them (fewer up peers than host_probe_witnesses).
    m = re.search(r"witnesses (\S+), (\S+) could not reach it", down["description"])
    assert m is not None, down["description"]
    assert {m.group(1).rstrip(","), m.group(2)} == {"h1", "h3"}
    # Suspect after 300 ms of silence, down one probe round later; wide margin.
    assert (down["received_mono_ns"] - inj.injected_mono_ns) / 1e6 < 3000
    for peer in ("h1", "h3"):
        assert (await host(bed, peer))["state"] == "up"
    bed.faults.inject("host-up", "h2")
    up = await bed.events.wait("host.up", "host/h2", timeout_s=20)
    assert "rebooted" in up["description"]


@pytest.mark.req("HV-1")
async def test_host_cut_from_the_management_network_stays_suspect(bed: Bed) -> None:
    """Without a fence device, only the witnesses can tell a dead host from a cut
    management link: they reach it over the data network, so it is never down."""
    await bed.events.sync()
    bed.faults.inject("link-down", "h2", link="mgmt0")
    try:
        suspect = await bed.events.wait("host.suspect", "host/h2")
        loop = asyncio.get_running_loop()
        end = loop.time() + 15
        while "reaches it" not in (h2 := await host(bed, "h2"))["reason"]:
            assert loop.time() < end, h2
            await asyncio.sleep(0.05)
        assert h2["state"] == "suspect"
        assert re.search(r"unreachable from the controller, but h[13] reaches it",
                         h2["reason"]), h2
        # Give the confirmation several more rounds to (wrongly) fire.
        await asyncio.sleep(1.0)
        r = await bed.client.get("/v1/events", params={"kind": "host.down",
                                                       "after": suspect["id"]})
        assert r.json() == []
        assert (await host(bed, "h2"))["state"] == "suspect"
    finally:
        bed.faults.inject("link-up", "h2", link="mgmt0")
    up = await bed.events.wait("host.up", "host/h2", timeout_s=10)
    assert "rebooted" not in up["description"]
