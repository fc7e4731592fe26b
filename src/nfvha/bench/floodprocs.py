"""The flood processes of ``nfvha bench abuse``: started detached like every process of
a run (its marker in their environment, so ``nfvha down <run>`` removes them even
after a crashed benchmark), in a cgroup of their own under the run's, and stopped by
their recorded pid.

Their cgroup is capped (``cpu_cores``, 1 by default): a real flood comes from other
machines, and on one small machine an uncapped flood would measure how the kernel
shares the CPU between the flood and the system under test, not the system.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.nfvi.cgroups import cgroup_procs_paths
from nfvha.nfvi.cleanup import RUN_MARKER
from nfvha.nfvi.spawn import Spawned, spawn_detached
from nfvha.testbed.deploy import Testbed
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process, kill_pid

STOP_GRACE_S = 10.0  # SIGTERM -> its stats written and gone; then SIGKILL


@dataclass
class FloodProcs:
    tb: Testbed
    cpu_cores: float | None = 1.0
    started: dict[str, Spawned] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.tb.run.root / "bench-abuse"

    def stats_file(self, name: str) -> Path:
        return self.dir / f"flood-{name}.json"

    @property
    def _rel(self) -> str:
        return f"{self.tb.run.tag}/flood"

    def _cgroup(self) -> list[str]:
        cg = self.tb.cgroups
        if cg is None:
            return []
        cg.create(self._rel, cpu_cores=self.cpu_cores or None)
        return cgroup_procs_paths(cg, self._rel)

    def cpu_ns(self) -> int | None:
        """CPU time the flood processes used so far (None without cgroups)."""
        cg = self.tb.cgroups
        return cg.cpu_usage_ns(self._rel) if cg is not None and cg.exists(self._rel) else None

    async def start(self, name: str, mode: str, duration_s: float, workers: int,
                    extra: list[str]) -> Spawned:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats_file(name).unlink(missing_ok=True)
        argv = [self.tb.python, "-m", "nfvha.bench.flood", mode, "--api", self.tb.api_url,
                "--duration", str(duration_s), "--workers", str(workers),
                "--stats", str(self.stats_file(name)),
                "--token-file", str(self.tb.run.controller_dir / "tokens.json"), *extra]
        sp = await spawn_detached(
            argv, env={**os.environ, RUN_MARKER: self.tb.run.run_id},
            cgroup_procs=await asyncio.to_thread(self._cgroup),
            log=str(self.dir / f"flood-{name}.log"),
            pidfile=str(self.dir / f"flood-{name}.pid"), python=self.tb.python or sys.executable)
        self.started[name] = sp
        return sp

    def running(self) -> list[str]:
        return [n for n, sp in self.started.items() if is_same_process(sp.pid, sp.start_ticks)]

    async def stop(self) -> None:
        """SIGTERM to each (it writes its stats and exits), SIGKILL to any still there
        after the grace time. By pid and start time only."""
        for sp in self.started.values():
            kill_pid(sp.pid, signal.SIGTERM, ticks=sp.start_ticks)
        loop = asyncio.get_running_loop()
        end = loop.time() + STOP_GRACE_S
        while loop.time() < end:
            if not self.running():
                break
            await asyncio.sleep(0.05)  # detached: not our children, nothing to wait on
        for name in self.running():
            sp = self.started[name]
            kill_pid(sp.pid, signal.SIGKILL, ticks=sp.start_ticks)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.started:
            try:
                out[name] = read_json(self.stats_file(name))
            except (FileNotFoundError, ValueError):
                out[name] = {"error": f"no stats (see {self.dir}/flood-{name}.log)"}
        return out
