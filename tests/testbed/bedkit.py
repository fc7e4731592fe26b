"""Shared pieces of the test-bed tests: a small topology and a handle on a deployment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from nfvha.model.topology import Topology, parse_topology
from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.fabric import list_fabric_objects
from nfvha.testbed.apiclient import full_status
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultInjector
from nfvha.testbed.observe import EventWaiter
from nfvha.util.procs import is_same_process, read_stat

SMALL: dict[str, Any] = {
    "name": "small",
    "settings": {
        "condition_report_interval_s": 1.0,
        "sensor_poll_interval_s": 0.2,
        "vm_record_interval_s": 0.2,
    },
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [
        {"name": "vm-a", "host": "h1", "memory_mb": 128},
        {"name": "vm-b", "host": "h2", "memory_mb": 128},
        {"name": "vm-c", "host": "h1", "memory_mb": 96},
    ],
    "vnfs": [
        # vnfm "none": these tests are about the VIM level; the availability
        # manager (which would repair and fail over by itself) is tested on its own.
        {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
         "service_address": {"kind": "vip", "port": 7000}, "vnfm": "none",
         "components": [{"name": "gw-a", "vm": "vm-a", "port": 7000},
                        {"name": "gw-b", "vm": "vm-b", "port": 7000}]},
        {"name": "db", "redundancy": "none", "stateful": True, "state": "checkpoint",
         "vnfm": "none", "components": [{"name": "db-1", "vm": "vm-c", "port": 7200}]},
    ],
}


def small_topology() -> Topology:
    return parse_topology(SMALL, "tests/testbed/conftest.py")


class Bed:
    def __init__(self, tb: Testbed, client: httpx.AsyncClient) -> None:
        self.tb = tb
        self.client = client
        self.events = EventWaiter(client)
        self.faults = FaultInjector(tb.run, tb.topology)

    async def status(self) -> dict[str, Any]:
        """The summary with every host, VM and VNFC beside it (``hosts``, ``vms``, ...)."""
        return await full_status(self.client)

    async def vm(self, name: str) -> dict[str, Any]:
        return next(v for v in (await self.status())["vms"] if v["name"] == name)

    async def wait_vm_state(self, name: str, state: str, timeout_s: float = 5.0) -> None:
        """The inventory follows events by up to one agent snapshot (~100 ms)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while (seen := (await self.vm(name))["state"]) != state:
            if loop.time() > end:
                raise AssertionError(f"VM {name} is {seen!r}, not {state!r}")
            await asyncio.sleep(0.02)


def assert_nothing_left(tb: Testbed, pids: list[int]) -> None:
    netnses, links = list_fabric_objects(tb.run.run_id)
    assert not netnses and not links, f"left behind: {netnses + links}"
    assert not detect_cgroups().exists(tb.run.tag), "cgroup left behind"
    alive = [p for p in pids if (st := read_stat(p)) is not None and st.state not in "ZX"]
    assert not alive, f"processes left behind: {alive}"


def run_pids(tb: Testbed) -> list[int]:
    cg = detect_cgroups()
    return cg.pids(tb.run.tag) if cg.exists(tb.run.tag) else []


def alive(pid: int, ticks: int) -> bool:
    return is_same_process(pid, ticks)


@asynccontextmanager
async def started_bed(topology: Topology, timeout_s: float = 30.0) -> AsyncIterator[Bed]:
    """A test bed of ``topology`` with an API client; taken down afterwards, and checked
    that nothing of it (namespaces, links, cgroups, processes) is left."""
    tb = Testbed(topology)
    await tb.start()
    pids: list[int] = []
    try:
        pids = run_pids(tb)
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=timeout_s,
                                     headers=tb.headers) as client:
            yield Bed(tb, client)
        pids = sorted(set(pids) | set(run_pids(tb)))
    finally:
        tb.down()
        assert_nothing_left(tb, pids)
