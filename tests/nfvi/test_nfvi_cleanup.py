"""``nfvha down``: a run whose creator crashed is found and removed completely."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nfvi_testutil import wait_dead

from nfvha.nfvi.cgroups import CgroupDriver
from nfvha.nfvi.cleanup import find_runs, teardown_run
from nfvha.nfvi.fabric import list_fabric_objects
from nfvha.nfvi.spawn import spawn_detached_sync
from nfvha.util.procs import is_same_process, kill_pid
from nfvha.util.runpaths import RunPaths

# The creator: builds a small test bed, starts processes every way a run does, records
# some in run.json, then dies without cleaning anything up.
CREATOR = """
import json, sys
from nfvha.nfvi.cgroups import detect_cgroups, cgroup_procs_paths
from nfvha.nfvi.fabric import plan_fabric, create_fabric, create_vm_network
from nfvha.nfvi.spawn import spawn_detached_sync
from nfvha.util.files import atomic_write_json
from nfvha.util.runpaths import RunPaths

run = RunPaths(sys.argv[1])
stranger_pid, stranger_ticks = int(sys.argv[2]), int(sys.argv[3])
cg = detect_cgroups()
plan = plan_fabric(run.run_id, ["h0", "h1"], [("a", "h0")])
create_fabric(plan)
create_vm_network(plan, "a")
started = {}
for name, rel, netns in [
    ("controller", f"{run.tag}/control", None),
    ("hostd", f"{run.tag}/h0/system", plan.host("h0").netns),
    ("vm", f"{run.tag}/h0/vm-a", plan.vm("a").netns),
]:
    cg.create(rel, memory_bytes=64 << 20)
    p = spawn_detached_sync(["sleep", "300"], netns=netns, cgroup_procs=cgroup_procs_paths(cg, rel))
    started[name] = p
# In a namespace of the run but in no cgroup of it.
p = spawn_detached_sync(["sleep", "300"], netns=plan.host("h1").netns)
started["netns-only"] = p
# Neither in a namespace nor in a cgroup of the run: known only from run.json.
p = spawn_detached_sync(["sleep", "300"])
started["recorded-only"] = p
pids = [{"pid": p.pid, "start_ticks": p.start_ticks} for p in started.values()]
# A stale entry whose pid now belongs to someone else (start time differs): spared.
pids.append({"pid": stranger_pid, "start_ticks": stranger_ticks + 1})
atomic_write_json(run.run_file, {"pids": pids, "fabric": plan.to_json()})
(run.host_dir("h0")).mkdir(parents=True)
(run.host_dir("h0") / "hostd.log").write_text("some log\\n")
print(json.dumps({k: [v.pid, v.start_ticks] for k, v in started.items()}))
sys.exit(3)  # "crash"
"""


@pytest.mark.testbed
def test_teardown_of_a_crashed_run(run: RunPaths, cg: CgroupDriver) -> None:
    stranger = spawn_detached_sync(["sleep", "300"])  # not part of the run
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                CREATOR,
                run.run_id,
                str(stranger.pid),
                str(stranger.start_ticks),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=os.environ.copy(),
        )
        assert done.returncode == 3, done.stderr
        started = {k: tuple(v) for k, v in json.loads(done.stdout).items()}
        assert all(is_same_process(p, t) for p, t in started.values())
        assert run.run_id in find_runs()
        netnses, links = list_fabric_objects(run.run_id)
        assert len(netnses) == 3 and len(links) == 6

        report = teardown_run(run.run_id)

        for pid, ticks in started.values():
            wait_dead(pid, ticks)
        assert is_same_process(stranger.pid, stranger.start_ticks)
        assert list_fabric_objects(run.run_id) == ([], [])
        assert not cg.exists(run.tag)
        assert not run.root.exists()
        assert run.run_id not in find_runs()
        assert any("cgroup" in line for line in report)
        assert any(f"deleted netns {run.host_netns('h0')}" == line for line in report)
        assert any(line.startswith("removed ") and run.tag in line for line in report)
        assert teardown_run(run.run_id) == []  # idempotent: nothing left to do
    finally:
        kill_pid(stranger.pid, ticks=stranger.start_ticks)
    wait_dead(stranger.pid, stranger.start_ticks)


@pytest.mark.testbed
def test_teardown_keeps_files_and_finds_dir_only_runs(run: RunPaths) -> None:
    (run.root / "notes.txt").write_text("keep me")
    assert run.run_id in find_runs()  # found from its directory alone
    assert teardown_run(run.run_id, keep_files=True) == []
    assert (run.root / "notes.txt").read_text() == "keep me"
    assert teardown_run(run.run_id) == [f"removed {run.root}"]
    assert run.run_id not in find_runs()


def test_find_runs_ignores_foreign_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("find_runs lists cgroups and namespaces")
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    (tmp_path / "nfvha-TOOLONG").mkdir()
    (tmp_path / "nfvha-ab").mkdir()
    (tmp_path / "other").mkdir()
    assert not {"TOOLONG", "ab"} & find_runs()
