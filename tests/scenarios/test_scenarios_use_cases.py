"""The use cases on the real test bed, through the scenario runner. Thresholds carry
margin for a loaded 2-core machine; the exact figures are the runner's
(``nfvha scenario run``), recorded in docs/benchmarks.md."""

from __future__ import annotations

import pytest

from nfvha.scenarios.runner import SAL_THRESHOLD_MS, SCENARIOS, RunResult, ScenarioRunner

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio(loop_scope="module")]


async def run(runner: ScenarioRunner, name: str) -> RunResult:
    return await runner.run_once(SCENARIOS[name])


def assert_safe(r: RunResult) -> None:
    assert r.state_lost == 0, r
    assert r.double_active == 0, r


@pytest.mark.req("UC-1")
@pytest.mark.req("IF-1")
@pytest.mark.req("IF-3")
@pytest.mark.req("SAL-1")
async def test_uc1_active_vnfc_crash_fails_over_to_the_synced_standby(
        runner: ScenarioRunner) -> None:
    before = await runner.active_su("gw")
    r = await run(runner, "UC-1")
    assert_safe(r)  # the standby had every acknowledged increment (direct sync)
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
    assert r.outage_ms < 1_500, r
    # The VM was replaced in its initial state and its VNFC is the standby again:
    # the VNF has its two VMs back.
    status = (await runner.client.get("/v1/status")).json()
    assert all(v["state"] == "running" for v in status["vms"]), status["vms"]


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
