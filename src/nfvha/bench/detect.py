"""``nfvha bench detect``: fault injected -> event at the controller, per kind.

Runs its own deployment, injects each kind of fault ``--runs`` times (rotating
over targets), and measures on one clock (CLOCK_MONOTONIC, machine-wide):
injection time in this process vs. the controller's receipt time of the
matching event. Repairs after each fault so every run starts from a healthy
deployment.

A benchmark survives the system it measures: its deployment has no VNF manager and
no automatic VM repair (every repair_action ``confirm``, standby VMs left out), so
nothing replaces a VM it hung while it waits for it to answer again; after a host
went down it waits for the VIM's host repair (fence, evacuation) to end, powers the
host on unless it is on, and brings every VM back wherever the VIM placed it. And it
keeps what it measured: when a step fails, the figures of what completed are
printed with the error of the failed step (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nfvha.bench.stats import summary
from nfvha.model.topology import Topology, load_topology
from nfvha.testbed.apiclient import full_status, get_all
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultError, FaultInjector
from nfvha.testbed.observe import EventWaiter, wait_serving

KINDS = ("vnfc-crash", "vm-crash", "vm-hang", "agent-crash", "host-down", "guest-panic",
         "watchdog")
# What every deployment has; guest-panic needs real VMs (libvirt hosts), watchdog VMs
# with a watchdog that a VNFC kicks.
BASE_KINDS = KINDS[:5]
# Bringing a deployment back after a fault (a host's reboot, VMs booting on a busy
# machine) is not what is measured: generous.
RECOVERY_TIMEOUT_S = 120.0
SERVING_TIMEOUT_S = 60.0


def bench_topology(t: Topology) -> Topology:
    """``t`` with nothing that fails over or repairs by itself: no VNF manager, every
    VM repaired only when asked (``confirm``); standby VMs (used only by a failover)
    left out. Detection is the VIM's, measured alone."""
    t = t.without_vnfm()
    return t.model_copy(update={
        "vms": [v for v in t.vms if v.standby_for is None],
        "vnfs": [v.model_copy(update={"repair_action": "confirm"}) for v in t.vnfs]})


@dataclass
class StepFailure:
    kind: str
    run: int  # 1-based
    error: str


