"""The ``process`` hypervisor driver: a VM is a guest process (``python -m
nfvha.nfvi.guest``) in a cgroup of its own with its own network namespace, its disk a
directory (ADR 0010). Fast to start (tens of ms), so the test bed and the benchmarks
run many; the default of ``nfvha up``.

The VM's process is not the agent's child: it is spawned detached and reaped by the
host supervisor (a child subreaper), so a VM outlives an agent crash. Its death is
seen through a pidfd; its wait status is read from /proc while it is a zombie, or
from the supervisor's exit record after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfvha.agent.config import AgentConfig, VmLaunch
from nfvha.agent.exits import wait_exit_status, zombie_status
from nfvha.agent.hypervisor.contract import VmLife
from nfvha.agent.hypervisor.guestconfig import write_guest_config
from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths
from nfvha.nfvi.disk import DiskMode, SnapshotInfo, VmDisk
from nfvha.nfvi.fabric import FabricPlan, create_vm_network
from nfvha.nfvi.guest import release_service_addresses
from nfvha.nfvi.spawn import spawn_detached
from nfvha.util.procs import is_same_process, kill_pid, pidfd_of_life
from nfvha.util.runpaths import RunPaths

log = logging.getLogger(__name__)

CONSOLE_FILE = "console.log"


class ProcessDriver:
    kind = "process"

    def __init__(self, cfg: AgentConfig, run: RunPaths, cgroups: CgroupDriver | None,
                 plan: FabricPlan | None) -> None:
        self._cfg = cfg
        self._run = run
        self._cgroups = cgroups
        self._plan = plan
        self._exits_dir = run.host_dir(cfg.host) / "exits"
        self._cgroup_procs: dict[str, list[str]] = {}  # prepared VM -> cgroup.procs files
        self._pidfds: dict[str, int] = {}

    async def start(self) -> None:
        return None  # nothing to run on: the host's kernel

    async def close(self) -> None:
        return None

    def _cgroup_rel(self, vm: str) -> str:
        return f"{self._run.tag}/{self._cfg.host}/vm-{vm}"

    # -- making a VM -------------------------------------------------------
    def prepare(self, spec: VmLaunch, vm_dir: Path, disk: DiskMode) -> dict[str, Any]:
        name = spec.name
        vm_dir.mkdir(parents=True, exist_ok=True)
        try:
            disk_done = VmDisk(vm_dir).prepare(disk)
        except OSError as e:
            raise RuntimeError(f"VM {name}: cannot prepare its disk ({disk}): {e}") from None
        cg_paths: list[str] = []
        if self._cgroups is not None:
            rel = self._cgroup_rel(name)
            if self._cgroups.exists(rel):
                self._cgroups.kill_all(rel)  # leftovers of a previous life
            self._cgroups.create(rel, memory_bytes=spec.memory_mb << 20, cpu_cores=spec.cpu)
            cg_paths = cgroup_procs_paths(self._cgroups, rel)
        self._cgroup_procs[name] = cg_paths
        if self._plan is not None:
            # Attached to this host's bridge, wherever it ran before.
            create_vm_network(self._plan, name, host=self._cfg.host)
        # The VM's namespace outlives it; its watchdog timer is the agent's (VNFHA-1).
        write_guest_config(spec, vm_dir, release_service_addresses=spec.netns is not None,
                           watchdog_device=None)
        with contextlib.suppress(FileNotFoundError):
            (vm_dir / "guest.sock").unlink()
        return disk_done

    async def launch(self, spec: VmLaunch, vm_dir: Path) -> VmLife:
        spawned = await spawn_detached(
            [self._cfg.python, "-m", "nfvha.nfvi.guest", "--vm-dir", str(vm_dir)],
            netns=spec.netns,
            cgroup_procs=self._cgroup_procs.pop(spec.name, []),
            log=str(self.console_path(vm_dir)),
            pidfile=str(vm_dir / "vm.pid"),
            python=self._cfg.python,
        )
        return VmLife(spawned.pid, spawned.start_ticks)

    # -- watching ------------------------------------------------------------
    def watch(self, spec: VmLaunch, life: VmLife, on_exit: Callable[[], None],
              on_watchdog: Callable[[], None] | None = None) -> None:
        # No watchdog device: a process VM's watchdog is the agent's timer.
        self.unwatch(spec)
        loop = asyncio.get_running_loop()
        fd = pidfd_of_life(life.pid, life.start_ticks)
        if fd is None:
            loop.call_soon(on_exit)
            return
        self._pidfds[spec.name] = fd

        def readable() -> None:
            self.unwatch(spec)
            on_exit()

        loop.add_reader(fd, readable)

    def unwatch(self, spec: VmLaunch) -> None:
        fd = self._pidfds.pop(spec.name, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def is_alive(self, life: VmLife) -> bool:
        return is_same_process(life.pid, life.start_ticks)

    def exit_status(self, life: VmLife) -> int | None:
        return zombie_status(life.pid, life.start_ticks)

    def death_cause(self, life: VmLife) -> str | None:
        return None  # its process's exit says it all

    async def exit_status_later(self, life: VmLife) -> tuple[int | None, str]:
        return await wait_exit_status(self._exits_dir, life.pid, life.start_ticks)

    # -- unmaking a VM -------------------------------------------------------
    def terminate(self, spec: VmLaunch, life: VmLife) -> None:
        kill_pid(life.pid, signal.SIGTERM, ticks=life.start_ticks)

    async def kill(self, spec: VmLaunch, life: VmLife) -> None:
        # A hung VM answers no SIGTERM, and a frozen one holds even SIGKILL pending
        # until thawed: kill, then let the kill take effect.
        kill_pid(life.pid, signal.SIGKILL, ticks=life.start_ticks)
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.thaw, self._cgroup_rel(spec.name))
        kill_pid(life.pid, signal.SIGCONT, ticks=life.start_ticks)

    async def release(self, spec: VmLaunch) -> None:
        # Its namespace outlives it, and a service address (VIP) left on eth0 would go
        # on answering ARP for a VM that is gone.
        if spec.netns is not None and not await release_service_addresses(netns=spec.netns):
            log.warning("could not release service addresses in %s", spec.netns)
        if self._cgroups is not None:
            await asyncio.to_thread(self._cgroups.kill_all, self._cgroup_rel(spec.name))

    # -- snapshots and records ----------------------------------------------
    def check_snapshot(self, spec: VmLaunch, vm_dir: Path) -> None:
        VmDisk(vm_dir).check_size()

    def snapshot(self, spec: VmLaunch, vm_dir: Path, taken: float) -> tuple[SnapshotInfo, bool]:
        # Frozen while copied: every file as of one instant. The disk size limit keeps
        # the freeze far below the hang detector's threshold.
        rel = self._cgroup_rel(spec.name)
        freeze = self._cgroups is not None and not self._cgroups.is_frozen(rel)
        if freeze:
            assert self._cgroups is not None
            self._cgroups.freeze(rel)
        try:
            return VmDisk(vm_dir).snapshot(taken), freeze
        finally:
            if freeze:
                assert self._cgroups is not None
                self._cgroups.thaw(rel)

    def sample(self, spec: VmLaunch) -> dict[str, Any] | None:
        if self._cgroups is None:
            return None
        rel = self._cgroup_rel(spec.name)
        return {
            "memory_bytes": self._cgroups.memory_usage_bytes(rel),
            "memory_limit_bytes": self._cgroups.memory_limit_bytes(rel),
            "cpu_usage_ns": self._cgroups.cpu_usage_ns(rel),
            "oom_kills": self._cgroups.oom_kill_count(rel),
        }

    def console_path(self, vm_dir: Path) -> Path:
        return vm_dir / CONSOLE_FILE
