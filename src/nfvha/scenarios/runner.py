"""``nfvha scenario run``: the use cases, injected for real on the test bed and
measured on one clock (CLOCK_MONOTONIC).

Per run: detection (fault -> the event at the controller), notification (fault ->
a webhook subscriber received the alarm), service outage (a probe hitting the
service every 5 ms), state lost (acknowledged counter increments the service
forgot), restored (fault -> the VNF's service instances fully assigned again) and
double-active observations (every 20 ms each SU of the VNF is asked whether it
serves; two at once for a single-active SI is one observation).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from nfvha.bench.alarms import ReceiverProcess
from nfvha.bench.stats import percentile
from nfvha.model.topology import Topology, VnfSpec
from nfvha.scenarios.probe import ServiceProbe, lost_increments, outage_after
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultError, FaultInjector
from nfvha.testbed.observe import EventWaiter, udp_request

# SAL-1: the recovery-time thresholds of service availability levels 1/2/3 (the lower
# end of each range, so "met" is never generous).
SAL_THRESHOLD_MS = {1: 5_000.0, 2: 10_000.0, 3: 20_000.0}
RESTORE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Scenario:
    name: str
    vnf: str
    fault: str  # a FaultInjector kind
    target: str  # "vnfc" | "vm" | "host": of the SU active at injection
    event: str  # the event kind whose arrival is "detected"
    what: str
    repeat_fault: int = 1  # UC-9: the same fault this often in a row
    expect: str | None = None  # "<event kind>:vm" that must follow (the recovery asked for)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("UC-1", "gw", "vnfc-crash", "vnfc", "vnfc.crashed",
             "2N stateful (sync), active VNFC crash"),
    Scenario("UC-2", "gw", "vm-crash", "vm", "vm.crashed",
             "2N stateful, active VM crash: VNF failover, VIM repair"),
    Scenario("vm-hang", "gw", "vm-hang", "vm", "vm.hung",
             "2N stateful, active VM hang: isolated (stopped), failover, repair"),
    Scenario("UC-3", "db", "vnfc-crash", "vnfc", "vnfc.crashed",
             "no redundancy, stateful (checkpoint), VNFC crash: restart from checkpoint"),
    Scenario("UC-4", "db", "vm-crash", "vm", "vm.crashed",
             "no redundancy, stateful, VM crash: VM repaired, VNFC from checkpoint"),
    Scenario("UC-9", "gw", "vnfc-crash", "vnfc", "vnfc.crashed",
             "repeated VNFC crash: escalation to a VM repair", repeat_fault=4,
             expect="vm.stopped:vm"),
    Scenario("host-down", "gw", "host-down", "host", "host.down",
             "2N, host of the active powered off: fenced, failover"),
    Scenario("agent-crash", "gw", "agent-crash", "host", "agent.lost",
             "2N, host agent of the active killed: no service impact"),
    Scenario("link-down", "gw", "link-down", "host", "link.down",
             "2N, data link of the active's host cut: lease expiry, failover"),
)}


@dataclass
class RunResult:
    detection_ms: float | None
    notification_ms: float | None
    outage_ms: float
    state_lost: int
    restored_ms: float | None
    double_active: int


@dataclass
class ScenarioReport:
    scenario: str
    what: str
    sal: int
    runs: list[RunResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def p(values: list[float | None], q: float) -> float | None:
            vs = [v for v in values if v is not None]
            return round(percentile(vs, q), 1) if vs else None

        outages = [r.outage_ms for r in self.runs]
        outage_p99 = p(list(outages), 99)
        restored = [r.restored_ms for r in self.runs]
        return {
            "scenario": self.scenario, "runs": len(self.runs),
            "detection_p99_ms": p([r.detection_ms for r in self.runs], 99),
            "notification_p99_ms": p([r.notification_ms for r in self.runs], 99),
            "outage_p50_ms": p(list(outages), 50), "outage_p99_ms": outage_p99,
            "state_lost": sum(r.state_lost for r in self.runs),
            "restored_p99_ms": p(restored, 99) if all(x is not None for x in restored)
            else None,
            "sal_met": bool(self.runs) and not self.errors and outage_p99 is not None
            and outage_p99 < SAL_THRESHOLD_MS[self.sal],
            "double_active": sum(r.double_active for r in self.runs),
            "errors": self.errors,
        }


async def _poll(cond: Callable[[], Awaitable[bool]], timeout_s: float, what: str,
                interval_s: float = 0.02) -> None:
    """Until ``cond`` holds; ``TimeoutError(what)`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > end:
            raise TimeoutError(f"{what} within {timeout_s} s")
        await asyncio.sleep(interval_s)


class ScenarioRunner:
    def __init__(self, tb: Testbed, client: httpx.AsyncClient, rx: ReceiverProcess) -> None:
        self.tb = tb
        self.topology: Topology = tb.topology
        self.client = client
        self.rx = rx
        self.events = EventWaiter(client)
        self.faults = FaultInjector(tb.run, tb.topology)
        self._sessions = 0

    def _vnf(self, name: str) -> VnfSpec:
        return next(v for v in self.topology.vnfs if v.name == name)

    async def availability(self, vnf: str) -> dict[str, Any]:
        r = await self.client.get("/v1/availability")
        r.raise_for_status()
        return next(a for a in r.json() if a["vnf"] == vnf)

    async def fully_assigned(self, vnf: str) -> bool:
        spec = self._vnf(vnf)
        a = await self.availability(vnf)
        standbys = 0 if spec.redundancy in ("none", "n-way-active") else 1
        ready = all(u["readiness"] == "in-service" for u in a["service_units"])
        return ready and all(len(si["active"]) >= 1 and len(si["standby"]) >= standbys
                             for si in a["service_instances"])

    async def wait_restored(self, vnf: str, timeout_s: float = RESTORE_TIMEOUT_S) -> int:
        """Poll until the VNF is fully assigned again; return when (mono ns)."""
        await _poll(lambda: self.fully_assigned(vnf), timeout_s,
                    f"{vnf} not fully assigned again")
        return time.monotonic_ns()

    def service_address(self, vnf: str) -> tuple[str, int]:
        vip = self.tb.vip(vnf)
        if vip is not None:
            return vip
        comp = self._vnf(vnf).components[0]
        return self.tb.vm_address(comp.vm)

    async def active_su(self, vnf: str, timeout_s: float = 20.0) -> str:
        """The SU active for the VNF's (first) SI, once there is one."""
        active: list[str] = []

        async def found() -> bool:
            active[:] = (await self.availability(vnf))["service_instances"][0]["active"]
            return bool(active)

        await _poll(found, timeout_s, f"{vnf} has no active")
        return str(active[0])

    def _target(self, scenario: Scenario, su: str) -> str:
        comp = next(c for c in self._vnf(scenario.vnf).components if c.name == su)
        if scenario.target == "vnfc":
            return su
        if scenario.target == "vm":
            return comp.vm
        return self.topology.vm(comp.vm).host

    def _component_addresses(self, vnf: str) -> list[tuple[str, int]]:
        return [self.tb.vm_address(c.vm) for c in self._vnf(vnf).components]

    async def _watch_double_active(self, vnf: str, stop: asyncio.Event) -> int:
        """Ask every SU whether it serves (GET answers only on an active)."""
        if self._vnf(vnf).redundancy == "n-way-active":
            return 0
        addrs = self._component_addresses(vnf)
        seen = 0
        while not stop.is_set():
            answers = await asyncio.gather(*(asyncio.to_thread(udp_request, a, "GET dbl", 0.05)
                                             for a in addrs))
            if sum(1 for x in answers if x is not None and x.startswith("VAL")) > 1:
                seen += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
        return seen

    async def run_once(self, scenario: Scenario) -> RunResult:
        vnf = scenario.vnf
        await self.wait_restored(vnf)
        spec = self._vnf(vnf)
        self._sessions += 1
        probe = ServiceProbe(self.service_address(vnf), f"{scenario.name}-{self._sessions}",
                             stateful=spec.stateful)
        probe.start()
        stop_watch = asyncio.Event()
        watcher = asyncio.create_task(self._watch_double_active(vnf, stop_watch))
        try:
            await self._wait_probe_serving(probe)
            su = await self.active_su(vnf)
            target = self._target(scenario, su)
            synced = await self.events.sync()
            entity = {"vnfc": f"vnfc/{target}", "vm": f"vm/{target}",
                      "host": f"host/{target}"}[scenario.target]
            fault_ns = 0
            for i in range(scenario.repeat_fault):
                if i:
                    await self._wait_probe_serving(probe, since_ns=time.monotonic_ns())
                    await self._wait_component_back(vnf, su)
                inj = self.faults.inject(scenario.fault, target)
                fault_ns = fault_ns or inj.injected_mono_ns
                detected = await self.events.wait(scenario.event, entity, timeout_s=20)
                self.events.after = int(detected["id"])
            if scenario.expect is not None:
                # The recovery the scenario is about (UC-9: escalated to a VM repair).
                kind, _, level = scenario.expect.partition(":")
                comp = next(c for c in spec.components if c.name == su)
                await self.events.wait(kind, f"vm/{comp.vm}" if level == "vm" else entity,
                                       timeout_s=20, after=synced)
            detection_ms = (detected["received_mono_ns"] - inj.injected_mono_ns) / 1e6
            notification_ms = await self._notification_ms(inj.injected_mono_ns, su, target,
                                                          scenario)
            await self._after_fault(scenario, target, su)
            restored_ns = await self.wait_restored(vnf)
            await self._wait_probe_serving(probe, since_ns=restored_ns)
        finally:
            probe.stop()
            stop_watch.set()
            double = await watcher
        outage = outage_after(probe.snapshot(), fault_ns)
        return RunResult(
            detection_ms=round(detection_ms, 2),
            notification_ms=notification_ms,
            outage_ms=round(outage.ms, 2) if outage else 0.0,
            state_lost=lost_increments(probe.snapshot()) if spec.stateful else 0,
            restored_ms=round((restored_ns - fault_ns) / 1e6, 1),
            double_active=double)

    async def _wait_active_moved(self, vnf: str, old: str, timeout_s: float = 10.0) -> None:
        async def moved() -> bool:
            return await self.active_su(vnf) != old

        await _poll(moved, timeout_s, f"the active of {vnf} stayed on {old}")

    async def _after_fault(self, scenario: Scenario, target: str, su: str) -> None:
        """What an operator (or the VIM's host repair, not built yet) does to bring the
        infrastructure back; the VNF's own recovery is what is measured."""
        if scenario.fault == "host-down":
            self.faults.inject("host-up", target)
            await self._start_vms_of(target)
        elif scenario.fault == "link-down":
            # Cut off, the active's lease runs out and the standby takes over; the link
            # comes back only then, or the scenario would measure a blip.
            await self._wait_active_moved(scenario.vnf, su)
            self.faults.inject("link-up", target)
        elif scenario.fault == "agent-crash":
            await self.events.wait("agent.connected", f"host/{target}", timeout_s=20)

    async def _start_vms_of(self, host: str) -> None:
        end = time.monotonic() + 20
        for vm in self.topology.vms_on(host):
            while True:
                r = await self.client.post(f"/v1/vms/{vm.name}/start")
                if r.status_code < 300 or time.monotonic() > end:
                    break
                await asyncio.sleep(0.2)  # the host's agent is still booting

    async def _wait_component_back(self, vnf: str, su: str) -> None:
        async def back() -> bool:
            a = await self.availability(vnf)
            return any(u["name"] == su and u["readiness"] == "in-service"
                       for u in a["service_units"])

        await _poll(back, 20, f"{su} did not come back")

    async def _wait_probe_serving(self, probe: ServiceProbe, since_ns: int = 0,
                                  timeout_s: float = 20.0) -> None:
        async def answered() -> bool:
            return any(s.reply_ns is not None and s.sent_ns >= since_ns
                       for s in probe.snapshot()[-20:])

        await _poll(answered, timeout_s, "the service did not answer the probe", 0.01)

    async def _notification_ms(self, fault_ns: int, su: str, target: str,
                               scenario: Scenario) -> float | None:
        resources = {f"vnfc/{su}", f"vm/{target}", f"host/{target}"}

        def arrived() -> bool:
            return any(x.ns > fault_ns and x.resource in resources
                       and x.kind == "AlarmNotification" for x in self.rx.got)

        if scenario.fault == "agent-crash":
            return None  # an agent crash is reported (MW-2) but raises no alarm here
        try:
            await self.rx.wait_until(arrived, 10)
        except TimeoutError:
            return None
        got = min(x.ns for x in self.rx.got if x.ns > fault_ns and x.resource in resources
                  and x.kind == "AlarmNotification")
        return round((got - fault_ns) / 1e6, 2)

    async def run(self, scenario: Scenario, repeat: int,
                  progress: Callable[[str], None]) -> ScenarioReport:
        report = ScenarioReport(scenario.name, scenario.what, self._vnf(scenario.vnf).sal)
        for i in range(repeat):
            try:
                report.runs.append(await self.run_once(scenario))
                progress(f"{scenario.name} run {i + 1}/{repeat}: {report.runs[-1]}")
            except (TimeoutError, httpx.HTTPError, RuntimeError, FaultError) as e:
                report.errors.append(f"run {i + 1}: {e}")
                progress(f"{scenario.name} run {i + 1}/{repeat} failed: {e}")
                break
        return report


async def run_scenarios(topology: Topology, names: list[str], repeat: int,
                        progress: Callable[[str], None]) -> list[dict[str, Any]]:
    rx = ReceiverProcess()
    [port] = await rx.start(1)
    tb = Testbed(topology)
    await tb.start()
    out: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=30,
                                     headers=tb.headers) as c:
            (await c.post("/vnffm/v1/subscriptions",
                          json={"callbackUri": f"http://127.0.0.1:{port}/n"})
             ).raise_for_status()
            runner = ScenarioRunner(tb, c, rx)
            for name in names:
                report = await runner.run(SCENARIOS[name], repeat, progress)
                out.append(report.summary())
    finally:
        await asyncio.to_thread(tb.down)
        await rx.close()
    return out


def expand(names: list[str]) -> list[str]:
    """``all`` and scenario names, validated; unknown names are an error that lists
    the valid ones."""
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(x for x in SCENARIOS if x not in out)
        elif n in SCENARIOS:
            if n not in out:
                out.append(n)
        else:
            raise ValueError(f"unknown scenario '{n}'; valid: all, {', '.join(SCENARIOS)}")
    return out
