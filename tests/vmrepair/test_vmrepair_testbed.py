"""Configured VM repair actions on the real test bed (REC-2, ADR 0010): a VM of a VNF of
each repair_action is crashed (or hung) and what came back is checked - a new VM in
its initial state, a VM from its last snapshot, the standby VM - and that each failure
was repaired exactly once. One test bed for the module; each test uses its own VM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from bedkit import Bed, started_bed

from nfvha.model.topology import parse_topology
from nfvha.nfvi.guest import BOOT_LOG, DISK_DIR
from nfvha.testbed.deploy import namespaces_available
from nfvha.testbed.observe import udp_request, wait_serving
from nfvha.util.procs import kill_pid

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio(loop_scope="module")]


def _vnf(name: str, action: str, vnfm: str = "none") -> dict[str, Any]:
    return {"name": name, "redundancy": "none", "stateful": False, "repair_action": action,
            "vnfm": vnfm, "components": [{"name": f"{name}-1", "vm": f"vm-{name}"}]}


REPAIRS: dict[str, Any] = {
    "name": "repairs",
    # No periodic snapshot during the tests: the one the test takes is the last one.
    "settings": {"vm_snapshot_interval_s": 3600},
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [
        {"name": "vm-init", "host": "h1", "memory_mb": 96},
        {"name": "vm-snap", "host": "h2", "memory_mb": 96},
        {"name": "vm-conf", "host": "h1", "memory_mb": 96},
        {"name": "vm-fo", "host": "h1", "memory_mb": 96},
        {"name": "vm-fo-sb", "host": "h2", "memory_mb": 96, "standby_for": "vm-fo"},
    ],
    "vnfs": [
        _vnf("init", "restart-initial"), _vnf("snap", "restart-snapshot"),
        _vnf("conf", "confirm"),
        # Under the generic VNFM: it asks for the repair too, and must only join it.
        _vnf("fo", "failover-standby-vm", vnfm="generic"),
    ],
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bed]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    mp = pytest.MonkeyPatch()
    mp.setenv("NFVHA_RUN_ROOT", str(tmp_path_factory.mktemp("vmrepair")))
    try:
        async with started_bed(parse_topology(REPAIRS, __file__), 30.0) as bed:
            yield bed
    finally:
        mp.undo()


def disk(bed: Bed, vm: str) -> Path:
    return bed.tb.run.vm_dir(vm) / DISK_DIR


def boots(bed: Bed, vm: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (disk(bed, vm) / BOOT_LOG).read_text().splitlines()]


async def events_of(bed: Bed, kind: str, entity: str, after: int) -> list[dict[str, Any]]:
    r = await bed.client.get("/v1/events", params={"kind": kind, "entity": entity,
                                                   "after": after})
    r.raise_for_status()
    found: list[dict[str, Any]] = r.json()
    return found


async def wait_running(bed: Bed, vm: str, other_than: int | None = None,
                       timeout_s: float = 5.0) -> dict[str, Any]:
    """The VM as the inventory shows it once it runs (a new life if ``other_than``
    is its old pid): the inventory follows events by up to one agent snapshot."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while (got := await bed.vm(vm))["state"] != "running" or got["pid"] == other_than:
        if loop.time() > end:
            raise AssertionError(f"VM {vm}: {got}")
        await asyncio.sleep(0.05)
    return got


async def repair_status(bed: Bed, vm: str) -> dict[str, Any]:
    r = await bed.client.get(f"/v1/vms/{vm}/repair")
    r.raise_for_status()
    status: dict[str, Any] = r.json()
    return status


