"""``nfvha scenario run``: the use cases, injected for real on the test bed and
measured on one clock (CLOCK_MONOTONIC).

Per run: detection (fault -> the event at the controller), notification (fault ->
a webhook subscriber received the alarm), service outage (a probe hitting the
service every 5 ms), failed requests (the probe's requests without an answer, in %
of those sent from the fault until the service answered after restoration), state
lost (acknowledged counter increments the service forgot; not applicable, None, for
a stateless VNF), restored (fault -> the VNF's service instances fully assigned
again) and double-active observations (every 20 ms each SU of the VNF is asked
whether it serves; more serving than the VNF has service instances, seen in two
rounds in a row, is one observation: several actives of an active/active VNF are no
violation, and neither are the N actives of N+M; a load balancer pair in front is
watched too).

A VNF whose service address is of kind ``lb`` is probed through its load balancer's
VIP (IF-2).

The failover path, stage by stage (each in ms from the fault, all on CLOCK_MONOTONIC,
one clock machine-wide; None where a stage was not measured): ``detect_ms`` the agent
(or the guest, for a VNFC) saw the failure (the event's ``detected_mono_ns``);
``decide_ms`` the availability manager decided the record that made the new active
(``decided_mono_ns`` of that epoch in ``/v1/availability``); ``order_ms`` the new
active received its order and ``vip_ms`` it had configured the VIP and sent the first
gratuitous ARP (the component says, asked ``TIMES``); ``first_answer_ms`` the probe's
first answer after the fault (the end of the first interruption). The timestamps come
from the processes that act, never from the store in between, so they stay valid
whichever path carries the failure to the availability manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from nfvha.amf.model import ServiceGroup
from nfvha.bench.alarms import ReceiverProcess
from nfvha.bench.stats import percentile
from nfvha.model.topology import SAL_RECOVERY_MS, Topology, VnfSpec
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FaultError, FaultInjector
from nfvha.testbed.observe import EventWaiter, serving_round, udp_request
from nfvha.testbed.probe import (
    Sample,
    ServiceProbe,
    first_answer_after,
    lost_increments,
    outage_after,
)

SAL_THRESHOLD_MS = SAL_RECOVERY_MS
RESTORE_TIMEOUT_S = 30.0
# The failover path's stages, in the order they happen (``<stage>_ms`` from the fault).
STAGES = ("detect", "decide", "order", "vip", "first_answer")


@dataclass(frozen=True)
class Scenario:
    name: str
    vnf: str
    fault: str  # a FaultInjector kind
    target: str  # "vnfc" | "vm" | "host": of the SU active at injection
    event: str  # the event kind whose arrival is "detected"
    what: str
    repeat_fault: int = 1  # UC-9: the same fault this often in a row
    # "<event kind>:vm|host" that must follow (the recovery asked for); "a|b": either.
    expect: str | None = None


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
    Scenario("UC-5", "web", "vnfc-crash", "vnfc", "vnfc.crashed",
             "N+M stateless behind a load balancer, active VNFC crash: the LB excludes it,"
             " the spare takes over"),
    Scenario("UC-6", "web", "vm-crash", "vm", "vm.crashed",
             "N+M stateless behind a load balancer, active VM crash: spare takes over,"
             " VIM repair"),
    Scenario("UC-7", "dns", "vnfc-crash", "vnfc", "vnfc.crashed",
             "no redundancy, stateless, VNFC crash: restart"),
    Scenario("UC-8", "dns", "vm-crash", "vm", "vm.crashed",
             "no redundancy, stateless, VM crash: VM repaired, VNFC restarted"),
    Scenario("lb-crash", "web-lb", "vnfc-crash", "vnfc", "vnfc.crashed",
             "the active load balancer of web crashes: the standby LB takes the VIP"),
    Scenario("UC-9", "gw", "vnfc-crash", "vnfc", "vnfc.crashed",
             "repeated VNFC crash: escalation to a VM repair (a host repair once VM"
             " repairs escalate too)", repeat_fault=4,
             expect="vm.stopped:vm|host.repair_started:host"),
    Scenario("host-down", "gw", "host-down", "host", "host.down",
             "2N, host of the active powered off: fenced, failover"),
    Scenario("agent-crash", "gw", "agent-crash", "host", "agent.lost",
             "2N, host agent of the active killed: no service impact"),
    Scenario("link-down", "gw", "link-down", "host", "link.down",
             "2N, data link of the active's host cut: lease expiry, failover"),
)}

# The randomized fault run (``random``): every scenario of one fault, so the VNF's
# escalation does not turn a random sequence into host repairs; UC-9 is the
# escalation's own scenario.
RANDOM_POOL = tuple(n for n, s in SCENARIOS.items() if s.repeat_fault == 1)


@dataclass
class RunResult:
    detection_ms: float | None
    notification_ms: float | None
    outage_ms: float
    state_lost: int | None  # None: a stateless VNF has no state to lose
    restored_ms: float | None
    double_active: int
    failed: int = 0  # probe requests without an answer, in the fault window
    sent: int = 0  # probe requests sent in the fault window
    # The failover path, each in ms from the fault (module docstring); None: not measured.
    detect_ms: float | None = None
    decide_ms: float | None = None
    order_ms: float | None = None
    vip_ms: float | None = None
    first_answer_ms: float | None = None

    @property
    def failed_pct(self) -> float:
        return round(100 * self.failed / self.sent, 2) if self.sent else 0.0

    def stage_ms(self, stage: str) -> float | None:
        value: float | None = getattr(self, f"{stage}_ms")
        return value


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
        lost = [r.state_lost for r in self.runs if r.state_lost is not None]
        sent = sum(r.sent for r in self.runs)
        return {
            "scenario": self.scenario, "runs": len(self.runs),
            "detection_p99_ms": p([r.detection_ms for r in self.runs], 99),
            "notification_p99_ms": p([r.notification_ms for r in self.runs], 99),
            "outage_p50_ms": p(list(outages), 50), "outage_p99_ms": outage_p99,
            "state_lost": sum(lost) if lost or not self.runs else None,
            "restored_p99_ms": p(restored, 99) if all(x is not None for x in restored)
            else None,
            "sal_met": bool(self.runs) and not self.errors and outage_p99 is not None
            and outage_p99 < SAL_THRESHOLD_MS[self.sal],
            "double_active": sum(r.double_active for r in self.runs),
            # All runs' fault windows pooled, and the worst run.
            "failed_pct": round(100 * sum(r.failed for r in self.runs) / sent, 2)
            if sent else None,
            "failed_max_pct": max((r.failed_pct for r in self.runs), default=None),
            **{f"{stage}_{q}_ms": p([r.stage_ms(stage) for r in self.runs], n)
               for stage in STAGES for q, n in (("p50", 50), ("p99", 99))},
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
        # (si, epoch) -> when the AM decided that record, as /v1/availability said.
        self._decided: dict[tuple[str, int], int] = {}

    def _vnf(self, name: str) -> VnfSpec:
        return next(v for v in self.topology.vnfs if v.name == name)

    async def availability(self, vnf: str) -> dict[str, Any]:
        r = await self.client.get("/v1/availability")
        r.raise_for_status()
        found: dict[str, Any] = next(a for a in r.json() if a["vnf"] == vnf)
        for si in found["service_instances"]:
            # Kept: a record's decision time is shown only while it is the current one.
            if si.get("decided_mono_ns") is not None:
                self._decided[(si["si"], si["epoch"])] = int(si["decided_mono_ns"])
        return found

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
        """The VNF's VIP, its load balancer's VIP (kind ``lb``), or its first VNFC."""
        lb = self.topology.balancer_of(vnf)
        vip = self.tb.vip(lb.name if lb is not None else vnf)
        if vip is not None:
            return vip
        return self.tb.component_address(self._vnf(vnf).components[0].name)

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
        return self.faults.host_of(comp.vm)  # evacuations move VMs (ADR 0011)

    def _component_addresses(self, vnf: str) -> list[tuple[str, int]]:
        return [self.tb.component_address(c.name) for c in self._vnf(vnf).components]

    def _watched(self, vnf: str) -> list[tuple[str, int, list[tuple[str, int]]]]:
        """(request, most SUs allowed to serve at once, SU addresses) per watched VNF:
        an SU holds at most one active, so a single-active VNF never has more serving
        SUs than service instances; ``n-way-active`` is not watched (all serve)."""
        out = []
        spec = self._vnf(vnf)
        if spec.redundancy != "n-way-active":
            n_sis = len(ServiceGroup.from_vnf(spec).sis)
            request = "STATS" if spec.balances is not None else "GET dbl"
            out.append((request, n_sis, self._component_addresses(vnf)))
        lb = self.topology.balancer_of(vnf)
        if lb is not None:  # the LB's own answer: its role (a standby forwards nothing)
            out.append(("STATS", 1, self._component_addresses(lb.name)))
        return out

    async def _watch_double_active(self, vnf: str, stop: asyncio.Event) -> int:
        """Ask every SU whether it serves (GET answers only on an active counter;
        STATS says an LB's role). The answers of one round are some milliseconds apart,
        so a handover between them (an N+M spare promoted 4 ms after a crash) looks
        like one serving too many: an over-count is one observation only if a second
        round, sent at once, sees it too."""
        watched = self._watched(vnf)
        if not watched:
            return 0
        seen = 0
        while not stop.is_set():
            for request, allowed, addrs in watched:
                for _ in range(2):
                    if (await asyncio.to_thread(serving_round, addrs, request, 0.05))[0] <= allowed:
                        break
                else:
                    seen += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
        return seen

    async def run_once(self, scenario: Scenario) -> RunResult:
        vnf = scenario.vnf
        lb = self.topology.balancer_of(vnf)
        for v in (vnf, *([lb.name] if lb is not None else [])):
            await self.wait_restored(v)
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
            if spec.state == "sync":
                await self._wait_synced(su)
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
                if scenario.repeat_fault == 1:
                    await self.availability(vnf)  # the failover's record, while current
            if scenario.expect is not None:
                # The recovery the scenario is about (UC-9: escalated to a VM repair,
                # or - repeated within the VM repairs' probation - to a host repair).
                comp = next(c for c in spec.components if c.name == su)
                wanted = []
                for alt in scenario.expect.split("|"):
                    kind, _, level = alt.partition(":")
                    wanted.append((kind, {"vm": f"vm/{comp.vm}",
                                          "host": f"host/{self.faults.host_of(comp.vm)}"
                                          }.get(level, entity)))
                await self._wait_any(wanted, timeout_s=20, after=synced)
            detection_ms = (detected["received_mono_ns"] - inj.injected_mono_ns) / 1e6
            notification_ms = await self._notification_ms(inj.injected_mono_ns, su, target,
                                                          scenario)
            await self._after_fault(scenario, target, su)
            restored_ns = await self.wait_restored(vnf)
            await self._wait_probe_serving(probe, since_ns=restored_ns)
            served_ns = time.monotonic_ns()
        finally:
            probe.stop()
            stop_watch.set()
            double = await watcher
        samples = probe.snapshot()
        outage = outage_after(samples, fault_ns)
        window = [s for s in samples if fault_ns <= s.sent_ns <= served_ns]
        stages = (await self._stages(vnf, fault_ns, int(detected["detected_mono_ns"]), samples)
                  if scenario.repeat_fault == 1 else {})
        return RunResult(
            detection_ms=round(detection_ms, 2),
            notification_ms=notification_ms,
            outage_ms=round(outage.ms, 2) if outage else 0.0,
            state_lost=lost_increments(samples) if spec.stateful else None,
            restored_ms=round((restored_ns - fault_ns) / 1e6, 1),
            double_active=double,
            failed=sum(1 for s in window if s.reply_ns is None), sent=len(window),
            **stages)

    async def _stages(self, vnf: str, fault_ns: int, detected_ns: int,
                      samples: list[Sample]) -> dict[str, float | None]:
        """The failover path of one run, stage by stage (module docstring): the active
        of the VNF's first SI now says when it took the role, at which epoch; the AM's
        decision of that epoch was seen in /v1/availability."""
        decided_ns = order_ns = vip_ns = None
        si = (await self.availability(vnf))["service_instances"][0]
        if si["active"]:
            addr = self.tb.component_address(si["active"][0])
            took = _active_times(await asyncio.to_thread(udp_request, addr, "TIMES", 0.5),
                                 si["si"])
            order_ns = took.get("order_mono_ns")
            if order_ns is not None and order_ns >= fault_ns:  # this fault's failover
                vip_ns = took.get("vip_mono_ns")
                epoch = took.get("epoch")
                decided_ns = None if epoch is None else self._decided.get((si["si"], epoch))
            else:
                order_ns = None

        def ms(ns: int | None) -> float | None:
            return None if ns is None else round((ns - fault_ns) / 1e6, 2)

        return {"detect_ms": ms(detected_ns), "decide_ms": ms(decided_ns),
                "order_ms": ms(order_ns), "vip_ms": ms(vip_ns),
                "first_answer_ms": ms(first_answer_after(samples, fault_ns))}

    async def _wait_synced(self, su: str, timeout_s: float = 10.0) -> None:
        """Until the active's standby holds its full state: assigned is not yet redundant
        (the standby may still be starting its sync listener), and a fault before that
        loses what the model does not promise to keep."""
        addr = self.tb.component_address(su)

        async def synced() -> bool:
            return await asyncio.to_thread(udp_request, addr, "SYNC", 0.2) == "SYNC up"

        await _poll(synced, timeout_s, f"{su}'s state sync to its standby up")

    async def _wait_any(self, wanted: list[tuple[str, str]], timeout_s: float,
                        after: int) -> dict[str, Any]:
        """The first of several (kind, entity) events to be stored after ``after``."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for kind, entity in wanted:
                with contextlib.suppress(TimeoutError):
                    return await self.events.wait(kind, entity, timeout_s=0.2, after=after)
        raise TimeoutError(f"none of {wanted} within {timeout_s} s")

    async def _wait_active_moved(self, vnf: str, old: str, timeout_s: float = 10.0) -> None:
        async def moved() -> bool:
            return await self.active_su(vnf) != old

        await _poll(moved, timeout_s, f"the active of {vnf} stayed on {old}")

    async def _after_fault(self, scenario: Scenario, target: str, su: str) -> None:
        """What an operator (or the VIM's host repair, not built yet) does to bring the
        infrastructure back; the VNF's own recovery is what is measured."""
        if scenario.fault == "host-down":
            # The VIM fences a failed host before anything else (REC-1, ADR 0011); the
            # operator's power-on comes after that, or the fence would cut it again.
            await self.events.wait("host.fenced", f"host/{target}", timeout_s=20)
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
            if not await self._run_into(report, scenario, f"run {i + 1}/{repeat}", progress):
                break
        return report

    async def run_random(self, faults: int, seed: int, progress: Callable[[str], None],
                         pool: tuple[str, ...] | None = None) -> list[ScenarioReport]:
        """``faults`` faults drawn (seeded) from ``pool`` (by default RANDOM_POOL), one
        after another, each once the previous one's VNF is restored; a failed run is
        recorded and the next one goes on. One report per scenario drawn."""
        rng = random.Random(seed)
        names = [n for n in pool or RANDOM_POOL if self._vnf_known(SCENARIOS[n].vnf)]
        if not names:
            raise ValueError("no scenario of the random pool fits this topology")
        reports: dict[str, ScenarioReport] = {}
        for i in range(faults):
            scenario = SCENARIOS[rng.choice(names)]
            report = reports.get(scenario.name)
            if report is None:
                report = reports[scenario.name] = ScenarioReport(
                    scenario.name, scenario.what, self._vnf(scenario.vnf).sal)
            await self._run_into(report, scenario, f"fault {i + 1}/{faults}", progress)
        return list(reports.values())

    def _vnf_known(self, name: str) -> bool:
        return any(v.name == name for v in self.topology.vnfs)

    async def _run_into(self, report: ScenarioReport, scenario: Scenario, label: str,
                        progress: Callable[[str], None]) -> bool:
        try:
            report.runs.append(await self.run_once(scenario))
        except (TimeoutError, httpx.HTTPError, RuntimeError, FaultError) as e:
            report.errors.append(f"{label}: {e}")
            progress(f"{scenario.name} {label} failed: {e}")
            return False
        progress(f"{scenario.name} {label}: {report.runs[-1]}")
        return True


def _active_times(answer: str | None, si: str) -> dict[str, int | None]:
    """One SI's entry of a counter's ``TIMES`` answer ({} if there is none: another
    program, an old counter, no answer)."""
    if answer is None or not answer.startswith("TIMES "):
        return {}
    try:
        entry = json.loads(answer[len("TIMES "):]).get(si)
    except (ValueError, AttributeError):
        return {}
    if not isinstance(entry, dict):
        return {}
    return {k: v if isinstance(v, int) and not isinstance(v, bool) else None
            for k, v in entry.items()}


def random_total(reports: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The randomized run as one row: its invariants summed over every fault."""
    return {"scenario": "random", "runs": sum(r["runs"] for r in reports), "seed": seed,
            "detection_p99_ms": None, "notification_p99_ms": None,
            "outage_p50_ms": None,
            "outage_p99_ms": max((r["outage_p99_ms"] for r in reports
                                  if r["outage_p99_ms"] is not None), default=None),
            "state_lost": sum(r["state_lost"] or 0 for r in reports),
            "restored_p99_ms": None,
            "sal_met": bool(reports) and all(r["sal_met"] for r in reports),
            "double_active": sum(r["double_active"] for r in reports),
            **{f"{stage}_{q}_ms": None for stage in STAGES for q in ("p50", "p99")},
            "errors": [f"{r['scenario']} {e}" for r in reports for e in r["errors"]]}


async def run_scenarios(topology: Topology, names: list[str], repeat: int,
                        progress: Callable[[str], None], seed: int = 1
                        ) -> list[dict[str, Any]]:
    """``names == ["random"]``: ``repeat`` faults drawn from RANDOM_POOL with ``seed``;
    the per-scenario rows, then a ``random`` row with the totals."""
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
            if names == ["random"]:
                reports = await runner.run_random(repeat, seed, progress)
                out = [r.summary() for r in reports]
                out.append(random_total(out, seed))
            for name in names if names != ["random"] else []:
                report = await runner.run(SCENARIOS[name], repeat, progress)
                out.append(report.summary())
    finally:
        await asyncio.to_thread(tb.down)
        await rx.close()
    return out


def expand(names: list[str]) -> list[str]:
    """``all`` and scenario names, validated; unknown names are an error that lists
    the valid ones. ``random`` stands alone."""
    if "random" in names:
        if names != ["random"]:
            raise ValueError("'random' is a run of its own: no other names with it")
        return ["random"]
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(x for x in SCENARIOS if x not in out)
        elif n in SCENARIOS:
            if n not in out:
                out.append(n)
        else:
            raise ValueError(f"unknown scenario '{n}'; valid: all, random,"
                             f" {', '.join(SCENARIOS)}")
    return out
