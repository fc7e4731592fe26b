"""Host processes (the stand-ins for vswitch / compute services): watched,
restarted with exponential backoff, and reported (FM-3, MW-4).

They are started detached, like VMs, so they outlive an agent crash; a new
agent adopts them from the state file.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

from nfvha.agent.config import AgentConfig, ProcessLaunch
from nfvha.agent.emit import Emitter
from nfvha.agent.exits import wait_exit_status
from nfvha.model.events import EventType, Kind, Severity
from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths
from nfvha.nfvi.spawn import SpawnError, spawn_detached
from nfvha.util.clock import Clock
from nfvha.util.procs import is_same_process, pidfd_open
from nfvha.util.runpaths import RunPaths
from nfvha.util.tasks import background
from nfvha.wire.frames import ProcessInfo

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Exponential restart delay, reset after a long enough healthy run."""

    initial_s: float
    max_s: float
    reset_after_s: float
    current_s: float = 0.0

    def next_delay(self, ran_for_s: float) -> float:
        if ran_for_s >= self.reset_after_s or self.current_s == 0.0:
            self.current_s = self.initial_s
        else:
            self.current_s = min(self.current_s * 2, self.max_s)
        return self.current_s


@dataclass
class ProcessRuntime:
    spec: ProcessLaunch
    backoff: Backoff
    state: str = "restarting"
    pid: int | None = None
    start_ticks: int | None = None
    started_mono_ns: int = 0
    restarts: int = 0


class HostProcessSupervisor:
    def __init__(
        self,
        cfg: AgentConfig,
        run: RunPaths,
        clock: Clock,
        emitter: Emitter,
        cgroups: CgroupDriver | None,
        on_change: Any,
        persist: Any,
    ) -> None:
        self._persist = persist  # () -> None: write the state file now
        self._cfg = cfg
        self._run = run
        self._clock = clock
        self._emit = emitter
        self._cgroups = cgroups
        self._on_change = on_change
        s = cfg.settings
        self.procs = {
            p.name: ProcessRuntime(
                spec=p,
                backoff=Backoff(
                    s.process_restart_backoff_initial_s,
                    s.process_restart_backoff_max_s,
                    s.restart_backoff_reset_s,
                ),
            )
            for p in cfg.processes
        }
        self._host_dir = run.host_dir(cfg.host)

    def saved_state(self) -> dict[str, Any]:
        return {
            n: {"pid": p.pid, "start_ticks": p.start_ticks, "restarts": p.restarts}
            for n, p in self.procs.items()
        }

    async def start(self, saved: dict[str, Any]) -> None:
        for name, p in self.procs.items():
            rec = saved.get(name) or {}
            pid, ticks = rec.get("pid"), rec.get("start_ticks")
            p.restarts = int(rec.get("restarts") or 0)
            if pid is not None and ticks is not None and is_same_process(int(pid), int(ticks)):
                p.pid, p.start_ticks, p.state = int(pid), int(ticks), "running"
                p.started_mono_ns = self._clock.mono_ns()
                self._watch(p)
            elif pid is not None:
                # Died while the agent was away.
                p.pid, p.start_ticks = int(pid), int(ticks) if ticks is not None else None
                self._failed(p, self._clock.mono_ns(), late=True)
            else:
                await self._spawn(p)
        self._on_change()

    async def _spawn(self, p: ProcessRuntime) -> None:
        cg: list[str] = []
        if self._cgroups is not None:
            cg = cgroup_procs_paths(self._cgroups, f"{self._run.tag}/{self._cfg.host}/system")
        try:
            sp = await spawn_detached(
                p.spec.argv, cgroup_procs=cg, log=str(self._host_dir / f"{p.spec.name}.log"),
                python=self._cfg.python,
            )
        except SpawnError as e:
            delay = p.backoff.next_delay(0.0)
            if p.state != "failed":
                self._emit.emit(
                    Kind.HOST_PROCESS_FAILED, f"host/{self._cfg.host}", severity=Severity.MAJOR,
                    event_type=EventType.PROCESSING_ERROR_ALARM,
                    probable_cause="host-software-failure",
                    description=f"host process {p.spec.name} on {self._cfg.host} cannot be"
                    f" started: {e}; retrying with backoff",
                    details={"process": p.spec.name, "error": str(e), "restart_in_s": delay},
                )
            p.state = "failed"
            self._on_change()
            self._schedule_restart(p, delay)
            return
        p.pid, p.start_ticks, p.state = sp.pid, sp.start_ticks, "running"
        p.started_mono_ns = self._clock.mono_ns()
        self._persist()  # before anything else: a new agent must adopt, not start a second
        self._watch(p)
        self._on_change()

    def _watch(self, p: ProcessRuntime) -> None:
        assert p.pid is not None
        fd = pidfd_open(p.pid)
        loop = asyncio.get_running_loop()
        if fd is None:
            loop.call_soon(self._failed, p, self._clock.mono_ns(), False)
            return

        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self._failed(p, self._clock.mono_ns(), False)

        loop.add_reader(fd, on_exit)

    def _failed(self, p: ProcessRuntime, detected_mono_ns: int, late: bool) -> None:
        ran_s = (detected_mono_ns - p.started_mono_ns) / 1e9 if not late else 0.0
        delay = p.backoff.next_delay(ran_s)
        p.state = "restarting"
        self._emit.emit(
            Kind.HOST_PROCESS_FAILED, f"host/{self._cfg.host}", severity=Severity.MAJOR,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="host-software-failure",
            description=f"host process {p.spec.name} (pid {p.pid}) on {self._cfg.host} died;"
            f" restarting in {delay:.2f} s",
            detected_mono_ns=detected_mono_ns,
            details={"process": p.spec.name, "pid": p.pid, "restart_in_s": delay,
                     "detected_late": late},
        )
        if p.pid is not None and p.start_ticks is not None:
            background(self._report_status(p.spec.name, p.pid, p.start_ticks))
        self._on_change()
        self._schedule_restart(p, delay)

    async def _report_status(self, name: str, pid: int, ticks: int) -> None:
        _, desc = await wait_exit_status(self._host_dir / "exits", pid, ticks)
        log.info("host process %s (pid %d) ended: %s", name, pid, desc)

    def _schedule_restart(self, p: ProcessRuntime, delay: float) -> None:
        async def restart() -> None:
            await asyncio.sleep(delay)
            await self._spawn(p)
            if p.state == "running":
                p.restarts += 1
                self._emit.emit(
                    Kind.HOST_PROCESS_RESTARTED, f"host/{self._cfg.host}",
                    severity=Severity.CLEARED, event_type=EventType.PROCESSING_ERROR_ALARM,
                    probable_cause="host-software-failure", clears=True,
                    description=f"host process {p.spec.name} restarted (pid {p.pid})",
                    details={"process": p.spec.name, "pid": p.pid, "restarts": p.restarts},
                )
                self._on_change()

        background(restart())

    def inventory(self) -> list[ProcessInfo]:
        return [
            ProcessInfo(name=n, state=p.state, pid=p.pid, restarts=p.restarts)
            for n, p in self.procs.items()
        ]