@pytest.mark.req("REC-2")
@pytest.mark.req("VNFHA-13")
@pytest.mark.req("HV-7")
async def test_restart_initial_replaces_a_crashed_vm_in_its_initial_state(bed: Bed) -> None:
    addr = bed.tb.vm_address("vm-init")
    await wait_serving(addr)
    assert udp_request(addr, "INC s") == "OK s 1 init-1"
    (disk(bed, "vm-init") / "data").write_text("written by the VNF")  # as a VNFC would
    before = (await bed.vm("vm-init"))["pid"]
    after = await bed.events.sync()
    bed.faults.inject("vm-crash", "vm-init")
    ev = await bed.events.wait("vm.repaired", "vm/vm-init")
    o = ev["details"]
    assert (o["action"], o["requested_by"], o["replacement"], o["stopped_first"]) == (
        "restart-initial", "policy", "vm-init", False), o
    assert ev["clears"] is True and o["disk"] == {"mode": "initial"}
    await wait_serving(addr)
    vm = await wait_running(bed, "vm-init", other_than=before)
    # A new VM in its initial state: nothing on its disk but this boot, nothing in memory.
    assert not (disk(bed, "vm-init") / "data").exists()
    assert [b["pid"] for b in boots(bed, "vm-init")] == [vm["pid"]]
    assert udp_request(addr, "GET s") == "VAL s 0 init-1"
    assert len(await events_of(bed, "vm.started", "vm/vm-init", after)) == 1


@pytest.mark.req("REC-2")
async def test_a_hung_vm_is_killed_before_it_is_replaced(bed: Bed) -> None:
    after = await bed.events.sync()
    bed.faults.inject("vm-hang", "vm-init")
    ev = await bed.events.wait("vm.repaired", "vm/vm-init")
    assert ev["details"]["stopped_first"] is True, ev["details"]
    stopped = await events_of(bed, "vm.stopped", "vm/vm-init", after)
    started = await events_of(bed, "vm.started", "vm/vm-init", after)
    assert len(stopped) == 1 and len(started) == 1
    assert stopped[0]["id"] < started[0]["id"]  # isolated first
    await bed.wait_vm_state("vm-init", "running")
    assert await wait_serving(bed.tb.vm_address("vm-init")) == "PONG init-1"


@pytest.mark.req("REC-2")
async def test_restart_snapshot_brings_the_vm_back_from_its_last_snapshot(bed: Bed) -> None:
    await wait_serving(bed.tb.vm_address("vm-snap"))
    (disk(bed, "vm-snap") / "kept").write_text("before the snapshot")
    r = await bed.client.post("/v1/vms/vm-snap/snapshot")
    assert r.status_code == 200, r.text
    snap = r.json()["result"]["snapshot"]
    assert snap["files"] == 2  # the boot log and the VNF's file
    (disk(bed, "vm-snap") / "lost").write_text("after the snapshot")
    first_boot = boots(bed, "vm-snap")
    before = (await bed.vm("vm-snap"))["pid"]
    await bed.events.sync()
    bed.faults.inject("vm-crash", "vm-snap")
    ev = await bed.events.wait("vm.repaired", "vm/vm-snap")
    o = ev["details"]
    assert o["action"] == "restart-snapshot" and o["disk"]["snapshot"] == snap, o
    assert (disk(bed, "vm-snap") / "kept").read_text() == "before the snapshot"
    assert not (disk(bed, "vm-snap") / "lost").exists()
    # The snapshot's boot record, then this boot's.
    now = boots(bed, "vm-snap")
    vm = await wait_running(bed, "vm-snap", other_than=before)
    assert now[:-1] == first_boot and now[-1]["pid"] == vm["pid"]
    status = await repair_status(bed, "vm-snap")
    assert status["repair_action"] == "restart-snapshot" and status["state"] == "ok"
    assert status["last_snapshot"] == snap and status["last_repair"]["ok"] is True


@pytest.mark.req("REC-2")
@pytest.mark.req("VNFHA-5")
@pytest.mark.req("VNFHA-10")
async def test_confirm_repairs_only_when_asked_and_only_once(bed: Bed) -> None:
    await wait_serving(bed.tb.vm_address("vm-conf"))
    after = await bed.events.sync()
    bed.faults.inject("vm-crash", "vm-conf")
    crash = await bed.events.wait("vm.crashed", "vm/vm-conf")
    # Decided when the event was stored, before anyone could read it: nothing started.
    status = await repair_status(bed, "vm-conf")
    assert (status["state"], status["failure_event"]) == ("awaiting-confirmation", crash["id"])
    await bed.wait_vm_state("vm-conf", "crashed")  # the inventory lags events a little
    r = await bed.client.post("/v1/vms/vm-conf/repair", params={"failure": crash["id"]})
    assert r.status_code == 200, r.text
    res = r.json()["result"]
    assert res["how"] == "started" and res["outcome"]["requested_by"] == "api"
    assert res["outcome"]["action"] == "restart-initial"
    # The VNF's manager asks again about the same failure: answered, not repaired again.
    r = await bed.client.post("/v1/vms/vm-conf/repair", params={"failure": crash["id"]})
    assert r.status_code == 200 and r.json()["result"]["how"] == "resolved", r.text
    assert len(await events_of(bed, "vm.started", "vm/vm-conf", after)) == 1
    assert await wait_serving(bed.tb.vm_address("vm-conf")) == "PONG conf-1"


