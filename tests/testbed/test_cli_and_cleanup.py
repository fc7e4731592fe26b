"""The command line as a user runs it: `nfvha up` in a real process, killed
without warning, then `nfvha down` removes every trace; clear errors on bad input;
the loopback fallback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bedkit import Bed, small_topology

from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.cleanup import _marked_pids
from nfvha.nfvi.fabric import list_fabric_objects
from nfvha.testbed.deploy import Testbed, namespaces_available
from nfvha.testbed.faults import FaultInjector
from nfvha.testbed.observe import EventWaiter, wait_serving

NFVHA = [sys.executable, "-m", "nfvha.cli"]


def nfvha(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NFVHA, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "NFVHA_RUN_ROOT": str(tmp_path)}


@pytest.mark.testbed
def test_down_removes_everything_after_up_was_killed(tmp_path: Path, env: dict[str, str]) -> None:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    topo = tmp_path / "topo.yaml"
    topo.write_text(json.dumps(small_topology().model_dump(mode="json")))  # JSON is YAML
    up = subprocess.Popen([*NFVHA, "up", "--no-live", "-f", str(topo)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_id = None
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + 90
        for line in up.stdout:
            m = re.search(r"run (\w{5}) is up", line)
            if m:
                run_id = m.group(1)
                break
            assert time.monotonic() < deadline, "nfvha up did not come up"
        assert run_id is not None, "nfvha up ended before it was up"
        status = nfvha("status", "--json", "--all", "--run", run_id, env=env)
        assert status.returncode == 0, status.stderr
        assert {v["state"] for v in json.loads(status.stdout)["vms"]} == {"running"}
        # A crash: no clean-up runs.
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        assert detect_cgroups().pids(f"nfvha-{run_id}"), "the deployment should outlive it"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(10)
    down = nfvha("down", run_id, env=env)
    assert down.returncode == 0, down.stderr
    assert "deleted netns" in down.stdout
    netnses, links = list_fabric_objects(run_id)
    assert not netnses and not links
    assert not detect_cgroups().exists(f"nfvha-{run_id}")
    assert _marked_pids(run_id) == []
    assert not (tmp_path / f"nfvha-{run_id}").exists()
    # Idempotent.
    again = nfvha("down", run_id, env=env)
    assert again.returncode == 0


def test_bad_topology_is_refused_with_one_line_per_problem(tmp_path: Path,
                                                          env: dict[str, str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsites: [{name: s, racks: [{name: r, hosts: [{name: h1}]}]}]\n"
        "vms: [{name: vm1, host: h1}]\n"
        "vnfs:\n"
        "  - {name: a, redundancy: none, stateful: false, components: [{name: c1, vm: vm1}]}\n"
        "  - {name: b, redundancy: none, stateful: false, components: [{name: c2, vm: vm9}]}\n"
    )
    r = nfvha("validate", str(bad), env=env)
    assert r.returncode == 1
    assert "vnfs[1].components[0].vm: no VM named 'vm9'" in r.stderr
    r = nfvha("up", "-f", str(bad), env=env)
    assert r.returncode == 1
    assert "no VM named 'vm9'" in r.stderr
    assert not list(tmp_path.glob("nfvha-*")), "nothing may start from a bad file"


def test_unknown_fault_kind_lists_valid_ones(env: dict[str, str]) -> None:
    r = nfvha("fault", "vm-explode", "vm1", env=env)
    assert r.returncode == 2
    assert "unknown fault 'vm-explode'" in r.stderr and "vm-crash" in r.stderr


@pytest.mark.asyncio
@pytest.mark.req("HV-2")
async def test_loopback_fallback_detects_crashes_and_cleans_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without namespaces (no root) everything runs on 127.0.0.1: still real processes,
    still event-driven detection, and nothing left behind."""
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    monkeypatch.setenv("NFVHA_LOOPBACK", "1")
    tb = Testbed(small_topology())
    assert not tb.namespaced
    await tb.start()
    try:
        assert tb.vm_address("vm-a")[0] == "127.0.0.1"
        await wait_serving(tb.vm_address("vm-a"))
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=10, headers=tb.headers) as client:
            events = EventWaiter(client)
            faults = FaultInjector(tb.run, tb.topology)
            await events.sync()
            faults.inject("vnfc-crash", "db-1")
            await events.wait("vnfc.crashed", "vnfc/db-1")
            faults.inject("vm-crash", "vm-b")
            await events.wait("vm.crashed", "vm/vm-b")
            # Unknown target: a clear error naming the valid ones.
            with pytest.raises(Exception, match="valid: vm-a, vm-b, vm-c"):
                faults.inject("vm-crash", "vm-z")
        assert _marked_pids(tb.run.run_id)
    finally:
        tb.down()
    assert _marked_pids(tb.run.run_id) == []


@pytest.mark.testbed
@pytest.mark.asyncio
async def test_down_refuses_a_run_whose_owner_is_alive(bed: Bed) -> None:
    env = dict(os.environ)  # carries this test's NFVHA_RUN_ROOT
    r = nfvha("down", bed.tb.run.run_id, env=env)
    assert r.returncode == 1 and "still owned" in r.stderr
    assert (await bed.status())["run_id"] == bed.tb.run.run_id  # still there
