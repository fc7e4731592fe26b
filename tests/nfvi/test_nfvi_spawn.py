"""Detached launcher: the new process is nobody's child, in the given netns and cgroups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfvi_testutil import log_has, netns_inode, proc_netns_inode, wait_dead, wait_until

from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths
from nfvha.nfvi.spawn import SPAWN_SCRIPT, SpawnError, spawn_detached, spawn_detached_sync
from nfvha.util.procs import kill_pid, read_stat
from nfvha.util.runpaths import RunPaths


@pytest.fixture
def netns(run: RunPaths) -> Iterator[str]:
    name = f"{run.tag}-spawn"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _read(path: str | Path) -> str:
    with open(path) as f:
        return f.read()


def _sig_ignored_mask(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


@pytest.mark.testbed
async def test_spawn_into_netns_and_cgroup(
    run: RunPaths, cg: CgroupDriver, netns: str, tmp_path: Path
) -> None:
    rel = f"{run.tag}/host1/vm-a"
    cg.create(rel)
    log = tmp_path / "vm.log"
    pidfile = tmp_path / "vm.pid"
    p = await spawn_detached(
        ["sh", "-c", "echo started in $PWD; exec sleep 300"],
        netns=netns,
        cgroup_procs=cgroup_procs_paths(cg, rel),
        log=str(log),
        pidfile=str(pidfile),
        cwd=str(tmp_path),
    )
    try:
        stat = read_stat(p.pid)
        assert stat is not None and stat.start_ticks == p.start_ticks
        assert stat.ppid != os.getpid()  # orphaned: adopted by a subreaper or init
        assert proc_netns_inode(p.pid) == netns_inode(netns)
        assert proc_netns_inode(p.pid) != proc_netns_inode(os.getpid())
        assert cg.pids(rel) == [p.pid]
        assert os.getsid(p.pid) == p.pid  # its own session: no terminal signals from ours
        own_cgroups = _read(f"/proc/{p.pid}/cgroup")
        assert f"/{rel}\n" in own_cgroups
        assert json.loads(_read(pidfile)) == {"pid": p.pid, "start_ticks": p.start_ticks}
        wait_until(lambda: log_has(log, f"started in {tmp_path}"), what="the log line")
        assert _sig_ignored_mask(p.pid) == 0  # Python's ignored SIGPIPE is not inherited
        assert os.readlink(f"/proc/{p.pid}/fd/0") == "/dev/null"
        assert sorted(os.listdir(f"/proc/{p.pid}/fd")) == ["0", "1", "2"]
    finally:
        kill_pid(p.pid, ticks=p.start_ticks)
    wait_dead(p.pid, p.start_ticks)


@pytest.mark.testbed
def test_spawn_sync_with_env_and_no_log(run: RunPaths, tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    p = spawn_detached_sync(
        ["sh", "-c", f'echo "$GREETING:$HOME" > {out}; exec sleep 300'],
        env={"GREETING": "hello", "PATH": os.environ["PATH"]},
    )
    try:
        wait_until(lambda: log_has(out, "hello:"), what="the env file")
        assert out.read_text().strip() == "hello:"  # the env is exactly the one given
        assert os.readlink(f"/proc/{p.pid}/fd/1") == "/dev/null"
    finally:
        kill_pid(p.pid, ticks=p.start_ticks)
    wait_dead(p.pid, p.start_ticks)


async def test_spawn_errors_are_reported() -> None:
    with pytest.raises(SpawnError, match="exec /nonexistent/program"):
        await spawn_detached(["/nonexistent/program"])
    with pytest.raises(SpawnError, match="entering netns nfvha-xxxxx-none"):
        spawn_detached_sync(["sleep", "1"], netns="nfvha-xxxxx-none")
    with pytest.raises(SpawnError, match="cgroup"):
        spawn_detached_sync(["sleep", "1"], cgroup_procs=["/nonexistent/cgroup.procs"])
    with pytest.raises(SpawnError, match="chdir"):
        spawn_detached_sync(["sleep", "1"], cwd="/nonexistent/dir")
    with pytest.raises(ValueError):
        spawn_detached_sync([])


def test_helper_runs_isolated_with_stdlib_only(tmp_path: Path) -> None:
    """``python -I -S spawn.py`` works: the helper needs nothing outside the stdlib."""
    pidfile = tmp_path / "p.json"
    spec = {"argv": ["true"], "pidfile": str(pidfile)}
    done = subprocess.run(
        [sys.executable, "-I", "-S", SPAWN_SCRIPT],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["pid"] > 0 and answer["start_ticks"] > 0
    assert json.loads(pidfile.read_text()) == answer
    bad = subprocess.run(
        [sys.executable, "-I", "-S", SPAWN_SCRIPT],
        input="{}",
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert "argv" in json.loads(bad.stdout)["error"]


@pytest.mark.testbed
def test_spawn_into_a_frozen_cgroup_times_out(run: RunPaths, cg: CgroupDriver) -> None:
    """The child freezes when it joins a frozen cgroup; the caller is not stuck forever."""
    rel = f"{run.tag}/host1/vm-frozen"
    cg.create(rel)
    cg.freeze(rel)
    with pytest.raises(SpawnError, match="no answer"):
        spawn_detached_sync(
            ["sleep", "300"], cgroup_procs=cgroup_procs_paths(cg, rel), helper_timeout=1.0
        )
    stuck = cg.pids(rel)
    cg.kill_all(rel)  # the half-started child dies with its cgroup
    assert cg.pids(rel) == []
    assert len(stuck) == 1
