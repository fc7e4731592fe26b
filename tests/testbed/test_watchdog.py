"""VNFHA-1 on the real test bed: a VNFC arms its VM's watchdog and kicks it through the
SDK (``nfvha.amf.watchdog``); when it stops kicking, the hypervisor raises the alarm
and does the VM's configured action."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bedkit import Bed

from nfvha.model.topology import Topology, parse_topology
from nfvha.testbed.observe import udp_request, wait_serving

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]

WATCHDOG_MS = 400

GUARDED: dict[str, Any] = {
    "name": "guarded",
    "sites": [{"name": "site1", "racks": [{"name": "rack1", "hosts": [{"name": "h1"}]}]}],
    "vms": [
        {"name": "vm-reset", "host": "h1", "memory_mb": 96, "watchdog": {"action": "reset"}},
        {"name": "vm-alarm", "host": "h1", "memory_mb": 96, "watchdog": {"action": "none"}},
    ],
    "vnfs": [
        {"name": "svc", "redundancy": "none", "stateful": False, "vnfm": "none",
         "components": [{"name": "svc-1", "vm": "vm-reset", "port": 7300,
                         "watchdog_ms": WATCHDOG_MS}]},
        {"name": "mon", "redundancy": "none", "stateful": False, "vnfm": "none",
         "components": [{"name": "mon-1", "vm": "vm-alarm", "port": 7301,
                         "watchdog_ms": WATCHDOG_MS}]},
    ],
}


@pytest.fixture
def bed_topology() -> Topology:
    return parse_topology(GUARDED, "tests/testbed/test_watchdog.py")


async def watchdog_alarms(bed: Bed, vm: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """The vm-watchdog-expired alarms of ``vm``, once there is one."""
    flt = ("(eq,faultType,vm-watchdog-expired);"
           f"(eq,rootCauseFaultyResource/faultyResource/resourceId,vm/{vm})")
    end = asyncio.get_running_loop().time() + timeout_s
    while True:
        r = await bed.client.get("/vnffm/v1/alarms", params={"filter": flt})
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        if found or asyncio.get_running_loop().time() > end:
            return found
        await asyncio.sleep(0.05)


@pytest.mark.req("VNFHA-1")
async def test_a_vnfc_that_stops_kicking_gets_its_vm_reset(bed: Bed) -> None:
    addr = bed.tb.vm_address("vm-reset")
    assert await wait_serving(addr) == "PONG svc-1"
    assert udp_request(addr, "WATCHDOG") == f"WATCHDOG kicking {WATCHDOG_MS}"
    await bed.events.sync()
    assert udp_request(addr, "WATCHDOG STOP") == "OK watchdog stopped"

    expired = await bed.events.wait("vm.watchdog", "vm/vm-reset", timeout_s=20)
    assert expired["severity"] == "CRITICAL"
    assert expired["details"] == {"timeout_ms": WATCHDOG_MS, "action": "reset"}
    crashed = await bed.events.wait("vm.crashed", "vm/vm-reset", timeout_s=20)
    assert crashed["details"]["killed_by"] == "watchdog"
    await bed.events.wait("vm.started", "vm/vm-reset", timeout_s=30)
    # The VM booted again: a new life whose VNFC armed the watchdog anew.
    assert await wait_serving(addr) == "PONG svc-1"
    assert udp_request(addr, "WATCHDOG") == f"WATCHDOG kicking {WATCHDOG_MS}"
    [alarm] = await watchdog_alarms(bed, "vm-reset")
    assert alarm["perceivedSeverity"] == "CLEARED"  # cleared by the VM's start


@pytest.mark.req("VNFHA-1")
async def test_action_none_raises_the_alarm_and_leaves_the_vm_running(bed: Bed) -> None:
    addr = bed.tb.vm_address("vm-alarm")
    assert await wait_serving(addr) == "PONG mon-1"
    before = await bed.vm("vm-alarm")
    await bed.events.sync()
    assert udp_request(addr, "WATCHDOG STOP") == "OK watchdog stopped"

    expired = await bed.events.wait("vm.watchdog", "vm/vm-alarm", timeout_s=20)
    assert expired["details"]["action"] == "none"
    [alarm] = await watchdog_alarms(bed, "vm-alarm")
    assert alarm["perceivedSeverity"] == "CRITICAL"
    assert udp_request(addr, "PING") == "PONG mon-1"  # still up, still the same VM
    assert (await bed.vm("vm-alarm"))["pid"] == before["pid"]
