"""A 2N VNF with its own AM (``vnfm: own``) on the real test bed: the AM runs as its own
process beside the controller, knows only the VIM's public API, and still fails the VNF
over on a VNFC crash and has its crashed VM repaired by the VIM (ADR 0008, 0010)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from bedkit import Bed, run_pids, started_bed

from nfvha.amf.model import AssignmentRecord
from nfvha.model.topology import parse_topology
from nfvha.testbed.deploy import Testbed, namespaces_available
from nfvha.testbed.observe import udp_request, wait_serving
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process

pytestmark = pytest.mark.testbed

OWN: dict[str, Any] = {
    "name": "own",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [{"name": "vm-a", "host": "h1", "memory_mb": 96},
            {"name": "vm-b", "host": "h2", "memory_mb": 96}],
    "vnfs": [{"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
              "vnfm": "own", "service_address": {"kind": "vip", "port": 7000},
              "components": [{"name": "gw-a", "vm": "vm-a", "port": 7000},
                             {"name": "gw-b", "vm": "vm-b", "port": 7000}]}],
}
VM_OF = {"gw-a": "vm-a", "gw-b": "vm-b"}
# A sanity bound on the service gap, far above what the failover takes (tens of ms):
# the machine is shared and this test is about the path, not the figure.
MAX_GAP_S = 2.0


@pytest.fixture
async def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bed]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    async with started_bed(parse_topology(OWN, __file__), 30.0) as bed:
        yield bed


def record(tb: Testbed) -> AssignmentRecord | None:
    """The AM's own record of gw, read from its database (it is the AM's state, not
    the VIM's: the VIM's /v1/availability knows nothing of it)."""
    db = tb.own_am_dir("gw") / "am.db"
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT body FROM assignments WHERE si = 'gw'").fetchone()
        except sqlite3.OperationalError:
            return None  # the AM has not created its schema yet
    return AssignmentRecord.model_validate_json(row[0]) if row else None


async def assigned(tb: Testbed, active: str | None, standby: str | None, above: int = 0,
                   timeout_s: float = 20.0) -> AssignmentRecord:
    """Until the record says so (None: anyone), at an epoch above ``above``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        r = record(tb)
        if r is not None and r.epoch > above and len(r.active) == 1 and len(r.standby) == 1 \
                and active in (None, r.active[0]) and standby in (None, r.standby[0]):
            return r
        if loop.time() > end:
            raise AssertionError(f"gw: {r}, not active {active} / standby {standby}")
        await asyncio.sleep(0.05)


async def answered_by(addr: tuple[str, int], name: str, timeout_s: float = 10.0) -> float:
    """Until the VIP answers from ``name``; returns when (time.monotonic())."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while (reply := await asyncio.to_thread(udp_request, addr, "PING", 0.05)) != f"PONG {name}":
        if loop.time() > end:
            raise AssertionError(f"the VIP answers {reply!r}, not from {name}")
    return time.monotonic()


@pytest.mark.req("UC-1")
@pytest.mark.req("UC-2")
async def test_an_own_am_fails_over_and_has_the_vim_repair_the_vm(bed: Bed) -> None:
    tb = bed.tb
    am = read_json(tb.own_am_dir("gw") / "vnf-am.pid")
    assert is_same_process(int(am["pid"]), int(am["start_ticks"]))
    assert int(am["pid"]) in run_pids(tb)  # in the run's cgroup: 'nfvha down' ends it
    # The controller's generic VNFM leaves gw alone.
    assert (await bed.client.get("/v1/availability")).json() == []
    rec = await assigned(tb, None, None)
    [active], [standby] = rec.active, rec.standby
    vip = tb.vip("gw")
    assert vip is not None
    await wait_serving(vip)
    await answered_by(vip, active)

    # UC-1 with the AM in the VNF: the active VNFC dies; the standby takes over, the
    # dead one is started again through the VIM's API and stands by.
    await bed.events.sync()
    t0 = time.monotonic()
    bed.faults.inject("vnfc-crash", active)
    assert await answered_by(vip, standby) - t0 < MAX_GAP_S
    await bed.events.wait("vnfc.started", f"vnfc/{active}")
    rec = await assigned(tb, standby, active, above=rec.epoch)

    # UC-2: the new active's VM crashes. Its repair_action is "confirm": only the AM's
    # ask through POST /v1/vms/{vm}/repair makes the VIM repair it.
    vm = VM_OF[standby]
    after = await bed.events.sync()
    t0 = time.monotonic()
    bed.faults.inject("vm-crash", vm)
    assert await answered_by(vip, active) - t0 < MAX_GAP_S
    crash = await bed.events.wait("vm.crashed", f"vm/{vm}")
    repaired = await bed.events.wait("vm.repaired", f"vm/{vm}", timeout_s=30.0)
    o = repaired["details"]
    assert (o["requested_by"], o["failure_event"], o["ok"]) == ("api", crash["id"], True), o
    rec = await assigned(tb, active, standby, above=rec.epoch)
    assert udp_request(vip, "PING") == f"PONG {active}"
    starts = await bed.client.get("/v1/events", params={"kind": "vm.started",
                                                         "entity": f"vm/{vm}", "after": after})
    assert len(starts.json()) == 1  # repaired once
