"""The HA director on the real test bed (ADR 0014): the failover path does not go
through the VIM process. With the controller (the VIM process) killed, a crash of the
active VNFC still fails the 2N VNF over to its synced standby - the agent's notice
reaches the director, whose lease grants never stopped - and once the controller is
back, the stored crash event reaches the director (resumed from its last event id)
and the crashed VNFC is repaired."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bedkit import started_bed

from nfvha.model.topology import Topology, parse_topology
from nfvha.testbed.deploy import namespaces_available
from nfvha.testbed.faults import FaultInjector
from nfvha.testbed.observe import udp_request

TOPOLOGY: dict[str, Any] = {
    "name": "director",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [{"name": "vm-a", "host": "h1", "memory_mb": 128},
            {"name": "vm-b", "host": "h2", "memory_mb": 128}],
    "vnfs": [{"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
              "service_address": {"kind": "vip", "port": 7000},
              "components": [{"name": "gw-a", "vm": "vm-a", "port": 7000},
                             {"name": "gw-b", "vm": "vm-b", "port": 7000}]}],
}


@pytest.fixture
async def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    topology: Topology = parse_topology(TOPOLOGY)
    async with started_bed(topology, 10.0) as b:
        yield b


async def _until(check: Any, timeout_s: float, what: str, every_s: float = 0.05) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        got = await check()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"{what} within {timeout_s:g} s")
        await asyncio.sleep(every_s)


async def _gw(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/v1/availability")
    r.raise_for_status()
    return next(v for v in r.json() if v["vnf"] == "gw")


async def _active(client: httpx.AsyncClient) -> str | None:
    si = (await _gw(client))["service_instances"][0]
    return si["active"][0] if si["active"] and si["standby"] else None


@pytest.mark.req("VIM-1")
@pytest.mark.req("UC-1")
async def test_a_vnfc_fails_over_while_the_vim_process_is_down(bed: Any) -> None:
    client: httpx.AsyncClient = bed.client
    active = await _until(lambda: _active(client), 30, "gw has an active and a standby")
    standby = next(c for c in ("gw-a", "gw-b") if c != active)
    vip = bed.tb.vip("gw")
    assert vip is not None

    async def serve(line: str) -> str | None:
        return await asyncio.to_thread(udp_request, vip, line, 0.2)

    # State the standby must have: acknowledged increments (direct sync, IF-3).
    await _until(lambda: serve("INC director"), 10, "the VIP answers")
    for _ in range(4):
        assert (await serve("INC director") or "").startswith("OK")
    before = (await serve("GET director") or "").split()
    faults = FaultInjector(bed.tb.run, bed.tb.topology)
    faults.inject("controller-crash", "controller")
    faults.inject("vnfc-crash", active)

    async def standby_serves() -> list[str] | None:
        words = (await serve("GET director") or "").split()
        return words if len(words) == 4 and words[0] == "VAL" and words[3] == standby \
            else None

    got = await _until(standby_serves, 10, f"{standby} serves the VIP without the VIM")
    assert got[2] == before[2], "the standby lost acknowledged increments"

    # The VIM is back: the crash it stored meanwhile (the agent kept it) reaches the
    # director, whose manager has the VIM restart the crashed VNFC as the new standby.
    bed.tb.start_controller()
    await bed.tb.wait_ready()

    async def redundant() -> bool:
        gw = await _gw(client)
        si = gw["service_instances"][0]
        return si["active"] == [standby] and si["standby"] == [active]

    await _until(redundant, 30, f"{active} is back as the standby")
