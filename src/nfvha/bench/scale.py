"""``nfvha bench scale``: the real controller and its HA director against N simulated
hosts of M VMs each, on loopback.

What it does, every time on CLOCK_MONOTONIC (one clock machine-wide):

1. generates the deployment (racks of 20 hosts, M VMs a host, 2N VNFs over two hosts,
   ``vnfm: none``, ``fence: none``), starts the host simulators (they bind every
   host's UDP socket), writes the controller's configuration, starts the HA director
   and the controller (``python -m nfvha.director.main`` / ``nfvha.controller.main``);
2. powers every simulated host on at the same moment (a controller starts among
   hosts that run already); ``all_up_s``: from the start of the controller and its
   director until the API shows every host ``up`` with its agent connected;
3. watches for ``--duration`` seconds, injecting ``--crashes`` VM crashes and
   ``--silences`` host power-offs spread over it (a silenced host is powered on again
   once confirmed down), and measures:

   - ``false_suspects``: ``host.suspect`` events during the watch for hosts never
     silenced (``startup_suspects``: those before it);
   - ``vm_crash_receipt_*``: the stored ``vm.crashed`` event's ``received_mono_ns``
     minus its ``detected_mono_ns`` (set by the simulated agent at the crash);
   - ``host_down_confirm_p99_ms``: the ``host.down`` event's ``detected_mono_ns`` minus
     the power-off;
   - ``heartbeats_dropped``: the ``drops`` column of /proc/net/udp for the director's
     heartbeat socket (found by inode through /proc/<pid>/fd), over the watch;
   - ``controller_cpu_cores``: CPU time of controller + director over the watch / its
     wall time; ``controller_rss_mb``: their peak resident sets (VmHWM) summed.

A step that fails ends the run, but what was measured until then is reported with the
error. Everything is named ``nfvha-<run>`` under the run root and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from nfvha.bench import procstats
from nfvha.bench.scaleplan import ScalePlan, plan_topology
from nfvha.bench.scalerun import ScaleRun, ScaleRunError, SimProcess, raise_fd_limit
from nfvha.bench.simwire import Crash, GetStats, PowerOff, PowerOn, SimStats, Start
from nfvha.bench.stats import percentile
from nfvha.model.settings import Settings
from nfvha.util.runpaths import RunPaths, new_run_id

# The targets at 1,000 hosts x 20 VMs (issue 11): shown beside the figures.
TARGETS = {"all_up_s": 60.0, "false_suspects": 0, "vm_crash_receipt_p99_ms": 50.0,
           "host_down_confirm_p99_ms": 1000.0, "controller_cpu_cores": 1.5,
           "controller_rss_mb": 2048.0}
HOSTS_PER_SIMULATOR = 600  # above this a second simulator process shares the hosts
HOSTS_POLL_S = 1.0  # the all-up poll: cheap for the controller
PAGE_LIMIT = 2000
EVENTS_WAIT_S = 1.0
POWER_ON_AFTER_S = 1.0  # a silenced host boots again this long after it is confirmed down


@dataclass
class Silence:
    host: str
    at_ns: int
    down_ns: int | None = None
    powered_on: bool = False


@dataclass
class Injected:
    crashes: dict[tuple[str, str], int] = field(default_factory=dict)  # (host, vm) -> ns
    silences: dict[str, Silence] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Observed:
    """What the controller's event log said, as it said it."""

    last_id: int = 0
    # (host, VM, detected_mono_ns) -> received_mono_ns: matched with the injected
    # crashes at the end (an event may be read before its crash's reply is).
    crashed: dict[tuple[str, str, int], int] = field(default_factory=dict)
    suspects: list[dict[str, Any]] = field(default_factory=list)
    downs: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


def simulator_count(hosts: int, requested: int) -> int:
    return requested if requested > 0 else max(1, math.ceil(hosts / HOSTS_PER_SIMULATOR))


