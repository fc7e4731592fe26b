"""``nfvha bench abuse``: the controller's API flooded while a 2N VNF serves (issue 11).

On the real test bed under the generic VNFM, the 2N VNF under test (``--vnf``, gw of
the default topology) is probed on its VIP every 5 ms (the scenario probe) from
before the first phase to the end. Faults are VNFC crashes of the other VNFs' VNFCs
(never the 2N VNF's, nor a load balancer's, nor another 2N VNF's: those are watched),
in turn; their escalation is raised so that repeated crashes stay VNFC restarts.

1. idle: ``--faults`` crashes one after another, each once the last one's VNFC is back
   in service. Detection = the stored event's ``received_mono_ns`` - the injection time
   (CLOCK_MONOTONIC: one clock machine-wide) -> ``detect_p99_idle_ms``.
2. flood, ``--duration`` seconds, from loopback (an address the intake trusts), by
   three processes of their own (``nfvha.bench.flood``): large bodies (10 MB and
   200 kB; well-formed, nested, huge numbers) to every route that takes one, hundreds
   of keep-alive connections doing cheap GETs, and slow clients trickling headers or
   bodies a byte at a time. Meanwhile the same faults again, spread over the flood ->
   ``detect_p99_ms``; the probe's longest interruption -> ``probe_outage_ms``; the
   watched VNFs (the 2N VNF and every VNF not faulted) whose service instances had no
   active at some moment, seen by the API (``/v1/availability`` every 50 ms) or at the
   components themselves (each SU asked every 20 ms) -> ``actives_lost``; how late the
   availability manager's lease grants came, as the 2N VNF's components timed them ->
   ``lease_late_max_ms``.
3. settle: ``--settle`` seconds after the flood ended, the controller's RSS (its VIM
   process and its HA director) minus before the flood -> ``rss_growth_mb``.

A failed phase does not lose what was measured: the figures so far are printed with
the error (exit status 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from nfvha.amf.model import ServiceGroup
from nfvha.bench.abuseplan import (
    AbuseOptions,
    AbusePlan,
    AbuseResult,
    bench_topology,
    make_plan,
)
from nfvha.bench.abusewatch import (
    ActiveWatch,
    AvailabilityPoll,
    WatchedVnf,
    grants_late_ms,
    rss_mb,
    sched_ms,
)
from nfvha.bench.floodprocs import FloodProcs
from nfvha.bench.stats import percentile
from nfvha.model.topology import Topology
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultError, FaultInjector
from nfvha.testbed.observe import EventWaiter, udp_request
from nfvha.testbed.probe import Outage, ServiceProbe, lost_increments, outages_after
from nfvha.util.files import read_json

READY_TIMEOUT_S = 60.0  # the deployment fully assigned, a crashed VNFC back: generous
EVENT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Crash:
    target: str
    pid: int
    injected_mono_ns: int


def _sched_share(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]],
                 wall_ns: int) -> dict[str, dict[str, float]]:
    """Per process: CPU time and time waiting for a CPU, in % of the wall time between
    the two readings (100 % = one core's worth)."""
    wall_ms = max(1.0, wall_ns / 1e6)
    return {name: {"cpu_pct": round(100 * (after[name][0] - cpu) / wall_ms, 1),
                   "runqueue_wait_pct": round(100 * (after[name][1] - wait) / wall_ms, 1)}
            for name, (cpu, wait) in before.items() if name in after}


def _p99(samples: list[float]) -> float | None:
    return round(percentile(samples, 99), 1) if samples else None


class AbuseBench:
    def __init__(self, tb: Testbed, client: httpx.AsyncClient, plan: AbusePlan,
                 opts: AbuseOptions, progress: Callable[[str], None]) -> None:
        self.tb = tb
        self.t = tb.topology
        self.client = client
        self.plan = plan
        self.opts = opts
        self.say = progress
        self.events = EventWaiter(client)
        self.faults = FaultInjector(tb.run, tb.topology)
        self.result = AbuseResult()
        self.probe: ServiceProbe | None = None
        self._crashes = 0

    # -- the deployment ------------------------------------------------------------------

    async def availability(self) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/availability")
        r.raise_for_status()
        found: list[dict[str, Any]] = r.json()
        return found

    async def _until(self, cond: Callable[[], Awaitable[bool]], what: str,
                     timeout_s: float = READY_TIMEOUT_S, interval_s: float = 0.05) -> None:
        end = time.monotonic() + timeout_s
        while not await cond():
            if time.monotonic() > end:
                raise TimeoutError(f"{what} within {timeout_s:.0f} s")
            await asyncio.sleep(interval_s)

    async def fully_assigned(self) -> bool:
        for a in await self.availability():
            spec = self.t.vnf(a["vnf"])
            standbys = 0 if spec.redundancy in ("none", "n-way-active") else 1
            if not all(u["readiness"] == "in-service" for u in a["service_units"]):
                return False
            if not all(len(si["active"]) >= 1 and len(si["standby"]) >= standbys
                       for si in a["service_instances"]):
                return False
        return True

    async def active_su(self) -> str | None:
        a = next(x for x in await self.availability() if x["vnf"] == self.plan.vnf)
        active = a["service_instances"][0]["active"]
        return str(active[0]) if active else None

    def counters(self, vnfs: list[str]) -> dict[str, tuple[str, int]]:
        """The counter components of ``vnfs`` (they answer GRANTS; an LB does not)."""
        return {c.name: self.tb.component_address(c.name) for v in vnfs
                for c in self.t.vnf(v).components if c.program == "counter"}

    def watched(self) -> list[WatchedVnf]:
        out = []
        for name in self.plan.watched:
            spec = self.t.vnf(name)
            out.append(WatchedVnf(
                name=name, request="STATS" if spec.balances is not None else "GET abuse-watch",
                n_sis=len(ServiceGroup.from_vnf(spec).sis),
                addrs=[self.tb.component_address(c.name) for c in spec.components]))
        return out

    async def prepare(self) -> None:
        """Every VNF fully assigned, the 2N VNF's standby in sync, the probe answered."""
        await self._until(self.fully_assigned, "the deployment fully assigned")
        spec = self.t.vnf(self.plan.vnf)
        if spec.state == "sync":
            async def synced() -> bool:
                su = await self.active_su()
                return su is not None and await asyncio.to_thread(
                    udp_request, self.tb.component_address(su), "SYNC", 0.2) == "SYNC up"

            await self._until(synced, f"{self.plan.vnf}'s state sync to its standby up")
        vip = self.tb.vip(self.plan.vnf)
        if vip is None:
            raise RuntimeError(f"{self.plan.vnf} has no VIP on this test bed")
        self.probe = ServiceProbe(vip, f"abuse-{self.tb.run.run_id}", stateful=spec.stateful)
        self.probe.start()
        probe = self.probe

        async def answered() -> bool:
            return any(s.reply_ns is not None for s in probe.snapshot()[-20:])

        await self._until(answered, "the probe answered", interval_s=0.01)

    # -- faults ----------------------------------------------------------------------------------

    def _running_pid(self, target: str) -> int | None:
        vm = next(c.vm for _, c in self.t.components() if c.name == target)
        with contextlib.suppress(FileNotFoundError, KeyError, ValueError, TypeError):
            rec = read_json(self.tb.run.vm_dir(vm) / "vnfcs.json")[target]
            if rec.get("state") == "running" and rec.get("pid") is not None:
                return int(rec["pid"])
        return None

    async def crash_next(self, deadline: float) -> Crash:
        """Crash the next target in turn that runs (the others may still be restarting:
        the VNFM's restarts go through the VIM, which the flood may slow down);
        TimeoutError if none runs before ``deadline`` (monotonic s)."""
        n = len(self.plan.targets)
        turn = [self.plan.targets[(self._crashes + k) % n] for k in range(n)]
        while True:
            for k, target in enumerate(turn):
                pid = self._running_pid(target)
                if pid is None:
                    continue
                with contextlib.suppress(FaultError):  # gone in between: the next one
                    inj = self.faults.inject("vnfc-crash", target)
                    self._crashes += k + 1
                    return Crash(target, pid, inj.injected_mono_ns)
            if time.monotonic() > deadline:
                raise TimeoutError(f"none of {', '.join(turn)} running again in time")
            await asyncio.sleep(0.02)

    async def detection_ms(self, crashes: list[Crash], after: int,
                           phase: str) -> list[float]:
        """Each crash's detection, from its stored event (matched by the pid killed).
        Waits up to EVENT_TIMEOUT_S for the events still missing; a crash whose event
        never comes is an error that says what was stored for its VNFC instead, and
        the others still count."""
        found: dict[Crash, dict[str, Any]] = {}
        end = time.monotonic() + EVENT_TIMEOUT_S
        while True:
            r = await self.client.get("/v1/events", params={
                "kind": "vnfc.crashed", "after": after, "limit": 2000}, timeout=60.0)
            r.raise_for_status()
            for c in crashes:
                for ev in r.json():
                    if ev["entity"] == f"vnfc/{c.target}" \
                            and (ev.get("details") or {}).get("pid") == c.pid:
                        found[c] = ev
            missing = [c for c in crashes if c not in found]
            if not missing or time.monotonic() > end:
                break
            await asyncio.sleep(0.2)
        for c in missing:
            self.result.errors.append(
                f"{phase}: no vnfc.crashed stored for {c.target} (pid {c.pid});"
                f" its events since: {await self._events_of(c.target, after)}")
        stored = [(c, found[c]) for c in crashes if c in found]
        # Where the time went: the agent's detection, then the way to the stored event
        # (the agent's stream read by the controller's loop).
        self.result.extra[f"detect_split_{phase}"] = {
            "agent_p99_ms": _p99([(ev["detected_mono_ns"] - c.injected_mono_ns) / 1e6
                                  for c, ev in stored]),
            "to_controller_p99_ms": _p99([(ev["received_mono_ns"] - ev["detected_mono_ns"])
                                          / 1e6 for c, ev in stored])}
        return [(ev["received_mono_ns"] - c.injected_mono_ns) / 1e6 for c, ev in stored]

    async def _events_of(self, vnfc: str, after: int) -> str:
        r = await self.client.get("/v1/events", params={
            "entity": f"vnfc/{vnfc}", "after": after, "limit": 50}, timeout=60.0)
        r.raise_for_status()
        return ", ".join(f"{e['kind']} pid {(e.get('details') or {}).get('pid')}"
                         f" ({e['description']})" for e in r.json()) or "none"

    async def back_in_service(self, crash: Crash) -> None:
        """The crash stored, then its VNFC restarted and in service again."""
        await self.events.wait("vnfc.crashed", f"vnfc/{crash.target}", timeout_s=EVENT_TIMEOUT_S)

        async def back() -> bool:
            pid = self._running_pid(crash.target)
            if pid is None or pid == crash.pid:
                return False
            return any(u["name"] == crash.target and u["readiness"] == "in-service"
                       for a in await self.availability() for u in a["service_units"])

        await self._until(back, f"{crash.target} back in service")

    # -- the phases ------------------------------------------------------------------------------

    async def idle_phase(self) -> None:
        self.say(f"idle: {self.opts.faults} VNFC crashes of {', '.join(self.plan.targets)}")
        gw = self.counters([self.plan.vnf])
        await asyncio.to_thread(grants_late_ms, gw, reset=True)
        start_ns = time.monotonic_ns()
        sched_before = self._sched()
        first = await self.events.sync()
        crashes = []
        for _ in range(self.opts.faults):
            await self.events.sync()  # the crash's event comes after this
            crash = await self.crash_next(time.monotonic() + READY_TIMEOUT_S)
            crashes.append(crash)
            await self.back_in_service(crash)
        self.result.extra["sched_idle"] = _sched_share(sched_before, self._sched(),
                                                       time.monotonic_ns() - start_ns)
        samples = await self.detection_ms(crashes, first, "idle")
        self.result.detect_p99_idle_ms = _p99(samples)
        self.result.extra["detect_idle_ms"] = [round(s, 1) for s in samples]
        late = await asyncio.to_thread(grants_late_ms, gw, reset=False)
        self.result.extra["lease_late_max_idle_ms"] = round(max(late.values()), 1)
        self.result.extra["probe_outage_idle_ms"] = self._outage_ms(start_ns,
                                                                    time.monotonic_ns())

    def _outages(self, start_ns: int, end_ns: int) -> list[Outage]:
        """The probe's interruptions between ``start_ns`` and ``end_ns``, longest first."""
        assert self.probe is not None
        window = [s for s in self.probe.snapshot() if start_ns <= s.sent_ns <= end_ns]
        return sorted(outages_after(window, start_ns), key=lambda o: -o.ms)

    def _outage_ms(self, start_ns: int, end_ns: int) -> float:
        return round(max((o.ms for o in self._outages(start_ns, end_ns)), default=0.0), 1)

    async def some_alarm(self) -> str:
        """An alarm that exists, for the flood's PATCH (the idle phase raised some)."""
        r = await self.client.get("/vnffm/v1/alarms")
        r.raise_for_status()
        alarms = r.json()
        return str(alarms[0]["id"]) if alarms else "no-such-alarm"

    def _rss(self) -> float:
        d = self.tb.run.controller_dir
        return rss_mb([d / "controller.pid", d / "director.pid"])

    def _front_rss(self) -> float | None:
        """The API front's (ADR 0014), apart: not the controller's, but bounded too."""
        front = self.tb.run.controller_dir / "front.pid"
        return rss_mb([front]) if front.exists() else None

    def _sched(self) -> dict[str, tuple[float, float]]:
        """CPU and run-queue wait so far of the controller's processes (its API front
        too, if it has one) and the 2N VNF's components (their main threads: the event
        loops)."""
        pids = {}
        for name in ("controller", "director", "front"):
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                pids[name] = int(read_json(self.tb.run.controller_dir / f"{name}.pid")["pid"])
        for c in self.t.vnf(self.plan.vnf).components:
            if (pid := self._running_pid(c.name)) is not None:
                pids[c.name] = pid
        out = {}
        for name, pid in pids.items():
            with contextlib.suppress(OSError, ValueError):
                out[name] = sched_ms(pid)
        return out

    async def flood_phase(self, floods: FloodProcs) -> None:
        o = self.opts
        await self._until(self.fully_assigned, "the deployment fully assigned again")
        alarm = await self.some_alarm()
        gw = self.counters([self.plan.vnf])
        rss_before = await asyncio.to_thread(self._rss)
        self.result.extra["rss_before_mb"] = round(rss_before, 1)
        front_before = await asyncio.to_thread(self._front_rss)
        first = await self.events.sync()
        await asyncio.to_thread(grants_late_ms, gw, reset=True)

        watch = ActiveWatch(self.watched())
        stop = asyncio.Event()
        crashes: list[Crash] = []
        failed: BaseException | None = None
        start_ns: int | None = None
        sched_before: dict[str, tuple[float, float]] = {}
        flood_cpu_ns: int | None = None
        async with httpx.AsyncClient(base_url=self.tb.api_url, headers=self.tb.headers,
                                     timeout=10.0) as poll_client:
            poll = AvailabilityPoll(poll_client, self.plan.watched)
            watch.start()
            watchers = [asyncio.create_task(poll.run(stop)),
                        asyncio.create_task(self._rss_peak(stop))]
            # The flood processes end by themselves a little after the bench stops them.
            own = o.duration_s + 30.0
            sizes = ",".join(str(s) for s in o.sizes)
            self.say(f"flood: {o.duration_s:g} s; {o.body_workers} body senders,"
                     f" {o.connections} connections, {o.slow} slow clients")
            try:
                await floods.start("bodies", "bodies", own, o.body_workers,
                                   ["--alarm", alarm, "--sizes", sizes])
                await floods.start("connections", "connections", own, o.connections, [])
                await floods.start("slow", "slow", own, o.slow, [])
                flood_cpu_ns = floods.cpu_ns()
                start_ns = time.monotonic_ns()
                sched_before = self._sched()
                await self._flood_faults(start_ns, floods, crashes)
            except Exception as e:  # what was measured until then still counts
                failed = e
            finally:
                end_ns = time.monotonic_ns()
                sched_after = self._sched()
                await floods.stop()
                stop.set()
                watch.stop()
                peaks = await asyncio.gather(*watchers, return_exceptions=True)
        if start_ns is None:
            raise failed or RuntimeError("the flood did not start")
        r = self.result
        r.extra["flood_s"] = round((end_ns - start_ns) / 1e9, 1)
        # Wall-clock time of the flood's start, to find it in the run's logs.
        r.extra["flood_started"] = round(time.time() - (time.monotonic_ns() - start_ns) / 1e9, 3)
        r.probe_outage_ms = self._outage_ms(start_ns, end_ns)
        # The longest few: when in the flood (s after its start) and how long (ms).
        r.extra["faults_at"] = [[round((c.injected_mono_ns - start_ns) / 1e9, 2), c.target]
                                for c in crashes]
        r.extra["probe_outages"] = [[round((o.start_ns - start_ns) / 1e9, 2), round(o.ms, 1)]
                                    for o in self._outages(start_ns, end_ns)[:5]]
        r.extra["sched_flood"] = _sched_share(sched_before, sched_after, end_ns - start_ns)
        if flood_cpu_ns is not None and (used := floods.cpu_ns()) is not None:
            r.extra["flood_cpu_pct"] = round(100 * (used - flood_cpu_ns) / (end_ns - start_ns), 1)
        self._actives(watch, poll)
        if isinstance(peaks[1], float):
            r.extra["rss_peak_mb"] = round(peaks[1], 1)
        with self.measuring("flood: lease lateness"):
            late = await asyncio.to_thread(grants_late_ms, gw, reset=False)
            r.lease_late_max_ms = round(max(late.values()), 1)
            r.extra["lease_late_ms"] = {k: round(v, 1) for k, v in late.items()}

        self.say(f"settle: {o.settle_s:g} s")
        await asyncio.sleep(o.settle_s)
        with self.measuring("flood: controller RSS"):
            rss_after = await asyncio.to_thread(self._rss)
            r.extra["rss_after_mb"] = round(rss_after, 1)
            r.rss_growth_mb = round(rss_after - rss_before, 1)
            front_after = await asyncio.to_thread(self._front_rss)
            if front_before is not None and front_after is not None:
                r.extra["front_rss_growth_mb"] = round(front_after - front_before, 1)
        with self.measuring("flood: detection"):
            samples = await self.detection_ms(crashes, first, "flood")
            r.detect_p99_ms = _p99(samples)
            r.extra["detect_ms"] = [round(s, 1) for s in samples]
        if failed is not None:
            raise failed

    @contextlib.contextmanager
    def measuring(self, what: str) -> Iterator[None]:
        """One measurement: its failure is recorded, and the next one is still taken."""
        try:
            yield
        except Exception as e:
            self.result.errors.append(f"{what}: {type(e).__name__}: {e}")
            self.say(f"{what} failed: {e}")

    async def _flood_faults(self, start_ns: int, floods: FloodProcs,
                            crashes: list[Crash]) -> None:
        """The faults, one per slot of the flood (into ``crashes``); then the rest of
        the flood."""
        o = self.opts
        slot_s = o.duration_s / max(1, o.faults)
        start = start_ns / 1e9
        for i in range(o.faults):
            await self._sleep_until(start + (i + 0.5) * slot_s, floods)
            try:
                crashes.append(await self.crash_next(start + (i + 1.5) * slot_s))
            except TimeoutError as e:
                self.result.errors.append(f"flood: fault {i + 1}: {e}")
        await self._sleep_until(start + o.duration_s, floods)

    async def _sleep_until(self, when_s: float, floods: FloodProcs) -> None:
        while (left := when_s - time.monotonic()) > 0:
            if len(floods.running()) < len(floods.started):
                gone = set(floods.started) - set(floods.running())
                raise RuntimeError(f"flood process(es) {', '.join(sorted(gone))} ended early;"
                                   f" see {floods.dir}")
            await asyncio.sleep(min(left, 0.2))

    async def _rss_peak(self, stop: asyncio.Event) -> float:
        peak = 0.0
        while not stop.is_set():
            with contextlib.suppress(RuntimeError, OSError, ValueError, KeyError):
                peak = max(peak, await asyncio.to_thread(self._rss))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
        return peak

    def _actives(self, watch: ActiveWatch, poll: AvailabilityPoll) -> None:
        at_components = {n for n, s in watch.seen.items() if s.lost}
        at_api = set(poll.lost)
        lost = at_components | at_api
        self.result.actives_lost = len(lost)
        self.result.extra["actives_lost_vnfs"] = {
            n: "both" if n in at_components and n in at_api
            else "components" if n in at_components else "api" for n in sorted(lost)}
        self.result.extra["watched_vnfs"] = self.plan.watched
        self.result.extra["component_watch"] = watch.summary()
        self.result.extra["availability_poll"] = poll.summary()

    def finish_probe(self) -> None:
        if self.probe is None:
            return
        self.probe.stop()
        samples = self.probe.snapshot()
        self.result.extra["probe_requests"] = len(samples)
        self.result.extra["probe_failed"] = sum(1 for s in samples if s.reply_ns is None)
        if self.t.vnf(self.plan.vnf).stateful:
            self.result.extra["state_lost"] = lost_increments(samples)


async def bench(topology: Topology, opts: AbuseOptions,
                progress: Callable[[str], None]) -> AbuseResult:
    plan = make_plan(topology, opts.vnf)
    tb = Testbed(bench_topology(topology, plan))
    progress(f"deploying run {tb.run.run_id}")
    await tb.start()
    result = AbuseResult()
    floods = FloodProcs(tb, cpu_cores=opts.flood_cpu or None)
    try:
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=30.0,
                                     headers=tb.headers) as client:
            b = AbuseBench(tb, client, plan, opts, progress)
            result = b.result
            result.extra["run_id"] = tb.run.run_id
            result.extra["targets"] = plan.targets
            result.extra["mode"] = "netns" if tb.namespaced else "loopback"
            try:
                await b.prepare()
                for name, phase in (("idle", b.idle_phase),
                                    ("flood", lambda: b.flood_phase(floods))):
                    with b.measuring(name):
                        await phase()
            except (TimeoutError, httpx.HTTPError, RuntimeError) as e:
                result.errors.append(f"prepare: {type(e).__name__}: {e}")
            finally:
                b.finish_probe()
    finally:
        await floods.stop()
        if floods.started:
            result.extra["flood"] = floods.stats()
        await asyncio.to_thread(tb.down)
    return result
