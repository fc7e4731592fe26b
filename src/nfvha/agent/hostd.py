"""``nfvha hostd``: the host supervisor (the host's init, in the local NFVI).

Three small jobs, kept apart from the agent so that each survives the other:
- start the agent and restart it with backoff when it dies (MW-1), recording
  how it ended in ``agent-exits.jsonl`` for the next agent to report, and reporting
  the failure and the restart to the configured destinations (HV-3, ``hostreport``);
- be the child subreaper of the host: VMs and host processes are started
  detached, so they are reparented here; reap them and record their wait
  status in ``exits/<pid>.json`` (their "last words" need it);
- the host's side of liveness (ADR 0015, ``liveness_endpoint``): heartbeats to
  the director, answers to pings, probes of other hosts as a witness. Host
  liveness is this process's, so an agent crash never looks like a dead host.

Standard library only: it starts in a few milliseconds and has little to break.
``--liveness-only`` runs just the liveness endpoint (no agent, no reaping): a
host as the director sees it, for protocol tests and simulated hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from nfvha.agent.hostreport import HostReporter
from nfvha.agent.liveness_endpoint import LivenessEndpoint
from nfvha.util.files import atomic_write, atomic_write_json
from nfvha.util.procs import describe_wait_status, read_stat

PR_SET_CHILD_SUBREAPER = 36


class HostSupervisor:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.cfg: dict[str, Any] = json.loads(config_path.read_text())
        run_root = Path(os.environ.get("NFVHA_RUN_ROOT", "/tmp"))
        self.host: str = self.cfg["host"]
        self.host_dir = run_root / f"nfvha-{self.cfg['run_id']}" / "hosts" / self.host
        self.exits_dir = self.host_dir / "exits"
        self.exits_dir.mkdir(parents=True, exist_ok=True)
        s = self.cfg.get("settings", {})
        self.backoff_initial = s.get("agent_restart_backoff_initial_s", 0.05)
        self.backoff_max = s.get("agent_restart_backoff_max_s", 5.0)
        self.backoff_reset = s.get("restart_backoff_reset_s", 30.0)
        self.backoff = 0.0
        self.liveness = LivenessEndpoint.from_config(self.cfg)
        self.reporter = HostReporter(self.host, self.cfg["run_id"], self.host_dir,
                                     list(s.get("host_report_destinations", [])))
        self.boot = f"{self.liveness.boot:016x}"
        self.agent_pid: int | None = None
        self.agent_started = 0.0
        self.stopping = False

    # -- agent -------------------------------------------------------------------
    def start_agent(self) -> None:
        log = os.open(self.host_dir / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            pid = os.posix_spawn(
                self.cfg["python"],
                [self.cfg["python"], "-m", "nfvha.agent.main", "--config", str(self.config_path)],
                dict(os.environ),
                file_actions=[(os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2)],
            )
        finally:
            os.close(log)
        self.agent_pid = pid
        self.agent_started = time.monotonic()
        st = read_stat(pid)
        atomic_write_json(
            self.host_dir / "agent.pid",
            {"pid": pid, "start_ticks": st.start_ticks if st else None},
            fsync=False,
        )

    def agent_ended(self, status: int) -> None:
        desc = describe_wait_status(status)
        with open(self.host_dir / "agent-exits.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "pid": self.agent_pid, "status": status,
                                "desc": desc}) + "\n")
        pid, self.agent_pid = self.agent_pid, None
        if self.stopping:
            return
        ran = time.monotonic() - self.agent_started
        if ran >= self.backoff_reset or self.backoff == 0.0:
            self.backoff = self.backoff_initial
        else:
            self.backoff = min(self.backoff * 2, self.backoff_max)
        self.reporter.report("agent-failed", "err", f"agent (pid {pid}) on {self.host}"
                             f" ended after {ran:.1f} s: {desc}; restarting it in"
                             f" {self.backoff:g} s", pid=pid, status=status, desc=desc,
                             ran_s=round(ran, 3), restart_in_s=self.backoff)
        asyncio.get_running_loop().call_later(self.backoff, self._restart_agent, pid)

    def _restart_agent(self, failed_pid: int | None) -> None:
        if not self.stopping and self.agent_pid is None:
            self.start_agent()
            self.reporter.report("agent-restarted", "notice",
                                 f"agent on {self.host} restarted (pid {self.agent_pid})"
                                 f" in place of pid {failed_pid}", pid=self.agent_pid,
                                 replaces=failed_pid)

    # -- reaping orphans ---------------------------------------------------------
    def reap(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            st = read_stat(pid)  # still a zombie thanks to WNOWAIT: its start time is readable
            _, status = os.waitpid(pid, 0)
            if pid == self.agent_pid:
                self.agent_ended(status)
                continue
            rec = {"pid": pid, "start_ticks": st.start_ticks if st else None, "status": status,
                   "desc": describe_wait_status(status), "time": time.time()}
            atomic_write(self.exits_dir / f"{pid}.json", json.dumps(rec).encode(), fsync=False)

    def boot_up(self) -> None:
        """Become the host's subreaper and mark a fresh boot for the next agent."""
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        with open(self.host_dir / "agent-exits.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "boot": self.boot}) + "\n")
        atomic_write_json(self.host_dir / "hostd.pid",
                          {"pid": os.getpid(), "boot": self.boot}, fsync=False)

    async def run(self) -> None:
        self.boot_up()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGCHLD, self.reap)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        self.liveness.start()
        self.start_agent()
        self.reporter.report("hostd-started", "notice",
                             f"host supervisor of {self.host} started (boot {self.boot}),"
                             f" agent pid {self.agent_pid}", boot=self.boot, pid=self.agent_pid)
        await stop.wait()
        self.stopping = True
        self.liveness.close()
        if self.agent_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.agent_pid, signal.SIGTERM)
            for _ in range(100):
                self.reap()
                if self.agent_pid is None:
                    break
                await asyncio.sleep(0.02)
        self.reporter.close()


async def run_liveness_only(endpoint: LivenessEndpoint) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    endpoint.start()
    await stop.wait()
    endpoint.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha hostd")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--liveness-only", action="store_true",
                   help="only heartbeats, ping answers and witness probes: no agent")
    args = p.parse_args(argv)
    if args.liveness_only:
        cfg = json.loads(args.config.read_text())
        asyncio.run(run_liveness_only(LivenessEndpoint.from_config(cfg)))
    else:
        asyncio.run(HostSupervisor(args.config).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