def crash_targets(plan: ScalePlan, n: int, exclude: set[str]) -> list[tuple[str, str]]:
    """``n`` distinct (host, VM) pairs spread over the hosts (and so over the racks and
    the simulators), none on an excluded host."""
    hosts = [h for h in plan.hosts if h.name not in exclude]
    capacity = sum(len(h.vms) for h in hosts)
    if n > capacity:
        raise ValueError(f"--crashes {n}: only {capacity} VMs on hosts not silenced")
    out: list[tuple[str, str]] = []
    # A stride coprime to the host count visits every host before any twice.
    stride = next(s for s in range(max(1, len(hosts) * 2 // 5), 0, -1)
                  if math.gcd(s, len(hosts)) == 1)
    for i in range(n):
        h = hosts[(i * stride) % len(hosts)]
        k = i // len(hosts)
        while k >= len(h.vms):  # fewer VMs on this one (not with a uniform plan)
            k -= len(h.vms)
        out.append((h.name, h.vms[k].name))
    return out


def silence_targets(plan: ScalePlan, n: int) -> list[str]:
    """``n`` hosts spread evenly over the deployment. At most a third of the hosts:
    the others must be up to witness (ADR 0015)."""
    hosts = [h.name for h in plan.hosts]
    if n > len(hosts) // 3:
        raise ValueError(f"--silences {n}: at most a third of the hosts ({len(hosts) // 3})")
    return [hosts[(j * len(hosts)) // n + len(hosts) // (2 * n)] for j in range(n)] if n else []


def _ms(ns: float) -> float:
    return round(ns / 1e6, 2)


class ScaleBench:
    def __init__(self, plan: ScalePlan, *, duration_s: float, crashes: int, silences: int,
                 sims: int, up_timeout_s: float, settle_s: float,
                 progress: Callable[[str], None]) -> None:
        self.plan = plan
        self.duration_s = duration_s
        self.n_crashes = crashes
        self.n_silences = silences
        self.n_sims = sims
        self.up_timeout_s = up_timeout_s
        self.settle_s = settle_s
        self.progress = progress
        self.silenced = silence_targets(plan, silences)
        self.crash_plan = crash_targets(plan, crashes, set(self.silenced))
        self.run = ScaleRun(RunPaths(new_run_id()), plan)
        self.injected = Injected()
        self.observed = Observed()
        self.result: dict[str, Any] = {"hosts": len(plan.hosts), "vms": plan.vm_count}
        self._sim_of = {h.name: i % sims for i, h in enumerate(plan.hosts)}  # its shard
        self._window: tuple[int, int] | None = None  # (start, end) ns of the watch
        self._power_ons: list[asyncio.Task[None]] = []
        self._t_control = 0

    # -- the whole run ------------------------------------------------------------------
    async def execute(self, *, keep_files: bool = False) -> dict[str, Any]:
        """Run and measure; the result has ``error`` set if a step failed. Whatever
        happens, every process of the run is stopped and its files removed."""
        step = "start"
        try:
            step = "start the simulators and the controller"
            await self._start()
            async with httpx.AsyncClient(base_url=self.run.api_url, headers=self.run.headers,
                                         timeout=30.0) as client:
                step = "wait for the API"
                await self._wait_api(client)
                step = "bring every host up"
                await self._all_up(client)
                step = "watch"
                await self._watch(client)
        except (ScaleRunError, OSError, ValueError, TimeoutError, httpx.HTTPError) as e:
            self.result["error"] = f"{step}: {type(e).__name__}: {e}".strip()
        except Exception as e:  # a bug here: still report what was measured
            self.result["error"] = f"{step}: {type(e).__name__}: {e}"
            self.result["traceback"] = traceback.format_exc(limit=8)
        finally:
            self._finish()
            await self._stop(keep_files)
        return self.result

    async def _stop(self, keep_files: bool) -> None:
        self.progress("stopping")
        try:
            await self.run.stop(keep_files=keep_files)
        except Exception:
            self.run.stop_now(keep_files=keep_files)
            raise

    async def _start(self) -> None:
        limit = raise_fd_limit(len(self.plan.hosts))
        self.progress(f"run {self.run.run.run_id}: {len(self.plan.hosts)} hosts,"
                      f" {self.plan.vm_count} VMs, {self.n_sims} simulator shard(s)"
                      " (supervisors + agents),"
                      f" RLIMIT_NOFILE {limit}")
        spec = await asyncio.to_thread(self.run.prepare)
        ports = await self.run.start_simulators(self.n_sims, spec)
        self.result["simulator_nice"] = max(s.bound.nice for s in self.run.sims
                                            if s.bound is not None)
        await asyncio.to_thread(self.run.write_controller_config, ports)
        # A controller starts among hosts that already run: they are powered on with it
        # and find it as soon as it listens.
        self._t_control = time.monotonic_ns()
        self.run.start_control()
        for sim in self.run.sims:
            reply = await sim.request(Start(id=sim.next_id(),
                                            controller_ip=self.run.controller_ip,
                                            controller_port=self.run.controller_port))
            if not reply.ok:
                raise ScaleRunError(f"simulator {sim.index}: {reply.error}")
        self.progress("controller and director started, hosts powered on")

    async def _wait_api(self, client: httpx.AsyncClient) -> None:
        end = time.monotonic() + self.up_timeout_s
        while True:
            self.run.check_control_alive()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/v1/health", timeout=2.0)).status_code == 200:
                    break
            if time.monotonic() > end:
                raise TimeoutError(f"the API did not answer within {self.up_timeout_s:.0f} s")
            await asyncio.sleep(0.2)
        self.result["control_start_s"] = round((time.monotonic_ns() - self._t_control) / 1e9,
                                               2)
        self.progress(f"controller serving after {self.result['control_start_s']} s")

    async def _hosts(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """Every host as the API lists it: one page after another when it pages
        (``Link: rel="next"``), or all at once when it does not."""
        out: list[dict[str, Any]] = []
        r = await client.get("/v1/hosts", params={"limit": PAGE_LIMIT})
        while True:
            r.raise_for_status()
            out.extend(r.json())
            following = r.links.get("next", {}).get("url")
            if not following:
                return out
            r = await client.get(following)

    async def _all_up(self, client: httpx.AsyncClient) -> None:
        start = self._t_control
        end = start + int(self.up_timeout_s * 1e9)
        up, last = 0, -1
        while True:
            self.run.check_control_alive()
            try:
                hosts = await self._hosts(client)
            except httpx.HTTPError as e:
                hosts = []
                self.progress(f"  /v1/hosts: {type(e).__name__}: {e}")
            up = sum(1 for h in hosts if h["state"] == "up" and h["agent"]["connected"])
            self.result["hosts_up"] = up
            if up == len(self.plan.hosts) and len(hosts) == up:
                break
            if time.monotonic_ns() > end:
                states: dict[str, int] = {}
                for h in hosts:
                    key = f"{h['state']}{'' if h['agent']['connected'] else ' (no agent)'}"
                    states[key] = states.get(key, 0) + 1
                raise TimeoutError(f"{up} of {len(self.plan.hosts)} hosts up after"
                                   f" {self.up_timeout_s:.0f} s: {states}")
            if up != last:
                self.progress(f"  {up}/{len(self.plan.hosts)} up")
                last = up
            await asyncio.sleep(HOSTS_POLL_S)
        self.result["all_up_s"] = round((time.monotonic_ns() - start) / 1e9, 2)
        self.progress(f"all {up} hosts up in {self.result['all_up_s']} s")

    # -- the watch ----------------------------------------------------------------------
    async def _watch(self, client: httpx.AsyncClient) -> None:
        base = _Sample.take(self.run)
        startup = await asyncio.gather(*(s.request(GetStats(id=s.next_id(), reset=True))
                                         for s in self.run.sims))
        before = [r.stats for r in startup if r.stats is not None]
        self.result["simulator_startup_max_heartbeat_gap_ms"] = max(
            (st.max_heartbeat_gap_ms for st in before), default=None)
        # Its CPU while the hosts came up: a saturated simulator explains late heartbeats.
        self.result["simulator_startup_cpu_cores"] = round(sum(
            st.cpu_s / st.window_s for st in before if st.window_s > 0), 3)
        t0 = time.monotonic_ns()
        self._window = (t0, t0)
        self.progress(f"watching for {self.duration_s:g} s: {self.n_crashes} VM crash(es),"
                      f" {self.n_silences} host silence(s)")
        follower = asyncio.create_task(self._follow(client), name="events")
        try:
            injector = asyncio.create_task(self._inject(t0), name="inject")
            await self._sleep_watching(self.duration_s, follower, injector)
            await injector
            t1 = time.monotonic_ns()
            self._window = (t0, t1)
            end = _Sample.take(self.run)
            sim_stats = await asyncio.gather(*(s.request(GetStats(id=s.next_id()))
                                               for s in self.run.sims))
            self._record_window(base, end, t1 - t0, [r.stats for r in sim_stats])
            await self._settle(follower)
        finally:
            for t in (follower, *self._power_ons):
                t.cancel()
            for t in (follower, *self._power_ons):
                with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError,
                                         ScaleRunError, TimeoutError):
                    await t

    async def _sleep_watching(self, seconds: float, *tasks: asyncio.Task[None]) -> None:
        """Sleep, checking every second that the controller lives and that the helper
        tasks have not failed."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.run.check_control_alive()
            for t in tasks:
                exc = t.exception() if t.done() else None
                if exc is not None:
                    raise exc
            await asyncio.sleep(min(1.0, left))

    async def _inject(self, t0: int) -> None:
        """Crashes and silences spread evenly over the watch; each silenced host is
        powered on again once it was confirmed down."""
        d = self.duration_s * 1e9
        plan: list[tuple[int, str, Any]] = []
        plan += [(t0 + int((i + 0.5) * d / len(self.crash_plan)), "crash", target)
                 for i, target in enumerate(self.crash_plan)]
        plan += [(t0 + int((j + 0.25) * d / len(self.silenced)), "silence", host)
                 for j, host in enumerate(self.silenced)]
        plan.sort(key=lambda p: p[0])
        for at, what, target in plan:
            await asyncio.sleep(max(0.0, (at - time.monotonic_ns()) / 1e9))
            if what == "crash":
                await self._crash(*target)
            else:
                await self._silence(target)
                self._power_ons.append(asyncio.create_task(self._power_on_when_down(target)))

    def _sims(self, host: str) -> tuple[SimProcess, SimProcess]:
        """The supervisors' and the agents' simulator of ``host``."""
        i = self._sim_of[host]
        return self.run.supervisors[i], self.run.agents[i]

    async def _crash(self, host: str, vm: str) -> None:
        _, agents = self._sims(host)
        reply = await agents.request(Crash(id=agents.next_id(), host=host, vm=vm))
        if reply.ok:
            self.injected.crashes[(host, vm)] = reply.at_mono_ns
        else:
            self.injected.errors.append(f"crash {vm} on {host}: {reply.error}")

    async def _silence(self, host: str) -> None:
        """Power off: the supervisor first (its silence is what is timed), its agent
        at once after."""
        supervisors, agents = self._sims(host)
        reply = await supervisors.request(PowerOff(id=supervisors.next_id(), host=host))
        if reply.ok:
            self.injected.silences[host] = Silence(host, reply.at_mono_ns)
            self.progress(f"  {host} powered off")
        else:
            self.injected.errors.append(f"silence {host}: {reply.error}")
        reply = await agents.request(PowerOff(id=agents.next_id(), host=host))
        if not reply.ok:
            self.injected.errors.append(f"silence {host}'s agent: {reply.error}")

    async def _power_on_when_down(self, host: str) -> None:
        s = self.injected.silences.get(host)
        while s is not None and s.down_ns is None:
            self.observed.changed.clear()
            await self.observed.changed.wait()
        await asyncio.sleep(POWER_ON_AFTER_S)
        ok = True
        for sim in self._sims(host):
            ok = (await sim.request(PowerOn(id=sim.next_id(), host=host))).ok and ok
        if s is not None:
            s.powered_on = ok

    async def _follow(self, client: httpx.AsyncClient) -> None:
        """The controller's event log as it grows (a long poll)."""
        obs = self.observed
        while True:
            r = await client.get("/v1/events", params={
                "after": obs.last_id, "limit": PAGE_LIMIT, "wait": EVENTS_WAIT_S})
            r.raise_for_status()
            for ev in r.json():
                obs.last_id = max(obs.last_id, int(ev["id"]))
                self._observe(ev)
            obs.changed.set()

    def _observe(self, ev: dict[str, Any]) -> None:
        obs = self.observed
        kind, host = ev["kind"], ev["host"]
        if kind == "vm.crashed":
            vm = str(ev["entity"]).removeprefix("vm/")
            obs.crashed[(host, vm, int(ev["detected_mono_ns"]))] = int(ev["received_mono_ns"])
        elif kind == "host.suspect":
            obs.suspects.append(ev)
        elif kind == "host.down":
            obs.downs.append(ev)
        self._match_downs()

    def _match_downs(self) -> None:
        for ev in self.observed.downs:
            s = self.injected.silences.get(ev["host"])
            if s is not None and s.down_ns is None and ev["detected_mono_ns"] >= s.at_ns:
                s.down_ns = int(ev["detected_mono_ns"])

    def _receipts_ms(self) -> dict[tuple[str, str], float]:
        """Per injected crash that the controller stored: its receipt time."""
        out = {}
        for (host, vm), at in self.injected.crashes.items():
            received = self.observed.crashed.get((host, vm, at))
            if received is not None:
                out[(host, vm)] = _ms(received - at)
        return out

    def _outstanding(self) -> int:
        self._match_downs()
        crashes = len(self.injected.crashes) - len(self._receipts_ms())
        downs = sum(1 for s in self.injected.silences.values() if s.down_ns is None)
        return crashes + downs

    async def _settle(self, follower: asyncio.Task[None]) -> None:
        """Until every injected fault has its event (or ``settle_s`` is over)."""
        end = time.monotonic() + self.settle_s
        while self._outstanding() and time.monotonic() < end:
            if follower.done():
                follower.result()  # raises what stopped it
                return
            self.observed.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.observed.changed.wait(),
                                       max(0.0, end - time.monotonic()))

    def _record_window(self, base: _Sample, end: _Sample, wall_ns: int,
                       sims: list[SimStats | None]) -> None:
        wall = wall_ns / 1e9
        r = self.result
        r["duration_s"] = round(wall, 2)
        ctl = {}
        for name in ("controller", "director"):
            cpu = end.cpu.get(name), base.cpu.get(name)
            ctl[name] = {
                "cpu_cores": round((cpu[0] - cpu[1]) / wall, 3)
                if cpu[0] is not None and cpu[1] is not None else None,
                "peak_rss_mb": end.peak_rss.get(name)}
        cores = [v["cpu_cores"] for v in ctl.values()]
        r["controller_cpu_cores"] = round(sum(c for c in cores if c is not None), 3) \
            if all(c is not None for c in cores) else None
        rss = [v["peak_rss_mb"] for v in ctl.values()]
        r["controller_rss_mb"] = round(sum(m for m in rss if m is not None), 1) \
            if all(m is not None for m in rss) else None
        r["heartbeats_dropped"] = end.drops - base.drops \
            if end.drops is not None and base.drops is not None else None
        r["heartbeats_dropped_source"] = ("/proc/net/udp drops of the director's socket"
                                          f" {self.run.controller_ip}:{self.run.controller_port}")
        r["udp_rcvbuf_errors_machine"] = end.rcvbuf_errors - base.rcvbuf_errors \
            if end.rcvbuf_errors is not None and base.rcvbuf_errors is not None else None
        r["processes"] = ctl
        stats = [s for s in sims if s is not None]
        sim_cpu = [(end.cpu.get(f"sim-{s.name}") or 0.0) - (base.cpu.get(f"sim-{s.name}") or 0.0)
                   for s in self.run.sims]
        r["simulator"] = {
            "processes": len(self.run.sims),
            "cpu_cores": round(sum(sim_cpu) / wall, 3),
            "heartbeats_sent": sum(s.heartbeats_sent for s in stats),
            "max_heartbeat_gap_ms": max((s.max_heartbeat_gap_ms for s in stats), default=None),
            "late_heartbeats": sum(s.late_heartbeats for s in stats),
            "pings_answered": sum(s.pings_answered for s in stats),
            "probes_witnessed": sum(s.probes_witnessed for s in stats),
            "events_sent": sum(s.events_sent for s in stats),
            "commands": sum(s.commands for s in stats),
        }

    # -- the figures ----------------------------------------------------------------------
    def _warnings(self) -> list[str]:
        """What makes a figure the simulator's rather than the controller's."""
        out = []
        sim = self.result.get("simulator") or {}
        gap = sim.get("max_heartbeat_gap_ms")
        suspect_ms = self.plan.topology.settings.host_suspect_after_ms
        if gap is not None and gap >= 0.8 * suspect_ms:
            out.append(f"the simulator itself went {gap:.0f} ms without sending some host's"
                       f" heartbeat (suspect after {suspect_ms} ms): suspects may be its"
                       " own doing, not the controller's (a loaded machine?)")
        start_gap = self.result.get("simulator_startup_max_heartbeat_gap_ms")
        if start_gap is not None and start_gap >= 0.8 * suspect_ms \
                and self.result.get("startup_suspects"):
            out.append(f"the simulator went {start_gap:.0f} ms without sending some host's"
                       " heartbeat while the hosts came up: the start-up suspects may be"
                       " its own doing")
        cores = sim.get("cpu_cores")
        if cores is not None and cores > 0.8 * sim.get("processes", 1):
            out.append(f"the simulator used {cores:.2f} cores in {sim.get('processes')}"
                       " process(es): near saturation; try --sim-procs")
        return out

    def _finish(self) -> None:
        r = self.result
        inj, obs = self.injected, self.observed
        silenced = set(inj.silences) | set(self.silenced)
        window = self._window
        if window is not None:
            t0 = window[0]
            false = [e for e in obs.suspects if e["host"] not in silenced
                     and e["detected_mono_ns"] >= t0]
            r["false_suspects"] = len(false)
            r["startup_suspects"] = sum(1 for e in obs.suspects if e["detected_mono_ns"] < t0)
            if false:
                r["false_suspect_examples"] = [
                    f"{e['host']}: {e['description']}" for e in false[:5]]
        self._match_downs()
        receipts = list(self._receipts_ms().values())
        r["vm_crash_receipt_p50_ms"] = percentile(receipts, 50) if receipts else None
        r["vm_crash_receipt_p99_ms"] = percentile(receipts, 99) if receipts else None
        confirms = [_ms(s.down_ns - s.at_ns) for s in inj.silences.values()
                    if s.down_ns is not None]
        r["host_down_confirm_p99_ms"] = percentile(confirms, 99) if confirms else None
        ordered = {k: r.get(k) for k in ("hosts", "vms", "all_up_s", "false_suspects",
                                         "vm_crash_receipt_p50_ms", "vm_crash_receipt_p99_ms",
                                         "host_down_confirm_p99_ms", "heartbeats_dropped",
                                         "controller_cpu_cores", "controller_rss_mb")}
        extra = {k: v for k, v in r.items() if k not in ordered}
        st = self.plan.topology.settings
        extra.update({
            "run_id": self.run.run.run_id,
            "heartbeat": f"{st.host_heartbeat_interval_ms} x {st.host_heartbeat_misses}",
            "crashes": {"injected": len(inj.crashes), "received": len(receipts)},
            "vm_crash_receipt_max_ms": max(receipts) if receipts else None,
            "silences": {"injected": len(inj.silences), "confirmed": len(confirms),
                         "powered_on_again": sum(1 for s in inj.silences.values()
                                                 if s.powered_on)},
            "host_down_confirm_p50_ms": percentile(confirms, 50) if confirms else None,
            "host_down_confirm_max_ms": max(confirms) if confirms else None,
        })
        if inj.errors:
            extra["injection_errors"] = inj.errors
        warnings = self._warnings()
        if warnings:
            extra["warnings"] = warnings
        if window is not None and "error" not in r:
            missing = self._outstanding()
            if missing:
                extra["error"] = (f"{missing} injected fault(s) without their event after"
                                  f" {self.settle_s:g} s")
        self.result = {**ordered, **extra}


@dataclass
class _Sample:
    """CPU seconds, peak memory and UDP drops at one moment."""

    cpu: dict[str, float | None]
    peak_rss: dict[str, float | None]
    drops: int | None
    rcvbuf_errors: int | None

    @classmethod
    def take(cls, run: ScaleRun) -> _Sample:
        cpu: dict[str, float | None] = {}
        peak: dict[str, float | None] = {}
        for p in run.control_processes():
            cpu[p.name] = procstats.cpu_seconds(p.pid)
            rss = procstats.peak_rss_mb(p.pid)
            peak[p.name] = round(rss, 1) if rss is not None else None
        for s in run.sims:
            cpu[f"sim-{s.name}"] = procstats.cpu_seconds(s.pid)
        drops = None
        if run.director is not None:
            drops = procstats.udp_drops(run.director.pid,
                                        (run.controller_ip, run.controller_port))
        return cls(cpu, peak, drops, procstats.udp_rcvbuf_errors())


# -- output ---------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def results_table(r: dict[str, Any]) -> Table:
    t = Table(title=f"nfvha bench scale: {r['hosts']:,} hosts, {r['vms']:,} VMs"
                    f" (run {r.get('run_id', '?')})")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("target (1,000 hosts)", justify="right")
    rows = [("all hosts up, s", "all_up_s"), ("false suspects", "false_suspects"),
            ("VM crash receipt p50, ms", "vm_crash_receipt_p50_ms"),
            ("VM crash receipt p99, ms", "vm_crash_receipt_p99_ms"),
            ("host silence -> down p99, ms", "host_down_confirm_p99_ms"),
            ("heartbeats dropped", "heartbeats_dropped"),
            ("controller + director CPU, cores", "controller_cpu_cores"),
            ("controller + director peak RSS, MB", "controller_rss_mb")]
    for label, key in rows:
        target = TARGETS.get(key)
        t.add_row(label, _fmt(r.get(key)), "" if target is None else
                  ("< " if key != "false_suspects" else "") + _fmt(target))
    procs = r.get("processes") or {}
    for name, p in procs.items():
        t.add_row(f"  {name}: CPU cores / peak RSS MB",
                  f"{_fmt(p.get('cpu_cores'))} / {_fmt(p.get('peak_rss_mb'))}", "")
    sim = r.get("simulator") or {}
    if sim:
        t.add_row(f"simulator ({sim.get('processes')} proc): CPU cores",
                  _fmt(sim.get("cpu_cores")), "")
        t.add_row("simulator: longest heartbeat gap, ms",
                  _fmt(sim.get("max_heartbeat_gap_ms")), "")
    for label, key in (("controller start, s", "control_start_s"),
                       ("suspects during start-up", "startup_suspects"),
                       ("watched, s", "duration_s")):
        if r.get(key) is not None:
            t.add_row(label, _fmt(r[key]), "")
    c, s = r.get("crashes", {}), r.get("silences", {})
    t.add_row("crashes received / injected", f"{c.get('received')} / {c.get('injected')}", "")
    t.add_row("silences confirmed / injected", f"{s.get('confirmed')} / {s.get('injected')}",
              "")
    t.add_row("heartbeat interval x misses, ms", r.get("heartbeat", "-"), "")
    return t


def run_scale_bench(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    problems = []
    if args.hosts < 3:
        problems.append("--hosts must be >= 3")
    if args.vms_per_host < 1:
        problems.append("--vms-per-host must be >= 1")
    if args.duration <= 0:
        problems.append("--duration must be > 0")
    if args.crashes < 0 or args.silences < 0:
        problems.append("--crashes and --silences must be >= 0")
    if problems:
        print("nfvha bench scale: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        defaults = Settings()
        settings = Settings(
            host_heartbeat_interval_ms=args.heartbeat_interval_ms
            or defaults.host_heartbeat_interval_ms,
            host_heartbeat_misses=args.heartbeat_misses or defaults.host_heartbeat_misses)
        plan = plan_topology(args.hosts, args.vms_per_host, settings=settings)
        bench = ScaleBench(plan, duration_s=args.duration, crashes=args.crashes,
                           silences=args.silences,
                           sims=simulator_count(args.hosts, args.sim_procs),
                           up_timeout_s=args.up_timeout, settle_s=args.settle,
                           progress=lambda m: err.print(m, highlight=False))
    except (ValueError, ValidationError) as e:
        print(f"nfvha bench scale: {e}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(bench.execute(keep_files=args.keep))
    except KeyboardInterrupt:
        bench.run.stop_now(keep_files=args.keep)
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        Console().print(results_table(result))
        for w in result.get("warnings", []):
            err.print(f"[yellow]warning:[/] {w}", highlight=False)
        if result.get("error"):
            err.print(f"[red]error:[/] {result['error']}", highlight=False)
    return 1 if result.get("error") else 0
