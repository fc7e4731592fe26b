"""``nfvha bench detect``: fault injected -> event at the controller, per kind.

Runs its own deployment, injects each kind of fault ``--runs`` times (rotating
over targets), and measures on one clock (CLOCK_MONOTONIC, machine-wide):
injection time in this process vs. the controller's receipt time of the
matching event. Repairs after each fault so every run starts from a healthy
deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nfvha.bench.stats import summary
from nfvha.model.topology import Topology, load_topology
from nfvha.testbed.apiclient import full_status, get_all
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultInjector
from nfvha.testbed.observe import EventWaiter, wait_serving

KINDS = ("vnfc-crash", "vm-crash", "vm-hang", "agent-crash", "host-down")


class DetectBench:
    def __init__(self, tb: Testbed, client: httpx.AsyncClient) -> None:
        self.tb = tb
        self.t: Topology = tb.topology
        self.client = client
        self.events = EventWaiter(client)
        self.faults = FaultInjector(tb.run, tb.topology)
        self.samples: dict[str, list[float]] = {}

    def _record(self, kind: str, t0_ns: int, ev: dict[str, Any]) -> None:
        self.samples.setdefault(kind, []).append((ev["received_mono_ns"] - t0_ns) / 1e6)

    async def _post(self, path: str) -> None:
        r = await self.client.post(path, timeout=60.0)
        if r.status_code != 200:
            raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")

    async def _wait_status(self, pred: Callable[[dict[str, Any]], bool],
                           timeout_s: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            st = await full_status(self.client)
            if pred(st):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("deployment did not return to the expected state")

    async def _serving(self, vm: str) -> None:
        """Each run starts from a deployment that serves again, not one still booting."""
        if self.t.components_on(vm):
            await wait_serving(self.tb.vm_address(vm))

    async def vnfc_crash(self, i: int) -> None:
        comps = [c.name for _, c in self.t.components()]
        name = comps[i % len(comps)]
        await self.events.sync()
        inj = self.faults.inject("vnfc-crash", name)
        ev = await self.events.wait("vnfc.crashed", f"vnfc/{name}")
        self._record("vnfc-crash", inj.injected_mono_ns, ev)
        await self._post(f"/v1/vnfcs/{name}/start")
        await self._serving(self.t.vm(next(c.vm for _, c in self.t.components()
                                           if c.name == name)).name)

    async def vm_crash(self, i: int) -> None:
        vm = self.t.vms[i % len(self.t.vms)].name
        await self.events.sync()
        inj = self.faults.inject("vm-crash", vm)
        ev = await self.events.wait("vm.crashed", f"vm/{vm}")
        self._record("vm-crash", inj.injected_mono_ns, ev)
        await self._post(f"/v1/vms/{vm}/start")
        await self._serving(vm)

    async def vm_hang(self, i: int) -> None:
        vm = self.t.vms[i % len(self.t.vms)].name
        await self.events.sync()
        inj = self.faults.inject("vm-hang", vm)
        try:
            ev = await self.events.wait("vm.hung", f"vm/{vm}")
            self._record("vm-hang", inj.injected_mono_ns, ev)
        finally:
            self.faults.inject("vm-thaw", vm)
        await self.events.wait("vm.responsive", f"vm/{vm}")

    async def agent_crash(self, i: int) -> None:
        hosts = self.t.host_names()
        host = hosts[i % len(hosts)]
        # A single crash, not a crash loop: an agent that crashes again within
        # restart_backoff_reset_s is deliberately restarted with growing delays.
        reset_s = self.t.settings.restart_backoff_reset_s + 0.5
        await self._wait_status(lambda st: any(
            h["name"] == host and h["agent"]["connected"]
            and time.time() - h["agent"]["connected_time"] >= reset_s for h in st["hosts"]),
            timeout_s=reset_s + 30)
        before = {v["name"]: v["pid"] for v in await get_all(self.client, "/v1/vms")
                  if v["host"] == host}
        await self.events.sync()
        inj = self.faults.inject("agent-crash", host)
        ev = await self.events.wait("agent.lost", f"host/{host}")
        self._record("agent-crash", inj.injected_mono_ns, ev)
        back = await self.events.wait("agent.connected", f"host/{host}")
        self._record("agent-back", inj.injected_mono_ns, back)

        def untouched(st: dict[str, Any]) -> bool:
            now = {v["name"]: v["pid"] for v in st["vms"] if v["host"] == host}
            return now == before and all(v["state"] == "running" for v in st["vms"]
                                         if v["host"] == host)
        await self._wait_status(untouched)

    async def host_down(self, i: int) -> None:
        hosts = self.t.host_names()
        host = hosts[i % len(hosts)]
        await self.events.sync()
        inj = self.faults.inject("host-down", host)
        ev = await self.events.wait("host.down", f"host/{host}")
        self._record("host-down", inj.injected_mono_ns, ev)
        self.faults.inject("host-up", host)
        await self._wait_status(lambda st: any(
            h["name"] == host and h["state"] == "up" and h["agent"]["connected"]
            for h in st["hosts"]))
        await asyncio.gather(*(self._post(f"/v1/vms/{v.name}/start")
                               for v in self.t.vms_on(host)))
        for v in self.t.vms_on(host):
            await self._serving(v.name)

    async def run(self, kinds: list[str], runs: int,
                  progress: Callable[[str, int], None]) -> None:
        steps: dict[str, Callable[[int], Awaitable[None]]] = {
            "vnfc-crash": self.vnfc_crash, "vm-crash": self.vm_crash,
            "vm-hang": self.vm_hang, "agent-crash": self.agent_crash,
            "host-down": self.host_down,
        }
        for kind in kinds:
            for i in range(runs):
                await steps[kind](i)
                progress(kind, i + 1)


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="nfvha bench detect: fault injected -> event at the controller")
    for col in ("kind", "n", "p50 ms", "p99 ms", "max ms"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for r in rows:
        table.add_row(r["kind"], str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['max_ms']:.1f}")
    return table


async def bench(topology: Topology, kinds: list[str], runs: int,
                progress: Callable[[str, int], None]) -> list[dict[str, Any]]:
    # Detection is the VIM's: nothing may fail over or repair by itself in between.
    tb = Testbed(topology.without_vnfm())
    await tb.start()
    try:
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=10.0,
                                     headers=tb.headers) as client:
            b = DetectBench(tb, client)
            await b.run(kinds, runs, progress)
    finally:
        await asyncio.to_thread(tb.down)
    order = [*kinds, "agent-back"]
    return [summary(k, b.samples[k]) for k in order if k in b.samples]


def run_detect_bench(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"nfvha bench detect: unknown kind(s) {', '.join(unknown)};"
              f" valid: {', '.join(KINDS)}", file=sys.stderr)
        return 2
    if args.runs < 1:
        print("nfvha bench detect: --runs must be >= 1", file=sys.stderr)
        return 2
    err = Console(stderr=True)

    def progress(kind: str, n: int) -> None:
        if n == args.runs or n % 10 == 0:
            err.print(f"  {kind}: {n}/{args.runs}")

    rows = asyncio.run(bench(load_topology(args.file), kinds, args.runs, progress))
    if args.json:
        # The JSON list keeps to the five documented kinds; "agent-back" is table-only.
        print(json.dumps([r for r in rows if r["kind"] in KINDS], indent=1))
    else:
        Console().print(results_table(rows))
    return 0
