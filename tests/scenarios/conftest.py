"""One real test bed per module, under the generic VNFM: the scenarios run one after
another on it, each waiting until the VNF is fully assigned again before its fault."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from bedkit import assert_nothing_left, run_pids

from nfvha.bench.alarms import ReceiverProcess
from nfvha.model.topology import Topology, parse_topology
from nfvha.scenarios.runner import ScenarioRunner
from nfvha.testbed.deploy import Testbed, namespaces_available

MANAGED: dict[str, Any] = {
    "name": "managed",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [
        {"name": "gw-vm1", "host": "h1", "memory_mb": 128},
        {"name": "gw-vm2", "host": "h2", "memory_mb": 128},
        {"name": "db-vm1", "host": "h2", "memory_mb": 96},
        # UC-5/6 (web behind its LB pair, IF-2) and UC-7/8 (dns): small VMs, one VNFC each.
        {"name": "web-vm1", "host": "h1", "cpu": 0.25, "memory_mb": 96},
        {"name": "web-vm2", "host": "h2", "cpu": 0.25, "memory_mb": 96},
        {"name": "web-vm3", "host": "h1", "cpu": 0.25, "memory_mb": 96},
        {"name": "lb-vm1", "host": "h1", "cpu": 0.25, "memory_mb": 96},
        {"name": "lb-vm2", "host": "h2", "cpu": 0.25, "memory_mb": 96},
        {"name": "dns-vm1", "host": "h2", "cpu": 0.25, "memory_mb": 96},
    ],
    "vnfs": [
        {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync", "sal": 1,
         "service_address": {"kind": "vip", "port": 7000}, "anti_affinity": "rack",
         "escalation": {"vnfc_restart": {"max": 2, "probation_s": 60},
                        "vm_repair": {"max": 2, "probation_s": 300}},
         "components": [{"name": "gw-a", "vm": "gw-vm1", "port": 7000},
                        {"name": "gw-b", "vm": "gw-vm2", "port": 7000}]},
        {"name": "db", "redundancy": "none", "stateful": True, "state": "checkpoint",
         "sal": 3, "repair_action": "restart-snapshot",
         "components": [{"name": "db-1", "vm": "db-vm1", "port": 7200}]},
        # Two hosts only: the spare shares h1 with web-1 (no anti-affinity).
        {"name": "web", "redundancy": "n+m", "active": 2, "spare": 1, "stateful": False,
         "sal": 2, "service_address": {"kind": "lb", "port": 7100}, "anti_affinity": "none",
         "components": [{"name": "web-1", "vm": "web-vm1", "port": 7100},
                        {"name": "web-2", "vm": "web-vm2", "port": 7100},
                        {"name": "web-3", "vm": "web-vm3", "port": 7100}]},
        {"name": "web-lb", "redundancy": "2n", "stateful": False, "balances": "web",
         "sal": 2, "service_address": {"kind": "vip", "port": 7100},
         "components": [{"name": "web-lb-a", "vm": "lb-vm1", "program": "lb", "port": 7100},
                        {"name": "web-lb-b", "vm": "lb-vm2", "program": "lb", "port": 7100}]},
        {"name": "dns", "redundancy": "none", "stateful": False, "sal": 2,
         "components": [{"name": "dns-1", "vm": "dns-vm1", "port": 7300}]},
    ],
}


def managed_topology() -> Topology:
    return parse_topology(MANAGED, "tests/scenarios/conftest.py")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def runner(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ScenarioRunner]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    mp = pytest.MonkeyPatch()
    mp.setenv("NFVHA_RUN_ROOT", str(tmp_path_factory.mktemp("scenarios")))
    rx = ReceiverProcess()
    [port] = await rx.start(1)
    tb = Testbed(managed_topology())
    await tb.start()
    pids: list[int] = []
    try:
        pids = run_pids(tb)
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=30.0,
                                     headers=tb.headers) as client:
            (await client.post("/vnffm/v1/subscriptions",
                               json={"callbackUri": f"http://127.0.0.1:{port}/n"})
             ).raise_for_status()
            yield ScenarioRunner(tb, client, rx)
        pids = sorted(set(pids) | set(run_pids(tb)))
    finally:
        tb.down()
        await rx.close()
        mp.undo()
        assert_nothing_left(tb, pids)
