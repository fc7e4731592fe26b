"""The processes of one ``nfvha bench scale`` run: the host simulators, the real
controller and its HA director, and the run's files.

Everything lives under the run directory ``<run root>/nfvha-<run>``: the topology,
the controller's configuration and tokens, every process's log, and ``run.json``
(with the pids, so ``nfvha down <run>`` removes a run whose bench died). Every process
carries the run's marker in its environment and is stopped by its pid alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nfvha.bench.scaleplan import ScalePlan, SimSpec, controller_config, topology_text
from nfvha.bench.simwire import SIM_OUTPUT, AnyRequest, Bound, Reply
from nfvha.bench.simwire import Stop as SimStop
from nfvha.controller.config import ControllerConfig
from nfvha.model.auth import new_token
from nfvha.nfvi.cleanup import RUN_MARKER, teardown_run
from nfvha.testbed.deploy import free_tcp_port
from nfvha.testbed.services import free_tcp_udp_port
from nfvha.util.files import atomic_write_json, tail_lines
from nfvha.util.procs import is_same_process, kill_pid, start_ticks
from nfvha.util.runpaths import RunPaths

STOP_TIMEOUT_S = 10.0
# The simulators' niceness where allowed (root): they stand for other machines and must
# not be what a busy machine delays (they use a few per cent of a core).
SIM_NICE = -10
SIM_BIND_TIMEOUT_S = 120.0  # binding thousands of sockets on a loaded machine
# Per simulated host: the simulator's UDP and TCP sockets, the controller's TCP end;
# plus room for everything else a process opens.
FDS_PER_HOST = 4
FDS_SPARE = 4096


class ScaleRunError(RuntimeError):
    pass


def raise_fd_limit(hosts: int) -> int:
    """RLIMIT_NOFILE for this process and so for every process it starts: thousands of
    sockets. As root the hard limit is raised too when it is too low. Returns the soft
    limit now in force."""
    need = hosts * FDS_PER_HOST + FDS_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need and os.geteuid() == 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            soft, hard = need, need
    target = need if hard == resource.RLIM_INFINITY else min(max(soft, need), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class ControlProcess:
    """The controller or its director: a process of the run, stopped by pid."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ticks: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 15) -> str:
        return "\n".join(tail_lines(self.log, n))

    def stop(self) -> None:
        if self.proc.poll() is None:
            kill_pid(self.pid, signal.SIGTERM, ticks=self.ticks)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_pid(self.pid, signal.SIGKILL, ticks=self.ticks)
                self.proc.wait(STOP_TIMEOUT_S)


@dataclass
class SimProcess:
    """One host simulator (``nfvha.bench.hostsim``): the supervisors or the agents of
    shard ``index``, and its control channel."""

    index: int
    role: str
    proc: asyncio.subprocess.Process
    log: Path
    bound: Bound | None = None
    _ids: int = 0
    _waiting: dict[int, asyncio.Future[Reply]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @classmethod
    async def start(cls, index: int, count: int, role: str, spec_file: Path, log: Path,
                    env: dict[str, str]) -> SimProcess:
        err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "nfvha.bench.hostsim", "--role", role,
                "--spec", str(spec_file), "--shard", str(index), "--shards", str(count),
                "--nice", str(SIM_NICE),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err,
                env=env, start_new_session=True, limit=16 << 20)
        finally:
            os.close(err)
        return cls(index, role, proc, log)

    async def wait_bound(self, timeout_s: float = SIM_BIND_TIMEOUT_S) -> Bound:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise ScaleRunError(f"simulator {self.name} ended before binding its hosts: "
                                + " | ".join(tail_lines(self.log, 5)))
        first = SIM_OUTPUT.validate_json(line)
        if not isinstance(first, Bound):
            raise ScaleRunError(f"simulator {self.name}: expected its ports, got {first}")
        self.bound = first
        self._reader = asyncio.create_task(self._read(), name=f"sim-{self.name}")
        return first

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for line in self.proc.stdout:
                out = SIM_OUTPUT.validate_json(line)
                if isinstance(out, Reply):
                    fut = self._waiting.pop(out.id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(out)
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ScaleRunError(f"simulator {self.name} ended"))
            self._waiting.clear()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def request(self, msg: AnyRequest, timeout_s: float = 30.0) -> Reply:
        """Send ``msg`` (its id from ``next_id``) and wait for the reply to it."""
        assert self.proc.stdin is not None
        if self._reader is None or self._reader.done():
            raise ScaleRunError(f"simulator {self.name} is not running")
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[msg.id] = fut
        self.proc.stdin.write(msg.model_dump_json().encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiting.pop(msg.id, None)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ScaleRunError, OSError, TimeoutError, ConnectionError):
                await self.request(SimStop(id=self.next_id()), timeout_s=5.0)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


