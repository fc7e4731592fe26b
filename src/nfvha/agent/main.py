"""``nfvha agent``: the host agent, one per host (the NFVI level).

It watches the host's VMs, VNFCs, host processes, links and sensors, reports
every change to the controller at once, and carries out the controller's
commands. Started (and restarted after a crash) by the host supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nfvha.agent.config import AgentConfig, launch_spec
from nfvha.agent.emit import Emitter
from nfvha.agent.hostprocs import HostProcessSupervisor
from nfvha.agent.hypervisor.contract import HypervisorDriver
from nfvha.agent.hypervisor.process import ProcessDriver
from nfvha.agent.netlink import LinkMonitor
from nfvha.agent.notices import NoticeSender
from nfvha.agent.sensors import SensorEvaluator, SensorSource
from nfvha.agent.sensors import Severity as SensorSeverity
from nfvha.agent.spool import EventSpool
from nfvha.agent.uplink import ControllerLink
from nfvha.agent.vms import VmManager, disk_mode
from nfvha.model.events import EventType, Kind, Severity
from nfvha.nfvi.cgroups import CgroupDriver, detect_cgroups
from nfvha.nfvi.fabric import FabricPlan
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.files import atomic_write_json, read_json
from nfvha.util.logs import setup_logging
from nfvha.util.runpaths import RunPaths
from nfvha.wire.frames import Command, Hello, Inventory, Reply

log = logging.getLogger("nfvha.agent")

VM_START_THREADS = 32


def make_driver(cfg: AgentConfig, run: RunPaths, cgroups: CgroupDriver | None,
                plan: FabricPlan | None) -> HypervisorDriver:
    """The host's hypervisor driver, as its configuration says (ADR 0019)."""
    if cfg.hypervisor == "libvirt":
        # Imported here: the module needs libvirt's Python binding, which a host of
        # process VMs (and the loopback test bed) may not have.
        from nfvha.agent.hypervisor.libvirt import LibvirtDriver

        return LibvirtDriver(cfg, run, plan)
    return ProcessDriver(cfg, run, cgroups, plan)


