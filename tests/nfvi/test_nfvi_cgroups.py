"""Cgroups of the local NFVI: limits, freezing, accounting, killing and removing a subtree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from nfvi_testutil import wait_dead, wait_until

from nfvha.nfvi.cgroups import (
    CgroupDriver,
    CgroupError,
    CgroupV1,
    CgroupV2,
    cgroup_procs_paths,
    check_rel,
)
from nfvha.nfvi.spawn import Spawned, spawn_detached_sync
from nfvha.util.procs import is_same_process, read_stat
from nfvha.util.runpaths import RunPaths

MiB = 1 << 20


def _spawn_in(cg: CgroupDriver, rel: str, argv: list[str], log: Path | None = None) -> Spawned:
    return spawn_detached_sync(
        argv, cgroup_procs=cgroup_procs_paths(cg, rel), log=None if log is None else str(log)
    )


def test_rel_must_be_inside_a_run_cgroup() -> None:
    assert check_rel("/nfvha-ab1cd/host1/") == "nfvha-ab1cd/host1"
    for bad in ("", "/", "system.slice", "nfvha-ab1cd/../x", "nfvha-toolong/x", "../nfvha-ab1cd"):
        with pytest.raises(ValueError):
            check_rel(bad)


@pytest.mark.testbed
def test_create_limits_freeze_thaw_kill_remove(run: RunPaths, cg: CgroupDriver) -> None:
    rel = f"{run.tag}/host1/vm-a"
    cg.create(rel, memory_bytes=64 * MiB, cpu_cores=0.5)
    assert cg.exists(rel) and cg.exists(run.tag)
    assert run.tag in cg.list_runs()
    assert cg.memory_limit_bytes(rel) == 64 * MiB
    assert cg.memory_limit_bytes(f"{run.tag}/host1") is None  # parents stay unlimited
    if isinstance(cg, CgroupV1):
        quota = (cg.cpu / rel / "cpu.cfs_quota_us").read_text().strip()
        period = (cg.cpu / rel / "cpu.cfs_period_us").read_text().strip()
        memsw = cg.memory / rel / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert int(memsw.read_text()) == 64 * MiB
    else:
        assert isinstance(cg, CgroupV2)
        quota, period = (cg.root / rel / "cpu.max").read_text().split()
    assert (int(quota), int(period)) == (50_000, 100_000)
    # Raising a limit must work too (memsw must be raised before mem on v1).
    cg.create(rel, memory_bytes=128 * MiB)
    assert cg.memory_limit_bytes(rel) == 128 * MiB
    assert cg.pids(rel) == []

    p = _spawn_in(cg, rel, ["sleep", "300"])
    assert cg.pids(rel) == [p.pid]
    assert cg.pids(f"{run.tag}/host1") == [p.pid]  # recursive by default
    assert cg.pids(f"{run.tag}/host1", recursive=False) == []
    wait_until(lambda: (cg.memory_usage_bytes(rel) or 0) > 0, what="memory accounting")
    assert cg.cpu_usage_ns(rel) is not None
    assert cg.oom_kill_count(rel) == 0

    cg.freeze(rel)
    assert cg.is_frozen(rel)
    cg.thaw(rel)
    assert not cg.is_frozen(rel)
    assert is_same_process(p.pid, p.start_ticks)

    cg.kill_all(f"{run.tag}/host1")
    assert cg.pids(run.tag) == []
    wait_dead(p.pid, p.start_ticks)

    cg.remove(run.tag)
    assert not cg.exists(rel) and not cg.exists(run.tag)
    assert run.tag not in cg.list_runs()
    cg.remove(run.tag)  # no error when already gone


@pytest.mark.testbed
def test_cpu_weight_is_a_share_among_siblings(run: RunPaths, cg: CgroupDriver) -> None:
    rel = f"{run.tag}/director"
    cg.create(rel, cpu_weight=1000)
    if isinstance(cg, CgroupV1):
        assert (cg.cpu / rel / "cpu.shares").read_text().strip() == "10240"  # 1024 = 100
    else:
        assert isinstance(cg, CgroupV2)
        assert (cg.root / rel / "cpu.weight").read_text().strip() == "1000"
    for bad in (0, 10_001):
        with pytest.raises(ValueError, match="cpu_weight"):
            cg.create(rel, cpu_weight=bad)
    cg.remove(run.tag)


@pytest.mark.testbed
def test_kill_all_kills_a_frozen_child_and_its_forks(run: RunPaths, cg: CgroupDriver) -> None:
    """A VM frozen by fault injection, with children of its own, still dies with its host."""
    vm = f"{run.tag}/host1/vm-a"
    sysrel = f"{run.tag}/host1/system"
    cg.create(vm)
    cg.create(sysrel)
    forker = _spawn_in(cg, vm, ["sh", "-c", "sleep 300 & sleep 300 & wait"])
    wait_until(lambda: len(cg.pids(vm)) == 3, what="the forks")
    other = _spawn_in(cg, sysrel, ["sleep", "300"])
    cg.freeze(vm)
    assert cg.is_frozen(vm)
    cg.kill_all(f"{run.tag}/host1")
    assert cg.pids(f"{run.tag}/host1") == []
    wait_dead(forker.pid, forker.start_ticks)
    wait_dead(other.pid, other.start_ticks)
    cg.remove(run.tag)
    assert not cg.exists(run.tag)


@pytest.mark.testbed
@pytest.mark.req("NFVI-2")
def test_memory_limit_oom_kills_only_the_leaking_vm(
    run: RunPaths, cg: CgroupDriver, tmp_path: Path
) -> None:
    """A VM that leaks past its 64 MiB limit is OOM-killed; its sibling VM lives on."""
    leaky = f"{run.tag}/host1/vm-leaky"
    calm = f"{run.tag}/host1/vm-calm"
    cg.create(leaky, memory_bytes=64 * MiB)
    cg.create(calm, memory_bytes=64 * MiB)
    # Writing every byte makes the pages real (a zero-filled calloc would not).
    hog_code = (
        "import time\nprint('allocating', flush=True)\n"
        "hog = b'\\x01' * (200 << 20)\nprint('survived', flush=True)\ntime.sleep(300)\n"
    )
    calm_code = (
        "import time\nkeep = b'\\x02' * (16 << 20)\nprint('ok', flush=True)\ntime.sleep(300)\n"
    )
    calm_log = tmp_path / "calm.log"
    leaky_log = tmp_path / "leaky.log"
    neighbour = _spawn_in(cg, calm, [sys.executable, "-I", "-S", "-c", calm_code], calm_log)
    wait_until(lambda: calm_log.exists() and "ok" in calm_log.read_text(), what="the calm VM")
    hog = _spawn_in(cg, leaky, [sys.executable, "-I", "-S", "-c", hog_code], leaky_log)

    wait_dead(hog.pid, hog.start_ticks, timeout=30)
    assert "survived" not in leaky_log.read_text()
    assert (cg.oom_kill_count(leaky) or 0) >= 1
    assert cg.oom_kill_count(calm) == 0
    assert is_same_process(neighbour.pid, neighbour.start_ticks)
    assert cg.pids(calm) == [neighbour.pid]
    assert (cg.memory_usage_bytes(calm) or 0) >= 16 * MiB
    stat = read_stat(neighbour.pid)
    assert stat is not None and stat.state in ("S", "R")


def _unified_root() -> Path | None:
    """A cgroup2 mount to exercise CgroupV2 on: the main one, or the hybrid 'unified'."""
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists():
            return root
    return None


@pytest.mark.testbed
def test_cgroup_v2_driver(run: RunPaths) -> None:
    root = _unified_root()
    if root is None or os.geteuid() != 0:
        pytest.skip("no cgroup2 mount")
    v2 = CgroupV2(root)
    rel = f"{run.tag}/host1/vm-a"
    try:
        controllers = (root / "cgroup.controllers").read_text().split()
        if "memory" in controllers:
            v2.create(rel, memory_bytes=64 * MiB)
            assert v2.memory_limit_bytes(rel) == 64 * MiB
        else:  # hybrid layout: memory is bound to v1, so a limit cannot be honoured here
            with pytest.raises(CgroupError):
                v2.create(rel, memory_bytes=64 * MiB)
        assert v2.exists(rel)
        assert run.tag in v2.list_runs()
        p = spawn_detached_sync(
            ["sh", "-c", "sleep 300 & wait"], cgroup_procs=cgroup_procs_paths(v2, rel)
        )
        wait_until(lambda: len(v2.pids(rel)) == 2, what="the fork")
        assert p.pid in v2.pids(f"{run.tag}/host1")
        v2.freeze(rel)
        assert v2.is_frozen(rel)
        v2.thaw(rel)
        assert not v2.is_frozen(rel)
        v2.freeze(rel)  # kill_all must also work on a frozen cgroup
        v2.kill_all(f"{run.tag}/host1")
        assert v2.pids(run.tag) == []
        wait_dead(p.pid, p.start_ticks)
    finally:
        v2.remove(run.tag)
    assert not v2.exists(run.tag)