class DetectBench:
    def __init__(self, tb: Testbed, client: httpx.AsyncClient) -> None:
        self.tb = tb
        self.t: Topology = tb.topology
        self.client = client
        self.events = EventWaiter(client)
        self.faults = FaultInjector(tb.run, tb.topology)
        self.samples: dict[str, list[float]] = {}
        self.failure: StepFailure | None = None
        self.watchdog_timeouts_ms: set[int] = set()

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
            await wait_serving(self.tb.vm_address(vm), SERVING_TIMEOUT_S)

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
        # A real VM's guest (TCG) may take seconds to catch up once its QEMU runs again.
        await self.events.wait("vm.responsive", f"vm/{vm}", timeout_s=SERVING_TIMEOUT_S)

    def _real_vms(self) -> list[str]:
        return [v.name for v in self.t.vms if self.t.hypervisor_of(v.host) == "libvirt"]

    def _watchdog_vms(self) -> list[str]:
        kicked = {c.vm for _, c in self.t.components() if c.watchdog_ms}
        return [v.name for v in self.t.vms if v.watchdog is not None and v.name in kicked]

    async def guest_panic(self, i: int) -> None:
        vms = self._real_vms()
        if not vms:
            raise RuntimeError("guest-panic needs real VMs: no host is hypervisor: libvirt")
        vm = vms[i % len(vms)]
        await self.events.sync()
        inj = self.faults.inject("guest-panic", vm)
        ev = await self.events.wait("vm.crashed", f"vm/{vm}")
        self._record("guest-panic", inj.injected_mono_ns, ev)
        await self._post(f"/v1/vms/{vm}/start")
        await self._serving(vm)

    async def watchdog(self, i: int) -> None:
        """Injection = the VNFC stops kicking; the event comes a timeout later: what is
        recorded is the time beyond the timeout (``timeout_ms`` in the row)."""
        vms = self._watchdog_vms()
        if not vms:
            raise RuntimeError("watchdog needs a VM with a watchdog whose VNFC kicks it"
                               " (vms[].watchdog, components[].watchdog_ms)")
        vm = vms[i % len(vms)]
        timeout_ms = next(c.watchdog_ms for _, c in self.t.components()
                          if c.vm == vm and c.watchdog_ms)
        assert timeout_ms is not None
        self.watchdog_timeouts_ms.add(timeout_ms)
        await self.events.sync()
        inj = self.faults.inject("watchdog", vm)
        ev = await self.events.wait("vm.watchdog", f"vm/{vm}",
                                    timeout_s=timeout_ms / 1000 * 3 + 15)
        self.samples.setdefault("watchdog", []).append(
            (ev["received_mono_ns"] - inj.injected_mono_ns) / 1e6 - timeout_ms)
        # Back to a VNFC that kicks: a VM whose action was none or poweroff is started
        # anew (reset boots it by itself), then serves again.
        action = self.t.vm(vm).watchdog.action  # type: ignore[union-attr]
        if action == "none":
            await self._post(f"/v1/vms/{vm}/stop")
        if action != "reset":
            await self._wait_status(lambda st: any(
                v["name"] == vm and v["state"] in ("stopped", "crashed") for v in st["vms"]))
            await self._post(f"/v1/vms/{vm}/start")
        else:
            await self.events.wait("vm.started", f"vm/{vm}", timeout_s=RECOVERY_TIMEOUT_S)
        await self._serving(vm)

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
        await self._recover_host(host, inj.injected_mono_ns)

    async def _recover_host(self, host: str, since_mono_ns: int) -> None:
        """The VIM repairs a host confirmed down by itself (ADR 0011: fence, evacuate
        its VMs): let that end first, then power the host on (unless the VIM did) and
        bring every VM back to running and serving, wherever it is placed now."""
        loop = asyncio.get_running_loop()
        end = loop.time() + RECOVERY_TIMEOUT_S
        appeared_by = loop.time() + 5.0  # the repair starts on the host.down event
        while True:
            repairs = [r for r in (await self.client.get("/v1/host-repairs")).json()
                       if r["host"] == host and r["started_mono_ns"] >= since_mono_ns]
            if all(r["ended_mono_ns"] is not None for r in repairs) and (
                    repairs or loop.time() > appeared_by):
                break
            if loop.time() > end:
                raise TimeoutError(f"the VIM's repair of host {host} did not end within"
                                   f" {RECOVERY_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)
        try:
            self.faults.inject("host-up", host)
        except FaultError as e:
            if "already on" not in str(e):
                raise
        await self._wait_status(lambda st: any(
            h["name"] == host and h["state"] == "up" and h["agent"]["connected"]
            for h in st["hosts"]), timeout_s=max(0.0, end - loop.time()))
        await self._all_vms_running(max(0.0, end - loop.time()))

    async def _all_vms_running(self, timeout_s: float) -> None:
        """Start what does not run until everything does. A start that fails is tried
        again (a host that just came back may be judged again, a repair may be under
        way): only the time limit ends this."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        errors: dict[str, str] = {}

        async def start(vm: str) -> None:
            r = await self.client.post(f"/v1/vms/{vm}/start", timeout=60.0)
            if r.status_code != 200:
                errors[vm] = f"{r.status_code} {r.text}"

        while True:
            repairing = any(r["ended_mono_ns"] is None
                            for r in (await self.client.get("/v1/host-repairs")).json())
            states = {v["name"]: v["state"] for v in (await self.client.get("/v1/vms")).json()}
            down = [v.name for v in self.t.vms if states.get(v.name) != "running"]
            if not down:
                break
            if loop.time() > end:
                raise TimeoutError(
                    f"VMs not running again within {timeout_s:.0f} s: "
                    + ", ".join(f"{v} ({states.get(v)}{'; ' + errors[v] if v in errors else ''})"
                                for v in down))
            if not repairing:
                await asyncio.gather(*(start(vm) for vm in down if states.get(vm) != "starting"))
            await asyncio.sleep(0.2)
        for v in self.t.vms:
            await self._serving(v.name)

    async def run(self, kinds: list[str], runs: int,
                  progress: Callable[[str, int], None]) -> None:
        steps: dict[str, Callable[[int], Awaitable[None]]] = {
            "vnfc-crash": self.vnfc_crash, "vm-crash": self.vm_crash,
            "vm-hang": self.vm_hang, "agent-crash": self.agent_crash,
            "host-down": self.host_down, "guest-panic": self.guest_panic,
            "watchdog": self.watchdog,
        }
        for kind in kinds:
            for i in range(runs):
                try:
                    await steps[kind](i)
                except Exception as e:
                    # What was measured so far is kept; the deployment may be broken
                    # now, so nothing else is tried.
                    self.failure = StepFailure(kind, i + 1, f"{type(e).__name__}: {e}")
                    return
                progress(kind, i + 1)


def result_rows(kinds: list[str], samples: dict[str, list[float]],
                failure: StepFailure | None,
                watchdog_timeouts_ms: set[int] | None = None) -> list[dict[str, Any]]:
    """One row per kind measured (partly measured ones too), the failed step's with
    its ``error``; ``runs`` = ``n``. The watchdog's figures are past its timeout
    (``timeout_ms``)."""
    rows: list[dict[str, Any]] = []
    for kind in [*kinds, "agent-back"] if failure is None or failure.kind in kinds \
            else [failure.kind, *kinds, "agent-back"]:
        row: dict[str, Any] | None = dict(summary(kind, samples[kind])) \
            if samples.get(kind) else None
        if failure is not None and failure.kind == kind:
            where = f"run {failure.run}: " if failure.run else ""
            row = {**(row or {"kind": kind, "n": 0}), "error": where + failure.error}
        if row is not None:
            row["runs"] = row["n"]
            if kind == "watchdog" and watchdog_timeouts_ms:
                row["timeout_ms"] = max(watchdog_timeouts_ms)
            rows.append(row)
    return rows


def results_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="nfvha bench detect: fault injected -> event at the controller")
    failed = any("error" in r for r in rows)
    for col in ("kind", "n", "p50 ms", "p99 ms", "max ms", *(["error"] if failed else [])):
        table.add_column(col, justify="right" if col not in ("kind", "error") else "left")
    for r in rows:
        figures = [f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}"] \
            if r["n"] else ["-", "-", "-"]
        table.add_row(r["kind"], str(r["n"]), *figures,
                      *([r.get("error", "")] if failed else []))
    return table


async def bench(topology: Topology, kinds: list[str], runs: int,
                progress: Callable[[str, int], None]) -> list[dict[str, Any]]:
    """The result rows; a failed step's row (or the start's) carries ``error``."""
    # Detection is the VIM's: nothing may fail over or repair by itself in between.
    tb = Testbed(bench_topology(topology))
    try:
        await tb.start()
    except Exception as e:  # Testbed.start has taken everything down again
        return result_rows(kinds, {}, StepFailure("start", 0, f"{type(e).__name__}: {e}"))
    try:
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=10.0,
                                     headers=tb.headers) as client:
            b = DetectBench(tb, client)
            await b.run(kinds, runs, progress)
    finally:
        await asyncio.to_thread(tb.down)
    return result_rows(kinds, b.samples, b.failure, b.watchdog_timeouts_ms)


def default_kinds(t: Topology) -> list[str]:
    """Every kind the deployment can show: the base five, guest-panic with real VMs,
    watchdog with a VM whose VNFC kicks its watchdog."""
    kinds = list(BASE_KINDS)
    if t.hosts_with("libvirt"):
        kinds.append("guest-panic")
    kicked = {c.vm for _, c in t.components() if c.watchdog_ms}
    if any(v.watchdog is not None and v.name in kicked for v in t.vms):
        kinds.append("watchdog")
    return kinds


def run_detect_bench(args: argparse.Namespace) -> int:
    topology = load_topology(args.file)
    kinds = default_kinds(topology) if args.kinds is None else \
        [k.strip() for k in args.kinds.split(",") if k.strip()]
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

    rows = asyncio.run(bench(topology, kinds, args.runs, progress))
    failed = [r for r in rows if "error" in r]
    if args.json:
        # The JSON list keeps to the documented kinds ("agent-back" is table-only), and
        # a failed step's row, with its "error".
        print(json.dumps([r for r in rows if r["kind"] in KINDS or "error" in r], indent=1))
    else:
        Console().print(results_table(rows))
    for r in failed:
        err.print(f"[red]nfvha bench detect: {r['kind']} failed ({r['error']}); the figures"
                  " above are what was measured before[/]")
    return 1 if failed else 0
