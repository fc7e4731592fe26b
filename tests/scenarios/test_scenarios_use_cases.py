"""The use cases on the real test bed, through the scenario runner. Thresholds carry
margin for a loaded 2-core machine; the exact figures are the runner's
(``nfvha scenario run``), recorded in docs/benchmarks.md."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from nfvha.scenarios.runner import (
    SAL_THRESHOLD_MS,
    SCENARIOS,
    STAGES,
    RunResult,
    ScenarioRunner,
)
from nfvha.testbed.apiclient import get_all
from nfvha.testbed.probe import ServiceProbe
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process, kill_pid

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio(loop_scope="module")]


async def run(runner: ScenarioRunner, name: str) -> RunResult:
    return await runner.run_once(SCENARIOS[name])


def assert_safe(r: RunResult) -> None:
    assert r.state_lost == 0, r
    assert r.double_active == 0, r


def assert_failover_stages(r: RunResult) -> None:
    """The failover path, stage by stage (``scenario run --json``): each stage the
    runner can see is measured, and they come in the order they happen. No timing
    thresholds: the figures are the runner's, on a quiet machine."""
    stages = {stage: r.stage_ms(stage) for stage in STAGES}
    for stage in ("detect", "order", "vip", "first_answer"):
        assert stages[stage] is not None, (stage, r)
    measured = [v for v in stages.values() if v is not None]
    assert measured == sorted(measured), r
    assert measured[0] >= 0, r  # nothing before the fault


@pytest.mark.req("UC-1")
@pytest.mark.req("IF-1")
@pytest.mark.req("IF-3")
@pytest.mark.req("SAL-1")
async def test_uc1_active_vnfc_crash_fails_over_to_the_synced_standby(
        runner: ScenarioRunner) -> None:
    before = await runner.active_su("gw")
    r = await run(runner, "UC-1")
    assert_safe(r)  # the standby had every acknowledged increment (direct sync)
    assert_failover_stages(r)
    assert await runner.active_su("gw") != before  # failed over, no fail-back
    # Target p99 < 100 ms (runner); here with margin, and well inside SAL 1.
    assert r.outage_ms < 1_000 < SAL_THRESHOLD_MS[1], r
    assert r.restored_ms is not None  # the crashed VNFC was restarted, now the standby


@pytest.mark.req("UC-2")
@pytest.mark.req("VNFHA-13")
@pytest.mark.req("HV-7")
async def test_uc2_active_vm_crash_vnf_failover_and_vim_repair(runner: ScenarioRunner) -> None:
    r = await run(runner, "UC-2")
    assert_safe(r)
    assert_failover_stages(r)
    assert r.outage_ms < 1_500, r
    # The VM was replaced in its initial state and its VNFC is the standby again:
    # the VNF has its two VMs back.
    vms = await get_all(runner.client, "/v1/vms")
    assert all(v["state"] == "running" for v in vms), vms


async def test_vm_hang_is_isolated_before_failover(runner: ScenarioRunner) -> None:
    r = await run(runner, "vm-hang")
    assert_safe(r)
    assert r.outage_ms < 3_000, r


@pytest.mark.req("UC-3")
async def test_uc3_unprotected_vnfc_restarts_from_its_checkpoint(
        runner: ScenarioRunner) -> None:
    r = await run(runner, "UC-3")
    assert_safe(r)  # every acknowledged increment was checkpointed first
    assert r.outage_ms < 5_000, r


@pytest.mark.req("UC-4")
async def test_uc4_unprotected_vm_crash_vm_repaired_then_vnfc_from_checkpoint(
        runner: ScenarioRunner) -> None:
    r = await run(runner, "UC-4")
    assert_safe(r)
    assert r.outage_ms < 10_000, r


@pytest.mark.req("UC-9")
async def test_uc9_repeated_vnfc_failure_escalates_to_vm_repair(
        runner: ScenarioRunner) -> None:
    # The runner waits for the VM repair (vm.stopped of the VNFC's VM) that the
    # escalation asked for; it fails the run if none comes.
    r = await run(runner, "UC-9")
    assert_safe(r)


# -- stateless VNFs (UC-5..UC-8) and the load balancer in front of web (IF-2) ----------
# web: N+M (2 actives + 1 spare) behind web-lb, a 2N LB pair holding the VIP the probe
# targets; dns: one VNFC, no redundancy, probed on its own address.

# UC-5/6 target: < 1 % of the probe's requests fail (one run's fault window holds
# 60-200 requests, so one lost request is 0.5-1.7 %): pooled over a few runs, with
# margin for a loaded 2-core machine; the measured figure is the runner's.
FAILED_PCT_LIMIT = 2.0


def assert_stateless_safe(r: RunResult) -> None:
    assert r.state_lost is None, r  # not applicable: nothing to lose
    assert r.double_active == 0, r  # the N actives of N+M are not counted; the LB pair is


def pooled_failed_pct(rs: list[RunResult]) -> float:
    return 100 * sum(r.failed for r in rs) / max(1, sum(r.sent for r in rs))


async def events_of(runner: ScenarioRunner, vnf: str, kind: str, after: int) -> Counter[str]:
    """How many ``kind`` events each VNFC of ``vnf`` had after event ``after``."""
    r = await runner.client.get("/v1/events", params={"kind": kind, "after": after})
    r.raise_for_status()
    names = {f"vnfc/{c.name}" for c in runner.topology.vnf(vnf).components}
    return Counter(e["entity"] for e in r.json() if e["entity"] in names)