class Agent:
    def __init__(self, cfg: AgentConfig, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cfg = cfg
        self.run = RunPaths(cfg.run_id)
        self.clock = clock
        self.host_dir = self.run.host_dir(cfg.host)
        self.state_path = self.host_dir / "agent-state.json"
        self.spool = EventSpool(self.host_dir / "spool", clock)
        self.emitter = Emitter(cfg.host, clock, self.spool)
        cgroups: CgroupDriver | None = detect_cgroups() if cfg.cgroups else None
        self._state_lock = threading.Lock()
        self._state_taken = 0  # snapshots of the state taken (on the loop), in order
        self._state_written = 0  # the newest of them on disk
        plan = FabricPlan.from_json(cfg.fabric) if cfg.fabric else None
        self.driver: HypervisorDriver = make_driver(cfg, self.run, cgroups, plan)
        self.vms = VmManager(cfg, self.run, clock, self.emitter, self.driver, self._changed,
                             self._persist_now)
        self.procs = HostProcessSupervisor(cfg, self.run, clock, self.emitter, cgroups,
                                           self._changed, self._save_state)
        self.links: dict[str, bool] = {}
        self.sensor_values: dict[str, float] = {}
        self._state_dirty = asyncio.Event()
        self.link: ControllerLink | None = None

    def _changed(self) -> None:
        self._state_dirty.set()
        if self.link is not None:
            self.link.inventory_changed()

    def inventory(self) -> Inventory:
        vms, vnfcs = self.vms.inventory()
        return Inventory(host=self.cfg.host, vms=vms, vnfcs=vnfcs,
                         processes=self.procs.inventory(), links=dict(self.links),
                         sensors=dict(self.sensor_values))

    def _previous_exit(self) -> str | None:
        """How the previous agent of this host ended, as recorded by the supervisor."""
        path = self.host_dir / "agent-exits.jsonl"
        try:
            last = path.read_text().strip().splitlines()[-1]
            rec = json.loads(last)
        except (FileNotFoundError, IndexError, ValueError):
            return None
        if "boot" in rec:  # the supervisor started afresh: a power-on, not a crash
            return None
        return str(rec.get("desc"))

    async def run_forever(self) -> None:
        cfg = self.cfg
        # Blocking work goes to threads (VM starts: disk, cgroup, network, state file);
        # the default pool (CPUs + 4) would queue a host's parallel VM starts behind
        # each other.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=VM_START_THREADS, thread_name_prefix="agent"))
        saved: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            saved = read_json(self.state_path)
        restarted_after = self._previous_exit() if saved else None
        hello = Hello(host=cfg.host, agent_pid=os.getpid(), incarnation=uuid.uuid4().hex,
                      started_time=self.clock.wall(), restarted_after=restarted_after)
        self.link = ControllerLink(
            cfg.host, cfg.controller_addresses(), self.spool, hello,
            self._command, self.inventory, cfg.settings.reconnect_backoff_initial_s,
            cfg.settings.reconnect_backoff_max_s,
            # The leader epoch seen last (ADR 0013) outlives the agent: kept with its state.
            leader_epoch=int(saved.get("leader_epoch", 0)),
            on_epoch=lambda _: self._state_dirty.set(),
        )
        self.emitter.link = self.link
        self.emitter.notices = NoticeSender(cfg.controller_addresses(), cfg.host,
                                            hello.incarnation)
        self.emitter.emit(
            Kind.AGENT_STARTED, f"host/{cfg.host}", severity=Severity.INDETERMINATE,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="agent-start",
            description=f"agent on {cfg.host} started (pid {os.getpid()})"
            + (f" after the previous one ended: {restarted_after}" if restarted_after else ""),
            informational=True, details={"pid": os.getpid(), "restarted_after": restarted_after},
        )
        tasks = [asyncio.create_task(self.link.run(), name="uplink")]
        await self.driver.start()
        await self.vms.adopt(saved.get("vms", {}))
        await self.procs.start(saved.get("processes", {}))
        tasks += [
            asyncio.create_task(self.vms.record_loop(), name="records"),
            asyncio.create_task(self._save_state_loop(), name="state"),
            asyncio.create_task(self._spool_sync_loop(), name="spool-sync"),
            asyncio.create_task(self._sensor_loop(), name="sensors"),
            asyncio.create_task(self._condition_loop(), name="conditions"),
        ]
        if cfg.links:
            tasks.append(asyncio.create_task(self._link_loop(), name="links"))
        self._save_state()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is not waiter and t.exception() is not None:
                log.error("agent task %s failed", t.get_name(), exc_info=t.exception())
        for t in tasks:
            t.cancel()
        # VMs and host processes keep running: stopping the agent is not stopping the host.
        self._save_state()
        await self.driver.close()
        self.spool.close()

    # -- commands from the controller -----------------------------------------
    async def _command(self, cmd: Command) -> Reply:
        try:
            if cmd.op == "vm.start":
                result = await self.vms.start_vm(cmd.target, reply_within(cmd),
                                                 disk=disk_mode(cmd.args),
                                                 spec=launch_spec(cmd.args))
            elif cmd.op == "vm.stop":
                result = await self.vms.stop_vm(cmd.target)
            elif cmd.op == "vm.snapshot":
                result = await self.vms.snapshot_vm(cmd.target)
            elif cmd.op == "vnfc.start":
                result = await self.vms.start_vnfc(cmd.target)
            else:
                result = await self.vms.stop_vnfc(cmd.target, str(cmd.args.get("signal", "TERM")))
        except (KeyError, RuntimeError, TimeoutError, ValueError) as e:
            return Reply(id=cmd.id, ok=False, error=str(e).strip("'\"") or type(e).__name__)
        return Reply(id=cmd.id, ok=True, result=result)

    # -- state file ------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {"vms": self.vms.saved_state(), "processes": self.procs.saved_state(),
                "leader_epoch": self.link.leader_epoch if self.link is not None else 0}

    def _take_state(self) -> tuple[dict[str, Any], int]:
        """A snapshot of the state (taken on the loop) and its number."""
        self._state_taken += 1
        return self._snapshot(), self._state_taken

    def _write_state(self, state: dict[str, Any], number: int) -> None:
        # Several writers (VM starts, the saver, the loop itself) in threads: one at a
        # time, and never an older snapshot over a newer one (which has all it had).
        with self._state_lock:
            if number <= self._state_written:
                return
            atomic_write_json(self.state_path, state)
            self._state_written = number

    def _save_state(self) -> None:
        self._write_state(*self._take_state())

    async def _persist_now(self) -> None:
        """Write the state file now, off the loop: a host's VM starts run in parallel,
        and none waits for another's fsync."""
        await asyncio.to_thread(self._write_state, *self._take_state())

    async def _spool_sync_loop(self) -> None:
        interval = self.cfg.settings.event_spool_fsync_interval_s
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.spool.sync)

    async def _save_state_loop(self) -> None:
        while True:
            await self._state_dirty.wait()
            self._state_dirty.clear()
            await asyncio.to_thread(self._write_state, *self._take_state())

    # -- links -----------------------------------------------------------------
    async def _link_loop(self) -> None:
        mon = LinkMonitor(set(self.cfg.links))
        await mon.start()
        for name, st in mon.snapshot().items():
            self.links[name] = st.admin_up and st.oper_up
        self._changed()
        async for _old, new, mono_ns in mon.changes():
            up = new.admin_up and new.oper_up
            was = self.links.get(new.ifname)
            self.links[new.ifname] = up
            self._changed()
            if was == up:
                continue
            self.emitter.emit(
                Kind.LINK_UP if up else Kind.LINK_DOWN, f"host/{self.cfg.host}",
                severity=Severity.MAJOR, event_type=EventType.COMMUNICATIONS_ALARM,
                probable_cause="link-failure", clears=up, detected_mono_ns=mono_ns,
                description=f"link {new.ifname} on {self.cfg.host} is {'up' if up else 'down'}",
                details={"link": new.ifname, "admin_up": new.admin_up, "oper_up": new.oper_up},
            )

    # -- hardware --------------------------------------------------------------
    async def _sensor_loop(self) -> None:
        source = SensorSource(injected_file=self.host_dir / "sensors.json")
        evaluator = SensorEvaluator(self.clock)
        while True:
            readings = await asyncio.to_thread(source.read)
            self.sensor_values = {k: r.value for k, r in readings.items()}
            for f in evaluator.evaluate(readings):
                ok = f.severity == SensorSeverity.OK
                self.emitter.emit(
                    Kind.SENSOR, f"host/{self.cfg.host}",
                    severity=Severity.CRITICAL if f.severity == SensorSeverity.CRITICAL
                    else Severity.WARNING,
                    event_type=EventType.EQUIPMENT_ALARM, probable_cause="host-hardware-failure",
                    clears=ok, description=f"{self.cfg.host}: {f.reason}",
                    details={"sensor": f.sensor, "value": f.value, "reason": f.reason,
                             "source": readings[f.sensor].source if f.sensor in readings
                             else None},
                )
            await asyncio.sleep(self.cfg.settings.sensor_poll_interval_s)

    async def _condition_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.settings.condition_report_interval_s)
            self.emitter.emit(
                Kind.HOST_CONDITION, f"host/{self.cfg.host}", severity=Severity.INDETERMINATE,
                event_type=EventType.ENVIRONMENTAL_ALARM, probable_cause="periodic-report",
                informational=True, description=f"running conditions of {self.cfg.host}",
                details=host_conditions(self),
            )


def reply_within(cmd: Command) -> float | None:
    """How long a command may take here so that its reply still reaches a controller
    that waits ``cmd.timeout_s`` from its start (None: no limit given)."""
    if cmd.timeout_s is None:
        return None
    return max(cmd.timeout_s * 0.5, cmd.timeout_s - min(1.0, cmd.timeout_s * 0.1))


def host_conditions(agent: Agent) -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    mem: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = int(rest.split()[0]) * 1024
    vms = agent.vms.vms.values()
    return {
        "load": [load1, load5, load15],
        "memory_total_bytes": mem.get("MemTotal"),
        "memory_available_bytes": mem.get("MemAvailable"),
        "vms_running": sum(1 for v in vms if v.state == "running"),
        "vms_total": len(agent.vms.vms),
        "sensors": dict(agent.sensor_values),
        "links": dict(agent.links),
        "processes": {p.name: p.state for p in agent.procs.inventory()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha agent")
    p.add_argument("--config", type=Path, required=True)
    args = p.parse_args(argv)
    setup_logging("agent")
    cfg = AgentConfig.load(args.config)
    asyncio.run(Agent(cfg).run_forever())
    return 0


if __name__ == "__main__":
    sys.exit(main())