class ScaleRun:
    """The run directory and the processes in it."""

    def __init__(self, run: RunPaths, plan: ScalePlan) -> None:
        self.run = run
        self.plan = plan
        self.admin_token = new_token()
        self.api_port = free_tcp_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.controller_ip = "127.0.0.1"
        self.controller_port = 0
        self.env = {**os.environ, RUN_MARKER: run.run_id}
        self.sims: list[SimProcess] = []  # every simulator process
        self.supervisors: list[SimProcess] = []  # by shard
        self.agents: list[SimProcess] = []  # by shard
        self.controller: ControlProcess | None = None
        self.director: ControlProcess | None = None
        self.config: ControllerConfig | None = None
        self._pids: list[dict[str, int]] = []

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    @property
    def config_file(self) -> Path:
        return self.run.controller_dir / "controller.json"

    def prepare(self) -> Path:
        """The run directory, its run.json (before anything starts: ``nfvha down``
        finds it), the topology and the simulators' spec. Returns the spec's path."""
        self.run.root.mkdir(parents=True, exist_ok=False)
        self.run.controller_dir.mkdir()
        self._write_run_file()
        self.run.topology_file.write_text(topology_text(self.plan.topology))
        spec = SimSpec(run_id=self.run.run_id, controller_ip=self.controller_ip,
                       controller_port=0,
                       host_heartbeat_interval_ms=self.plan.topology.settings
                       .host_heartbeat_interval_ms,
                       host_probe_timeout_ms=self.plan.topology.settings.host_probe_timeout_ms,
                       reconnect_backoff_initial_s=self.plan.topology.settings
                       .reconnect_backoff_initial_s,
                       reconnect_backoff_max_s=self.plan.topology.settings
                       .reconnect_backoff_max_s,
                       hosts=self.plan.hosts)
        path = self.run.root / "simulator.json"
        path.write_text(spec.model_dump_json())
        return path

    def _write_run_file(self) -> None:
        atomic_write_json(self.run.run_file, {
            "run_id": self.run.run_id, "api_url": self.api_url, "mode": "loopback",
            "topology_file": str(self.run.topology_file), "plan": None,
            "owner_pid": os.getpid(), "pids": self._pids, "created": time.time(),
            "bench": "scale"}, fsync=False)

    def _record(self, pid: int) -> int | None:
        ticks = start_ticks(pid)
        if ticks is not None:
            self._pids.append({"pid": pid, "start_ticks": ticks})
            self._write_run_file()
        return ticks

    async def start_simulators(self, count: int, spec_file: Path) -> dict[str, int]:
        """Start the hosts in ``count`` shards, each a supervisors' and an agents'
        simulator; every host's UDP port once they are bound."""
        for i in range(count):
            for role, group in (("supervisors", self.supervisors), ("agents", self.agents)):
                sim = await SimProcess.start(i, count, role, spec_file,
                                             self.run.root / f"sim-{role}-{i}.log", self.env)
                self.sims.append(sim)
                group.append(sim)
                self._record(sim.pid)
        ports: dict[str, int] = {}
        for b in await asyncio.gather(*(s.wait_bound() for s in self.sims)):
            ports.update(b.ports)
        return ports

    def write_controller_config(self, probe_ports: dict[str, int]) -> ControllerConfig:
        self.controller_port = free_tcp_udp_port(self.controller_ip)
        cfg = controller_config(
            self.plan, run_id=self.run.run_id, run_dir=self.run.root,
            topology_file=self.run.topology_file, listen_ip=self.controller_ip,
            port=self.controller_port, api_port=self.api_port, amf_port=free_tcp_port(),
            probe_ports=probe_ports, admin_token=self.admin_token)
        self.config_file.write_text(cfg.model_dump_json(indent=1))
        # As the test bed does: the token itself to root only, for the CLI.
        fd = os.open(self.run.controller_dir / "tokens.json",
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"admin": self.admin_token}, f)
        self.config = cfg
        return cfg

    def _spawn(self, name: str, module: str) -> ControlProcess:
        log = self.run.controller_dir / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--config", str(self.config_file)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True)
        cp = ControlProcess(name, proc, log)
        cp.ticks = self._record(proc.pid)
        return cp

    def start_control(self) -> None:
        """The HA director first (it listens on the channel), then the controller."""
        self.director = self._spawn("director", "nfvha.director.main")
        self.controller = self._spawn("controller", "nfvha.controller.main")

    def control_processes(self) -> list[ControlProcess]:
        return [p for p in (self.controller, self.director) if p is not None]

    def check_control_alive(self) -> None:
        for p in self.control_processes():
            if not p.alive():
                raise ScaleRunError(f"the {p.name} (pid {p.pid}) exited with"
                                    f" {p.proc.returncode}; its log ends:\n{p.log_tail()}")

    async def stop(self, *, keep_files: bool = False) -> None:
        """Every process of the run, by pid - the controller first, then its director,
        then the hosts (hosts gone before them would only make them raise alarms) -
        then whatever carries the run's marker, and the run directory unless kept."""
        for p in (self.controller, self.director):
            if p is not None:
                await asyncio.to_thread(p.stop)
        await asyncio.gather(*(s.stop() for s in self.sims), return_exceptions=True)
        self.stop_now(keep_files=keep_files)

    def stop_now(self, *, keep_files: bool = False) -> None:
        """Synchronous last resort (also after the event loop is gone)."""
        for s in self.sims:
            if s.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    s.proc.kill()
        for p in (self.controller, self.director):
            if p is not None and p.alive():
                kill_pid(p.pid, signal.SIGKILL, ticks=p.ticks)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.proc.wait(STOP_TIMEOUT_S)
        for rec in self._pids:
            if is_same_process(rec["pid"], rec["start_ticks"]):
                kill_pid(rec["pid"], signal.SIGKILL, ticks=rec["start_ticks"])
        if self.run.root.exists():
            teardown_run(self.run.run_id, keep_files=keep_files)