@pytest.mark.req("UC-5")
@pytest.mark.req("IF-2")
@pytest.mark.req("VNFHA-10")
async def test_uc5_active_member_crash_lb_excludes_it_spare_takes_over(
        runner: ScenarioRunner) -> None:
    before = await runner.active_su("web")
    since = await runner.events.sync()
    rs = [await run(runner, "UC-5")]
    a = await runner.availability("web")
    si = next(x for x in a["service_instances"] if x["si"] == "web-1")
    assert si["active"] != [before], a  # the spare took over, no fail-back
    rs += [await run(runner, "UC-5") for _ in range(2)]
    for r in rs:
        assert_stateless_safe(r)
        assert r.outage_ms < 200, r  # a request or two, retried by the LB or lost
    assert pooled_failed_pct(rs) < FAILED_PCT_LIMIT, rs
    # The LB reported each crash too, before or after the agent: one restart per crash
    # (VNFHA-10), and none a kill-and-restart (that would show as vnfc.stopped).
    crashed = await events_of(runner, "web", "vnfc.crashed", since)
    assert sum(crashed.values()) == 3, crashed

    async def started() -> Counter[str]:
        return await events_of(runner, "web", "vnfc.started", since)

    for _ in range(200):  # the last restart's event may trail its registration
        if (got := await started()) == crashed:
            break
        await asyncio.sleep(0.05)
    assert got == crashed
    assert not await events_of(runner, "web", "vnfc.stopped", since)


@pytest.mark.req("UC-6")
@pytest.mark.req("IF-2")
async def test_uc6_active_member_vm_crash_spare_takes_over_vm_repaired(
        runner: ScenarioRunner) -> None:
    rs = [await run(runner, "UC-6") for _ in range(2)]
    for r in rs:
        assert_stateless_safe(r)
        assert r.outage_ms < 200, r
    assert pooled_failed_pct(rs) < FAILED_PCT_LIMIT, rs
    vms = await get_all(runner.client, "/v1/vms")
    assert all(v["state"] == "running" for v in vms), vms


@pytest.mark.req("IF-2")
async def test_if2_a_hung_member_is_excluded_by_the_lb_and_restarted_by_the_vnfm(
        runner: ScenarioRunner) -> None:
    # Alive but not answering (SIGSTOP): no agent event says anything; the LB's report,
    # unconfirmed by the VIM, makes the VNFM kill and restart it.
    await runner.wait_restored("web")
    member = await runner.active_su("web")
    vm = next(c.vm for c in runner.topology.vnf("web").components if c.name == member)
    rec = read_json(runner.tb.run.vm_dir(vm) / "vnfcs.json")[member]
    pid, ticks = int(rec["pid"]), int(rec["start_ticks"])
    since = await runner.events.sync()
    probe = ServiceProbe(runner.service_address("web"), "hang", stateful=False)
    probe.start()
    try:
        await until_served(probe, 0)
        hung_ns = time.monotonic_ns()
        assert kill_pid(pid, signal.SIGSTOP, ticks=ticks)
        started = await runner.events.wait("vnfc.started", f"vnfc/{member}", timeout_s=20,
                                           after=since)
        await runner.wait_restored("web")
        await until_served(probe, time.monotonic_ns())
    finally:
        probe.stop()
        kill_pid(pid, signal.SIGCONT, ticks=ticks)  # if it was not killed (a failure)
    assert started["details"]["pid"] != pid
    assert not is_same_process(pid, ticks)  # the hung one was killed, not left behind
    window = [x for x in probe.snapshot() if x.sent_ns >= hung_ns]
    failed = sum(1 for x in window if x.reply_ns is None)
    assert 100 * failed / len(window) < FAILED_PCT_LIMIT, (failed, len(window))


async def until_served(probe: ServiceProbe, since_ns: int, timeout_s: float = 20) -> None:
    end = time.monotonic() + timeout_s
    while not any(x.reply_ns is not None and x.sent_ns >= since_ns
                  for x in probe.snapshot()[-20:]):
        assert time.monotonic() < end, "the service did not answer the probe"
        await asyncio.sleep(0.01)


@pytest.mark.req("UC-7")
async def test_uc7_unprotected_stateless_vnfc_is_restarted(runner: ScenarioRunner) -> None:
    r = await run(runner, "UC-7")
    assert_stateless_safe(r)
    assert 0 < r.outage_ms < 5_000, r  # no redundancy: the restart is the outage


@pytest.mark.req("UC-8")
async def test_uc8_unprotected_stateless_vm_crash_vm_repaired_vnfc_restarted(
        runner: ScenarioRunner) -> None:
    r = await run(runner, "UC-8")
    assert_stateless_safe(r)
    assert 0 < r.outage_ms < 10_000, r
    vms = await get_all(runner.client, "/v1/vms")
    assert all(v["state"] == "running" for v in vms), vms


@pytest.mark.req("IF-2")
async def test_if2_active_lb_crash_the_standby_lb_takes_the_vip(
        runner: ScenarioRunner) -> None:
    before = await runner.active_su("web-lb")
    r = await run(runner, "lb-crash")
    assert r.double_active == 0, r
    assert r.outage_ms < 1_000, r
    assert await runner.active_su("web-lb") != before


async def test_randomized_faults_never_make_two_actives_or_lose_state(
        runner: ScenarioRunner) -> None:
    """A short seeded run of ``nfvha scenario run random`` (the 200-fault run is in
    docs/benchmarks.md): every fault recovered, no double active observed, no
    acknowledged increment lost."""
    lines: list[str] = []
    pool = ("UC-1", "UC-2", "UC-3", "UC-5", "UC-7", "link-down")
    reports = await runner.run_random(8, seed=7, progress=lines.append, pool=pool)
    runs = [r for rep in reports for r in rep.runs]
    assert [e for rep in reports for e in rep.errors] == [], lines
    assert len(runs) == 8
    assert sum(r.double_active for r in runs) == 0, lines
    assert sum(r.state_lost or 0 for r in runs) == 0, lines
