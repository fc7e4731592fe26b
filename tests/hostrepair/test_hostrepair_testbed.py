"""Host repair on the real test bed (ADR 0011): a host powered off is fenced through a
real fence agent (``fence_nfvha``, the FenceAgentAPI on stdin) before its VMs run
anywhere else, and they are re-created on other hosts with their addresses (REC-1,
HV-7); VM repair requests for several VMs of one host repair the host (UC-9)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from bedkit import Bed
from conftest import Deploy
from hostrepair_testutil import THREE_RACKS

from nfvha.model.topology import parse_topology
from nfvha.testbed.observe import wait_serving

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]

SETTINGS = {"condition_report_interval_s": 1.0, "vm_record_interval_s": 0.5,
            "host_repair_window_s": 30.0}


def topology(fence: dict[str, Any], gw_vnfm: str) -> Any:
    data = json.loads(json.dumps(THREE_RACKS))
    data["settings"] = SETTINGS
    for rack in data["sites"][0]["racks"]:
        for host in rack["hosts"]:
            host["fence"] = fence
    data["vnfs"][0]["vnfm"] = gw_vnfm
    data["vnfs"][1]["vnfm"] = "none"
    return parse_topology(data, "tests/hostrepair/test_hostrepair_testbed.py")


async def events(bed: Bed, after: int, kind: str) -> list[dict[str, Any]]:
    r = await bed.client.get("/v1/events", params={"after": after, "kind": kind})
    r.raise_for_status()
    found: list[dict[str, Any]] = r.json()
    return found


async def wait_for(bed: Bed, what: str, check: Any, timeout_s: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not (got := await check()):
        if loop.time() > end:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)
    return got


async def vms(bed: Bed) -> dict[str, dict[str, Any]]:
    r = await bed.client.get("/v1/vms")
    r.raise_for_status()
    return {v["name"]: v for v in r.json()}


async def all_running(bed: Bed) -> dict[str, dict[str, Any]] | None:
    now = await vms(bed)
    return now if all(v["state"] == "running" for v in now.values()) else None


def fence_log(bed: Bed, host: str) -> list[dict[str, Any]]:
    path = bed.tb.run.host_dir(host) / "fence.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.req("REC-1")
@pytest.mark.req("HV-7")
async def test_powered_off_host_is_fenced_before_its_vms_run_elsewhere(
        deploy: Deploy) -> None:
    agent = {"type": "agent", "agent": "fence_nfvha", "timeout_s": 10}
    async with deploy(topology(agent, gw_vnfm="generic")) as bed:
        assert await wait_serving(bed.tb.vm_address("vm-a")) == "PONG gw-a"
        start = await bed.events.sync()
        bed.faults.inject("host-down", "h1")
        fenced = await bed.events.wait("host.fenced", "host/h1", timeout_s=20)
        assert fenced["details"]["verified"] == "off"
        assert "fence_nfvha" in fenced["details"]["device"]
        moved = await wait_for(bed, "both VMs of h1 evacuated", lambda: _evacuated(bed, start))
        assert moved == {"vm-a": "h3", "vm-c": "h2"}  # gw-a kept off gw-b's host h2
        # REC-1's order, from the event log: down, then fenced, then (only then) any
        # VM of h1 started elsewhere.
        down = await bed.events.wait("host.down", "host/h1", after=start)
        started = [e for e in await events(bed, start, "vm.started")
                   if e["entity"] in ("vm/vm-a", "vm/vm-c")]
        assert {e["host"] for e in started} == {"h2", "h3"}
        assert down["id"] < fenced["id"] < min(e["id"] for e in started)
        # ... and from the fence agent's own record: its verified "off" came first.
        offs = [x for x in fence_log(bed, "h1") if x["action"] == "off"]
        assert offs and offs[0]["result"] == "off"
        assert offs[0]["mono_ns"] < min(e["detected_mono_ns"] for e in started)
        # HV-7: the VNF keeps its VMs, at their addresses, on their new hosts.
        now = await wait_for(bed, "all VMs running", lambda: all_running(bed))
        assert {v: now[v]["host"] for v in now} == {"vm-a": "h3", "vm-b": "h2", "vm-c": "h2"}
        assert await wait_serving(bed.tb.vm_address("vm-a")) == "PONG gw-a"
        assert await wait_serving(bed.tb.vm_address("vm-c")) == "PONG db-1"
        # The VNFM follows the move: gw-a, re-created on h3, is back in service.
        await wait_for(bed, "gw-a in service", lambda: _in_service(bed, "gw-a"))
        # The operator powers h1 on through the same fence agent: it comes back empty.
        on = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "fence_nfvha"), stdin=asyncio.subprocess.PIPE,
            env={**os.environ, "NFVHA_RUN": bed.tb.run.run_id})
        await on.communicate(b"action=on\nplug=h1\n")
        assert on.returncode == 0
        await bed.events.wait("host.up", "host/h1", after=fenced["id"], timeout_s=20)
        await wait_for(bed, "h1 agent released its VMs", lambda: _released(bed, fenced["id"]))
        after = await vms(bed)
        assert (after["vm-a"]["host"], after["vm-a"]["state"]) == ("h3", "running")
        assert after["vm-a"]["pid"] == now["vm-a"]["pid"]  # untouched by h1's return


async def _evacuated(bed: Bed, after: int) -> dict[str, str] | None:
    found = {e["entity"].partition("/")[2]: e["details"]["to"]
             for e in await events(bed, after, "vm.evacuated") if not e["details"]["error"]}
    return found if len(found) == 2 else None


async def _in_service(bed: Bed, su: str) -> bool:
    r = await bed.client.get("/v1/availability")
    r.raise_for_status()
    return any(u["name"] == su and u["readiness"] == "in-service"
               for g in r.json() for u in g["service_units"])


@pytest.mark.req("UC-9")
@pytest.mark.req("HV-7")
async def test_repair_requests_for_two_vms_of_a_host_repair_the_host(
        deploy: Deploy) -> None:
    async with deploy(topology({"type": "local"}, gw_vnfm="none")) as bed:
        start = await bed.events.sync()
        first = await bed.client.post("/v1/vms/vm-a/repair")
        assert first.status_code == 200, first.text
        assert "verdict" not in first.json()["result"]  # one VM: repaired as itself
        second = await bed.client.post("/v1/vms/vm-c/repair")
        assert second.status_code == 200, second.text
        result = second.json()["result"]
        assert result["verdict"] == "repair-host" and result["vms"] == ["vm-a", "vm-c"]
        await bed.events.wait("host.repair_started", "host/h1", after=start)
        fenced = await bed.events.wait("host.fenced", "host/h1", after=start)
        moved = await wait_for(bed, "h1 evacuated", lambda: _evacuated(bed, start))
        assert moved == {"vm-a": "h3", "vm-c": "h2"}
        # Powered on again: h1 comes back, empty, and in service.
        up = await bed.events.wait("host.up", "host/h1", after=fenced["id"], timeout_s=20)
        assert "heartbeat received" in up["description"]
        now = await wait_for(bed, "all VMs running", lambda: all_running(bed))
        assert {v: now[v]["host"] for v in now} == {"vm-a": "h3", "vm-b": "h2", "vm-c": "h2"}
        # Its new agent gave the VMs up instead of reporting them crashed (they run
        # elsewhere now), and h1 is in service, empty.
        await wait_for(bed, "h1 agent released its VMs", lambda: _released(bed, fenced["id"]))
        host = (await bed.client.get("/v1/hosts/h1")).json()
        assert host["state"] == "up" and host["agent"]["connected"]
        stale = [e for e in await events(bed, fenced["id"], "vm.crashed") if e["host"] == "h1"]
        assert stale == []
        assert await wait_serving(bed.tb.vm_address("vm-a")) == "PONG gw-a"


async def _released(bed: Bed, after: int) -> bool:
    found = {e["entity"] for e in await events(bed, after, "vm.stopped")
             if e["host"] == "h1" and e["details"].get("released")}
    return found == {"vm/vm-a", "vm/vm-c"}
