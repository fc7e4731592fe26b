"""``nfvha bench detect`` survives the system it measures and keeps what it measured
(issue 11): its deployment repairs nothing by itself, and a failed step's error comes
with the figures of what completed."""

from __future__ import annotations

from typing import Any

from nfvha.bench.detect import StepFailure, bench_topology, result_rows
from nfvha.model.topology import default_topology_path, load_topology, parse_topology

STANDBY: dict[str, Any] = {
    "name": "standby",
    "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                       {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [{"name": "vm-a", "host": "h1"}, {"name": "vm-a-standby", "host": "h2",
                                            "standby_for": "vm-a"}],
    "vnfs": [{"name": "fw", "redundancy": "none", "stateful": False,
              "repair_action": "failover-standby-vm",
              "components": [{"name": "fw-1", "vm": "vm-a", "port": 7000}]}],
}


def test_the_bench_deployment_repairs_nothing_by_itself() -> None:
    for t in (load_topology(default_topology_path()), parse_topology(STANDBY)):
        b = bench_topology(t)
        assert {v.vnfm for v in b.vnfs} == {"none"}
        assert {v.repair_action for v in b.vnfs} == {"confirm"}
        assert all(v.standby_for is None for v in b.vms)
        # The controller reads it back from the run's topology file: still valid.
        parse_topology(b.model_dump(mode="json"))


def test_a_failed_step_keeps_the_figures_measured_before_it() -> None:
    samples = {"vnfc-crash": [5.0, 7.0], "vm-hang": [310.0, 320.0, 330.0]}
    failure = StepFailure("vm-hang", 4, "TimeoutError: no vm.responsive for vm/web-vm1")
    rows = result_rows(["vnfc-crash", "vm-hang", "host-down"], samples, failure)
    assert [(r["kind"], r["n"]) for r in rows] == [("vnfc-crash", 2), ("vm-hang", 3)]
    assert "error" not in rows[0]
    assert rows[1]["p50_ms"] == 320.0
    assert rows[1]["error"] == "run 4: TimeoutError: no vm.responsive for vm/web-vm1"


def test_a_step_that_failed_before_any_sample_is_still_a_row() -> None:
    failure = StepFailure("host-down", 1, "TimeoutError: nothing answers")
    rows = result_rows(["vnfc-crash", "host-down"], {"vnfc-crash": [5.0]}, failure)
    assert rows[1] == {"kind": "host-down", "n": 0, "runs": 0,
                       "error": "run 1: TimeoutError: nothing answers"}


def test_a_failed_start_is_reported() -> None:
    failure = StepFailure("start", 0, "TestbedError: VM x did not start")
    assert result_rows(["vnfc-crash"], {}, failure) == [
        {"kind": "start", "n": 0, "runs": 0, "error": "TestbedError: VM x did not start"}]


def test_rows_say_runs_and_the_watchdog_its_timeout() -> None:
    rows = result_rows(["vm-crash", "watchdog"], {"vm-crash": [9.0, 11.0],
                                                  "watchdog": [-300.0, 12.0]}, None, {3000})
    assert [(r["kind"], r["runs"]) for r in rows] == [("vm-crash", 2), ("watchdog", 2)]
    assert rows[1]["timeout_ms"] == 3000 and "timeout_ms" not in rows[0]