async def wait_vnfc(bed: Bed, name: str, state: str, timeout_s: float = 5.0
                    ) -> dict[str, Any]:
    """The inventory follows events by up to one agent snapshot."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while (got := next(v for v in (await bed.status())["vnfcs"] if v["name"] == name)
           )["state"] != state:
        if loop.time() > end:
            raise AssertionError(f"VNFC {name}: {got}, not {state}")
        await asyncio.sleep(0.05)
    return got


async def active_of(bed: Bed, vnf: str) -> tuple[list[str], int]:
    r = await bed.client.get("/v1/availability")
    a = next(v for v in r.json() if v["vnf"] == vnf)
    si = a["service_instances"][0]
    return si["active"], si["epoch"]


async def wait_active(bed: Bed, vnf: str, su: str, above_epoch: int = 0,
                      timeout_s: float = 15.0) -> int:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while (got := await active_of(bed, vnf))[0] != [su] or got[1] <= above_epoch:
        if loop.time() > end:
            raise AssertionError(f"{vnf}: active {got[0]} at epoch {got[1]}, not {su}")
        await asyncio.sleep(0.05)
    return got[1]


@pytest.mark.req("REC-2")
@pytest.mark.req("HV-7")
@pytest.mark.req("VNFHA-10")
async def test_failover_starts_the_standby_vm_and_the_vnfm_follows_it(bed: Bed) -> None:
    epoch = await wait_active(bed, "fo", "fo-1")
    after = await bed.events.sync()
    bed.faults.inject("vm-crash", "vm-fo")
    ev = await bed.events.wait("vm.repaired", "vm/vm-fo")
    o = ev["details"]
    assert (o["action"], o["replacement"], o["replacement_host"]) == (
        "failover-standby-vm", "vm-fo-sb", "h2"), o
    # The policy repaired; the generic VNFM asked too and only joined (one VM started).
    assert o["requested_by"] == "policy"
    assert len(await events_of(bed, "vm.started", "vm/vm-fo-sb", after)) == 1
    assert await events_of(bed, "vm.started", "vm/vm-fo", after) == []
    await wait_running(bed, "vm-fo-sb")
    # The VNFC serves from the standby VM, and the VNFM assigned it there again.
    assert await wait_serving(bed.tb.vm_address("vm-fo-sb")) == "PONG fo-1"
    epoch = await wait_active(bed, "fo", "fo-1", above_epoch=epoch)
    roles = {vm: (await repair_status(bed, vm))["role"] for vm in ("vm-fo", "vm-fo-sb")}
    assert roles == {"vm-fo": "standby", "vm-fo-sb": "serving"}
    vnfc = await wait_vnfc(bed, "fo-1", "running")
    assert (vnfc["vm"], vnfc["host"]) == ("vm-fo-sb", "h2")
    # The failed VM is the cold standby now: starting it by hand would run fo-1 twice.
    r = await bed.client.post("/v1/vms/vm-fo/start")
    assert r.status_code == 409 and "cold standby" in r.text, r.text
    # The VNFM knows where its SU lives now: a VNFC crash is repaired on h2.
    await bed.events.sync()
    # (the fault injector knows VNFCs where the topology puts them: killed here by pid)
    rec = json.loads((bed.tb.run.vm_dir("vm-fo-sb") / "vnfcs.json").read_text())["fo-1"]
    assert kill_pid(rec["pid"], signal.SIGKILL, ticks=rec["start_ticks"])
    started = await bed.events.wait("vnfc.started", "vnfc/fo-1")
    assert started["host"] == "h2" and started["details"]["vm"] == "vm-fo-sb"
    await wait_active(bed, "fo", "fo-1", above_epoch=epoch)
