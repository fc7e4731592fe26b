"""The API front on the real test bed (ADR 0014 "The API front"): the run's API
address is served by a process of its own, in a cgroup of its own with a low CPU
weight, passing requests on to the controller's API on loopback; it outlives a crash
of the controller (answering 503 with Retry-After meanwhile), and ``nfvha down``
removes it with the rest (the fixture checks nothing is left)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from bedkit import Bed

from nfvha.controller.config import ControllerConfig
from nfvha.nfvi.cgroups import CgroupV1, CgroupV2, detect_cgroups
from nfvha.nfvi.power import front_cgroup
from nfvha.testbed.deploy import FRONT_CPU_WEIGHT
from nfvha.testbed.faults import FaultInjector
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process


def _process(pidfile: Path) -> tuple[int, int]:
    rec: dict[str, Any] = read_json(pidfile)
    return int(rec["pid"]), int(rec["start_ticks"])


async def _until_status(client: httpx.AsyncClient, status: int, timeout_s: float
                        ) -> httpx.Response:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        r = await client.get("/v1/status")
        if r.status_code == status:
            return r
        assert loop.time() < end, f"/v1/status still {r.status_code}: {r.text}"
        await asyncio.sleep(0.05)


async def test_the_api_address_is_the_fronts_and_it_outlives_the_controller(bed: Bed) -> None:
    tb = bed.tb
    d = tb.run.controller_dir
    cfg = ControllerConfig.load(d / "controller.json")
    assert cfg.api_internal_port is not None
    assert tb.api_url == f"http://127.0.0.1:{cfg.api_port}"
    front = _process(d / "front.pid")
    assert is_same_process(*front)
    assert (d / "front.log").exists()
    # In a cgroup of its own, with the low weight.
    cg = detect_cgroups()
    assert front[0] in cg.pids(front_cgroup(tb.run))
    if isinstance(cg, CgroupV2):
        weight = (cg.root / front_cgroup(tb.run) / "cpu.weight").read_text().strip()
        assert weight == str(FRONT_CPU_WEIGHT)
    else:
        assert isinstance(cg, CgroupV1)
        shares = (cg.cpu / front_cgroup(tb.run) / "cpu.shares").read_text().strip()
        assert shares == str(FRONT_CPU_WEIGHT * 1024 // 100)
    # The controller's own API answers on loopback behind it.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cfg.api_internal_port}",
                                 headers=tb.headers, timeout=10) as inside:
        assert (await inside.get("/v1/status")).status_code == 200

    # The controller crashes: the front answers for it, 503 with Retry-After.
    FaultInjector(tb.run, tb.topology).inject("controller-crash", "controller")
    r = await _until_status(bed.client, 503, 30)
    assert r.headers["retry-after"] == "1" and "the controller does not answer" in r.text
    # Started again: the same front passes requests on to it.
    tb.start_controller()
    await tb.wait_ready()
    assert _process(d / "front.pid") == front and is_same_process(*front)
    await _until_status(bed.client, 200, 30)
