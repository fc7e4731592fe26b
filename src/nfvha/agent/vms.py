"""VMs and their VNFCs on one host: start, stop, watch, records, last words.

How a VM is made, stopped and watched is its hypervisor driver's (ADR 0019:
``nfvha.agent.hypervisor``); this module owns what a VM is to the VIM: its state, its
events, its guest link, its records. A VM's death is seen by its driver
(event-driven: a pidfd, a hypervisor's lifecycle event); a VM's hang through its guest
link's heartbeat, armed once the guest reports it has booted (a VM that does not boot
within its ``boot_timeout_s`` is reported as such, not as hung); a VNFC's death
through the guest, which is its parent. After an agent restart, running VMs are
adopted from the state file and never restarted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.agent.config import AgentConfig, VmLaunch
from nfvha.agent.emit import Emitter
from nfvha.agent.guestlink import GuestEvent, GuestLink, GuestVnfc
from nfvha.agent.hypervisor.contract import HypervisorDriver, VmLife
from nfvha.model.events import EventType, Kind, Severity
from nfvha.nfvi.disk import DISK_MODES, DiskError, DiskMode
from nfvha.nfvi.fabric import FabricPlan, vm_attached_host
from nfvha.util.clock import Clock
from nfvha.util.files import atomic_write_json, tail_lines
from nfvha.util.procs import describe_wait_status
from nfvha.util.runpaths import RunPaths
from nfvha.util.tasks import background
from nfvha.wire.frames import VmInfo, VnfcInfo

log = logging.getLogger(__name__)


def disk_mode(args: dict[str, Any]) -> DiskMode:
    """The ``disk`` argument of ``vm.start`` (ADR 0010): what the VM boots from."""
    mode = args.get("disk", "keep")
    for m in DISK_MODES:
        if mode == m:
            return m
    raise ValueError(f"disk must be one of {', '.join(DISK_MODES)}, not {mode!r}")


@dataclass
class VnfcRuntime:
    name: str
    vm: str
    state: str = "unknown"
    pid: int | None = None
    since: float = 0.0


@dataclass
class VmRuntime:
    spec: VmLaunch
    state: str = "stopped"
    pid: int | None = None
    start_ticks: int | None = None
    since: float = 0.0
    link: GuestLink | None = None
    stopping: bool = False
    # Re-created on another host (evacuated, ADR 0011): no longer this host's to run.
    released: bool = False
    guest_seq: int = 0  # highest guest event seq handled: the guest re-sends until acked
    last_sample: dict[str, Any] | None = None
    vnfcs: dict[str, VnfcRuntime] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # every VNFC runs
    booted: asyncio.Event = field(default_factory=asyncio.Event)  # its guest is up
    boot_timed_out: asyncio.Event = field(default_factory=asyncio.Event)
    awaiting_start: bool = False  # a vm.start waits for it to boot (and reports it)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # The VM's watchdog (VNFHA-1): armed with this timeout by a VNFC, running out at
    # the timer's deadline unless kicked; killed_by says why the agent ended this life.
    watchdog_ms: int | None = None
    watchdog_timer: asyncio.TimerHandle | None = None
    # Reported once until the VNFC kicks again (a device with action none may go on
    # firing) or the VM starts anew.
    watchdog_fired: bool = False
    killed_by: str | None = None
    # Held while a VM is being started or its previous life cleaned up, so a restart
    # never lands in a cgroup that the clean-up of the crash is still emptying.
    lifecycle: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _VmExit:
    """A VM's exit as reported, for its clean-up."""

    name: str
    pid: int | None
    ticks: int | None
    expected: bool
    status: int | None = None
    desc: str | None = None


class VmManager:
    def __init__(
        self,
        cfg: AgentConfig,
        run: RunPaths,
        clock: Clock,
        emitter: Emitter,
        driver: HypervisorDriver,
        on_change: Any,
        persist: Any,
    ) -> None:
        self._persist = persist  # async () -> None: write the state file now
        self._cfg = cfg
        self._run = run
        self._clock = clock
        self._emit = emitter
        self._driver = driver
        self._plan = FabricPlan.from_json(cfg.fabric) if cfg.fabric else None
        self._on_change = on_change  # () -> None: state file + inventory are stale
        self._actions = run.host_dir(cfg.host) / "vm-actions.log"
        self._vnfc_waiters: dict[str, asyncio.Future[GuestEvent]] = {}
        self.vms: dict[str, VmRuntime] = {}
        self._configured = {spec.name for spec in cfg.vms}
        for spec in cfg.vms:
            self._add(spec)

    def _add(self, spec: VmLaunch) -> VmRuntime:
        rt = VmRuntime(spec=spec, since=self._clock.wall())
        rt.vnfcs = {c.name: VnfcRuntime(name=c.name, vm=spec.name) for c in spec.vnfcs}
        self.vms[spec.name] = rt
        return rt

    def place(self, spec: VmLaunch) -> VmRuntime:
        """Make ``spec`` a VM of this host (the controller re-creates it here)."""
        rt = self.vms.get(spec.name)
        if rt is None:
            rt = self._add(spec)
        elif rt.spec != spec and rt.state in ("stopped", "crashed"):
            rt.spec = spec
            rt.vnfcs = {c.name: VnfcRuntime(name=c.name, vm=spec.name) for c in spec.vnfcs}
        if rt.released:
            rt.released = False
            self._log_action(spec.name, "placed", "re-created on this host")
        return rt

    # -- helpers -----------------------------------------------------------
    @staticmethod
    def _life(rt: VmRuntime) -> VmLife | None:
        if rt.pid is None or rt.start_ticks is None:
            return None
        return VmLife(rt.pid, rt.start_ticks)

    def _vm_dir(self, vm: str) -> Path:
        return self._run.vm_dir(vm)

    def _log_action(self, vm: str, action: str, detail: str = "") -> None:
        line = json.dumps(
            {"time": self._clock.wall(), "vm": vm, "action": action, "detail": detail})
        with open(self._actions, "a") as f:
            f.write(line + "\n")

    def _rt(self, vm: str) -> VmRuntime:
        rt = self.vms.get(vm)
        if rt is None:
            raise KeyError(f"no VM '{vm}' on host {self._cfg.host}")
        if rt.released:
            raise KeyError(f"VM '{vm}' was re-created on another host; it is not on"
                           f" {self._cfg.host} any more")
        return rt

    def vm_of_vnfc(self, vnfc: str) -> VmRuntime:
        for rt in self.vms.values():
            if vnfc in rt.vnfcs and not rt.released:
                return rt
        raise KeyError(f"no VNFC '{vnfc}' on host {self._cfg.host}")

    # -- state file --------------------------------------------------------
    def saved_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, rt in self.vms.items():
            rec: dict[str, Any] = {"pid": rt.pid, "start_ticks": rt.start_ticks,
                                   "state": rt.state, "since": rt.since,
                                   "guest_seq": rt.guest_seq, "released": rt.released}
            if name not in self._configured:
                rec["spec"] = rt.spec.model_dump(mode="json")  # placed here by the VIM
            out[name] = rec
        return out

    def _moved_away(self, name: str) -> bool:
        """Its network hangs on another host's bridge: the VIM re-created it there."""
        if self._plan is None:
            return False
        attached = vm_attached_host(self._plan, name)
        return attached is not None and attached != self._cfg.host

    def _release(self, rt: VmRuntime, why: str) -> None:
        rt.released, rt.state, rt.pid, rt.start_ticks = True, "stopped", None, None
        rt.since = self._clock.wall()
        self._log_action(rt.spec.name, "released", why)
        self._emit.emit(
            Kind.VM_STOPPED, f"vm/{rt.spec.name}", severity=Severity.INDETERMINATE,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-evacuated",
            description=f"VM {rt.spec.name} left {self._cfg.host}: {why}",
            informational=True, details={"released": True},
        )

    def _alive(self, rec: dict[str, Any]) -> bool:
        pid, ticks = rec.get("pid"), rec.get("start_ticks")
        return (rec.get("state") in ("running", "hung", "starting") and pid is not None
                and ticks is not None and self._driver.is_alive(VmLife(int(pid), int(ticks))))

    async def adopt(self, saved: dict[str, Any]) -> None:
        """Re-attach to VMs that kept running while the agent was away."""
        for name, rec in saved.items():
            rt = self.vms.get(name)
            if rt is None and isinstance(rec.get("spec"), dict):
                rt = self._add(VmLaunch.model_validate(rec["spec"]))
            if rt is not None and rec.get("released"):
                rt.released = True
                continue
            if rt is not None and not self._alive(rec) and await asyncio.to_thread(
                    self._moved_away, name):
                # Its host was down while the VIM re-created it elsewhere (ADR 0011):
                # neither a crash to report nor addresses to release - they are the
                # new VM's now.
                self._release(rt, "re-created on another host while this one was down")
                continue
            if rt is None or rec.get("state") not in ("running", "hung", "starting"):
                if rt is not None and rec.get("state") == "crashed":
                    rt.state = "crashed"
                    rt.since = float(rec.get("since") or rt.since)
                continue
            pid, ticks = rec.get("pid"), rec.get("start_ticks")
            if pid is None or ticks is None:
                continue
            rt.pid, rt.start_ticks = int(pid), int(ticks)
            rt.since = float(rec.get("since") or self._clock.wall())
            rt.guest_seq = int(rec.get("guest_seq") or 0)
            if self._driver.is_alive(VmLife(rt.pid, rt.start_ticks)):
                rt.state = "running"
                self._watch(rt)
                self._log_action(name, "adopt", f"pid {rt.pid}")
                self._emit.emit(
                    Kind.VM_ADOPTED, f"vm/{name}", severity=Severity.INDETERMINATE,
                    event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="agent-restart",
                    description=f"VM {name} (pid {rt.pid}) re-adopted after agent restart",
                    informational=True, details={"pid": rt.pid},
                )
            else:
                # It died while no agent was watching: report it now.
                rt.state = "running"
                await self._vm_exited(rt, self._clock.mono_ns(), late=True)
        self._on_change()

    # -- VM lifecycle ------------------------------------------------------
    async def start_vm(self, name: str, timeout_s: float | None = None,
                       disk: DiskMode = "keep", spec: VmLaunch | None = None
                       ) -> dict[str, Any]:
        """``disk``: boot from the disk as it is (a reboot), from the initial (empty)
        disk, or from the last snapshot (ADR 0010). A running VM is left alone.
        With ``spec``, a VM this host may never have had: the VIM re-creates an
        evacuated VM here (ADR 0011). Answers once the VM has booted, died or run out
        of its boot time (an error), or after ``timeout_s`` (the caller's budget;
        None: its boot time) with ``ready`` false while it is still booting."""
        if spec is not None:
            if spec.name != name:
                raise KeyError(f"spec is for VM '{spec.name}', not '{name}'")
            self.place(spec)
        rt = self._rt(name)
        async with rt.lifecycle:
            return await self._start_vm(rt, timeout_s, disk)

    async def _start_vm(self, rt: VmRuntime, timeout_s: float | None,
                        disk: DiskMode = "keep") -> dict[str, Any]:
        name = rt.spec.name
        life = self._life(rt)
        if rt.state in ("running", "starting", "hung") and life is not None \
                and self._driver.is_alive(life):
            return {"vm": name, "pid": rt.pid, "already": True}
        spec = rt.spec
        vm_dir = self._vm_dir(name)
        # Everything that blocks (disk, cgroup, network, files) in a thread: the VMs of
        # one host start in parallel, none waits for another's set-up (each VM's
        # lifecycle lock keeps its own start and clean-up apart).
        disk_done = await asyncio.to_thread(self._driver.prepare, spec, vm_dir, disk)
        if disk != "keep":
            self._log_action(name, "disk", json.dumps(disk_done))
        rt.stopping = False
        rt.killed_by = None
        rt.watchdog_ms = None  # a new life's guest starts with it disarmed
        rt.watchdog_fired = False
        rt.guest_seq = 0
        rt.ready = asyncio.Event()
        rt.booted = asyncio.Event()
        rt.boot_timed_out = asyncio.Event()
        rt.exited = asyncio.Event()
        rt.state = "starting"
        life = await self._driver.launch(spec, vm_dir)
        rt.pid, rt.start_ticks, rt.since = life.pid, life.start_ticks, self._clock.wall()
        # Recorded before anything else: an agent crash from here on must find it to adopt.
        await self._persist()
        self._watch(rt)
        self._log_action(name, "start", f"pid {rt.pid}")
        self._on_change()
        waits = [asyncio.create_task(e.wait())
                 for e in (rt.ready, rt.booted, rt.exited, rt.boot_timed_out)]
        # The boot watch ends the wait at the VM's boot time at the latest; a shorter
        # budget of the caller's is answered "not ready yet" (the watch goes on, and
        # the VM is reported started when it is: _ready).
        budget = spec.boot_timeout_s + 1.0 if timeout_s is None else timeout_s
        rt.awaiting_start = True
        try:
            await asyncio.wait(waits, timeout=budget, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rt.awaiting_start = False
            for w in waits:
                w.cancel()
        if rt.exited.is_set():
            raise RuntimeError(f"VM {name} died while booting; see its last words")
        if rt.boot_timed_out.is_set() and not rt.booted.is_set():
            raise RuntimeError(f"VM {name} did not boot within its boot time"
                               f" ({spec.boot_timeout_s:g} s)")
        if not rt.ready.is_set():
            return {"vm": name, "pid": rt.pid, "ready": False, "disk": disk_done,
                    "data_ip": spec.data_ip}
        rt.state = "running" if rt.state == "starting" else rt.state
        self._emit.emit(
            Kind.VM_STARTED, f"vm/{name}", severity=Severity.INDETERMINATE,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-start",
            description=f"VM {name} started (pid {rt.pid})", clears=True,
            details={"pid": rt.pid},
        )
        self._on_change()
        return {"vm": name, "pid": rt.pid, "ready": True, "disk": disk_done,
                "data_ip": spec.data_ip}

    async def snapshot_vm(self, name: str) -> dict[str, Any]:
        """Copy a running VM's disk as its last snapshot (ADR 0010). The VM is frozen
        meanwhile, so the copy is crash-consistent (all files as of one instant); the
        disk size limit keeps the freeze far below the hang detector's threshold."""
        rt = self._rt(name)
        async with rt.lifecycle:
            if rt.state != "running":
                raise RuntimeError(f"VM {name} is {rt.state}: only a running VM is"
                                   " snapshotted")
            vm_dir = self._vm_dir(name)
            try:
                # The size is checked before the VM is frozen, not during.
                await asyncio.to_thread(self._driver.check_snapshot, rt.spec, vm_dir)
                info, freeze = await asyncio.to_thread(
                    self._driver.snapshot, rt.spec, vm_dir, self._clock.wall())
            except (DiskError, OSError) as e:
                raise RuntimeError(str(e)) from None
        self._log_action(name, "snapshot", json.dumps(info.to_json()))
        return {"vm": name, "snapshot": info.to_json(), "frozen": freeze}

    async def stop_vm(self, name: str, timeout_s: float = 5.0) -> dict[str, Any]:
        rt = self._rt(name)
        if rt.pid is None or rt.start_ticks is None or rt.state in ("stopped", "crashed"):
            return {"vm": name, "already": True}
        rt.stopping = True
        life = VmLife(rt.pid, rt.start_ticks)
        if rt.state == "hung":
            # A hung VM answers no request to stop.
            await self._driver.kill(rt.spec, life)
            await asyncio.wait_for(rt.exited.wait(), timeout_s)
            return {"vm": name, "stopped": True, "killed": "hung"}
        self._driver.terminate(rt.spec, life)
        try:
            await asyncio.wait_for(rt.exited.wait(), timeout_s)
        except TimeoutError:
            await self._driver.kill(rt.spec, life)
            await asyncio.wait_for(rt.exited.wait(), timeout_s)
        return {"vm": name, "stopped": True}

    def _watch(self, rt: VmRuntime) -> None:
        life = self._life(rt)
        assert life is not None
        self._driver.watch(rt.spec, life, lambda: self._on_exit(rt),
                           lambda: self._watchdog_expired(rt, life.pid))
        if rt.link is None:
            rt.link = GuestLink(
                rt.spec.name, self._vm_dir(rt.spec.name) / "guest.sock", self._clock,
                self._cfg.settings.guest_heartbeat_interval_ms,
                self._cfg.settings.guest_heartbeat_misses, self,
                boot_timeout_s=rt.spec.boot_timeout_s,
            )
            rt.link.start()

    def _on_exit(self, rt: VmRuntime) -> None:
        detected = self._clock.mono_ns()
        # Reported here and now, not from a task a loop iteration later: a failover
        # waits for it. The clean-up's task is queued before anything that reads the
        # report can answer it, so a restart asked for on the report waits for it.
        exited = self._vm_exit_reported(rt, detected)
        if exited is not None:
            background(self._vm_exit_cleanup(rt, exited))

    async def _vm_exited(self, rt: VmRuntime, detected_mono_ns: int, late: bool = False) -> None:
        exited = self._vm_exit_reported(rt, detected_mono_ns, late)
        if exited is not None:
            await self._vm_exit_cleanup(rt, exited)

    def _vm_exit_reported(self, rt: VmRuntime, detected_mono_ns: int, late: bool = False
                          ) -> _VmExit | None:
        """Report a VM's exit; None if it was reported already."""
        if rt.state in ("stopped", "crashed"):
            return None
        self._stop_watchdog(rt)
        exited = _VmExit(rt.spec.name, rt.pid, rt.start_ticks, rt.stopping)
        rt.state = "stopped" if exited.expected else "crashed"
        rt.since = self._clock.wall()
        # Report first: detection latency must not wait for any clean-up.
        if exited.pid is not None and exited.ticks is not None:
            life = VmLife(exited.pid, exited.ticks)
            exited.status = self._driver.exit_status(life)
            exited.desc = self._driver.death_cause(life)
        if exited.desc is None and exited.status is not None:
            exited.desc = describe_wait_status(exited.status)
        self._report_exit(rt, detected_mono_ns, late, exited.status, exited.desc)
        rt.exited.set()
        return exited

    async def _vm_exit_cleanup(self, rt: VmRuntime, exited: _VmExit) -> None:
        name, pid, ticks, expected = exited.name, exited.pid, exited.ticks, exited.expected
        status, desc = exited.status, exited.desc
        # Under the lifecycle lock, so a restart waits for it (no await before taking
        # it: a restart requested on the report must not slip in).
        async with rt.lifecycle:
            # First: a service address (VIP) the VM leaves behind would go on
            # answering ARP for a VM that is gone.
            await self._driver.release(rt.spec)
            if rt.link is not None:
                await rt.link.stop()
                rt.link = None
            self._log_action(name, "stop" if expected else "crash", desc or "")
        self._on_change()
        if pid is not None and ticks is not None:
            background(self._last_words(rt, pid, ticks, status, expected))

    def _report_exit(self, rt: VmRuntime, detected_mono_ns: int, late: bool,
                     status: int | None, desc: str | None) -> None:
        name, pid, expected = rt.spec.name, rt.pid, rt.stopping
        entity = f"vm/{name}"
        if expected:
            self._emit.emit(
                Kind.VM_STOPPED, entity, severity=Severity.INDETERMINATE,
                event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-stop",
                description=f"VM {name} stopped", informational=True,
            )
        else:
            self._emit.emit(
                Kind.VM_CRASHED, entity, severity=Severity.CRITICAL,
                event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-crash",
                description=f"VM {name} (pid {pid}) died"
                + (f": {desc}" if desc else "") + (" while the agent was down" if late else "")
                + (f" (ended by its {rt.killed_by})" if rt.killed_by else ""),
                detected_mono_ns=detected_mono_ns,
                details={"pid": pid, "exit_status": status, "exit_desc": desc,
                         "detected_late": late, "killed_by": rt.killed_by},
            )
        for v in rt.vnfcs.values():
            if v.state != "running":
                continue
            v.state = "stopped" if expected else "exited"
            v.since = self._clock.wall()
            if not expected:
                self._emit.emit(
                    Kind.VNFC_CRASHED, f"vnfc/{v.name}", severity=Severity.MAJOR,
                    event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-crash",
                    description=f"VNFC {v.name} lost with its VM {name}",
                    detected_mono_ns=detected_mono_ns, details={"cause_entity": entity},
                )

    async def _last_words(
        self, rt: VmRuntime, pid: int, ticks: int, status: int | None, expected: bool
    ) -> None:
        name = rt.spec.name
        if status is None:
            status, desc = await self._driver.exit_status_later(VmLife(pid, ticks))
        else:
            desc = describe_wait_status(status)
        words = {
            "vm": name,
            "host": self._cfg.host,
            "pid": pid,
            "exit_status": status,
            "exit_desc": desc,
            "expected": expected,
            "time": self._clock.wall(),
            "console": tail_lines(
                self._driver.console_path(self._vm_dir(name)),
                self._cfg.settings.last_words_console_lines,
            ),
            "last_sample": rt.last_sample,
        }
        atomic_write_json(self._vm_dir(name) / "last-words.json", words, fsync=False)
        self._emit.emit(
            Kind.VM_LAST_WORDS, f"vm/{name}", severity=Severity.INDETERMINATE,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-last-words",
            description=f"last words of VM {name}: {desc}", informational=True, details=words,
        )

    # -- VNFCs -------------------------------------------------------------
    async def start_vnfc(self, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        rt = self.vm_of_vnfc(name)
        if rt.link is None or not rt.link.connected.is_set():
            raise RuntimeError(f"VM {rt.spec.name} of VNFC {name} is not running")
        if rt.vnfcs[name].state == "running":
            return {"vnfc": name, "pid": rt.vnfcs[name].pid, "already": True}
        fut: asyncio.Future[GuestEvent] = asyncio.get_running_loop().create_future()
        self._vnfc_waiters[name] = fut
        rt.link.send({"op": "vnfc-start", "name": name})
        ev = await asyncio.wait_for(fut, timeout_s)
        return {"vnfc": name, "pid": ev.pid}

    async def stop_vnfc(self, name: str, sig: str = "TERM") -> dict[str, Any]:
        rt = self.vm_of_vnfc(name)
        if rt.link is None or not rt.link.send({"op": "vnfc-stop", "name": name, "signal": sig}):
            raise RuntimeError(f"VM {rt.spec.name} of VNFC {name} is not running")
        return {"vnfc": name, "signal": sig}

    # -- GuestHandler ------------------------------------------------------
    async def guest_event(self, vm: str, event: GuestEvent) -> None:
        rt = self.vms[vm]
        if event.seq <= rt.guest_seq:
            return  # a re-send of one we already reported (it is acked again)
        rt.guest_seq = event.seq
        v = rt.vnfcs.get(event.vnfc)
        if v is None:
            return
        entity = f"vnfc/{event.vnfc}"
        if event.kind == "vnfc-started":
            v.state, v.pid, v.since = "running", event.pid, self._clock.wall()
            self._emit.emit(
                Kind.VNFC_STARTED, entity, severity=Severity.INDETERMINATE,
                event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vnfc-start",
                description=f"VNFC {event.vnfc} started (pid {event.pid}) in VM {vm}",
                clears=True, detected_mono_ns=event.mono_ns, details={"pid": event.pid, "vm": vm},
            )
            fut = self._vnfc_waiters.pop(event.vnfc, None)
            if fut is not None and not fut.done():
                fut.set_result(event)
            if all(x.state == "running" for x in rt.vnfcs.values()):
                self._ready(rt)
        else:
            v.state = "stopped" if event.expected else "exited"
            v.since = self._clock.wall()
            if event.expected:
                self._emit.emit(
                    Kind.VNFC_STOPPED, entity, severity=Severity.INDETERMINATE,
                    event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vnfc-stop",
                    description=f"VNFC {event.vnfc} stopped", informational=True,
                    detected_mono_ns=event.mono_ns, details={"vm": vm},
                )
            else:
                self._emit.emit(
                    Kind.VNFC_CRASHED, entity, severity=Severity.MAJOR,
                    event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vnfc-crash",
                    description=f"VNFC {event.vnfc} (pid {event.pid}) in VM {vm} died:"
                    f" {event.exit_desc}",
                    detected_mono_ns=event.mono_ns,
                    details={"pid": event.pid, "vm": vm, "exit_status": event.exit_status,
                             "exit_desc": event.exit_desc},
                )
        self._on_change()

    def guest_state(self, vm: str, vnfcs: dict[str, GuestVnfc]) -> None:
        rt = self.vms[vm]
        for name, g in vnfcs.items():
            v = rt.vnfcs.get(name)
            if v is not None:
                v.state, v.pid = g.state, g.pid
        if not rt.vnfcs or all(x.state == "running" for x in rt.vnfcs.values()):
            self._ready(rt)
        if rt.state == "starting" and rt.ready.is_set():
            rt.state = "running"
        self._on_change()

    def _ready(self, rt: VmRuntime) -> None:
        """Every VNFC of the VM runs: it has booted, whatever its guest said so far."""
        rt.ready.set()
        if rt.link is not None:
            rt.link.mark_booted()
        if rt.state == "starting" and not rt.awaiting_start and rt.pid is not None:
            # Its vm.start has answered already (not ready yet, or past its boot time:
            # then this clears that): it is reported started now.
            vm = rt.spec.name
            rt.state = "running"
            self._log_action(vm, "ready", "after its start was answered")
            self._emit.emit(
                Kind.VM_STARTED, f"vm/{vm}", severity=Severity.INDETERMINATE,
                event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-start",
                description=f"VM {vm} started (pid {rt.pid}), after its start was answered",
                clears=True, details={"pid": rt.pid, "late": True},
            )
            self._on_change()

    def guest_booted(self, vm: str) -> None:
        self.vms[vm].booted.set()

    def guest_boot_timeout(self, vm: str, detected_mono_ns: int) -> None:
        rt = self.vms[vm]
        if rt.state != "starting":
            return
        rt.boot_timed_out.set()
        s = rt.spec.boot_timeout_s
        self._log_action(vm, "boot-timeout", f"not up after {s:g} s")
        self._emit.emit(
            Kind.VM_BOOT_TIMEOUT, f"vm/{vm}", severity=Severity.CRITICAL,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-boot-failure",
            description=f"VM {vm} did not boot within {s:g} s (its guest never reported"
            " it is up)", detected_mono_ns=detected_mono_ns, details={"boot_timeout_s": s},
        )
        self._on_change()

    def guest_hung(self, vm: str, detected_mono_ns: int) -> None:
        rt = self.vms[vm]
        if rt.state not in ("running", "starting"):
            return
        rt.state = "hung"
        ms = self._cfg.settings.guest_hang_after_ms
        self._log_action(vm, "hang", f"no heartbeat answer for {ms} ms")
        self._emit.emit(
            Kind.VM_HUNG, f"vm/{vm}", severity=Severity.CRITICAL,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-hang",
            description=f"VM {vm} does not answer its guest heartbeat ({ms} ms)",
            detected_mono_ns=detected_mono_ns, details={"silent_ms": ms},
        )
        self._on_change()

    def guest_responsive(self, vm: str) -> None:
        rt = self.vms[vm]
        if rt.state != "hung":
            return
        rt.state = "running"
        self._log_action(vm, "responsive")
        self._emit.emit(
            Kind.VM_RESPONSIVE, f"vm/{vm}", severity=Severity.CLEARED,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="vm-hang",
            description=f"VM {vm} answers its guest heartbeat again", clears=True,
        )
        self._on_change()

    # -- watchdog (VNFHA-1) ------------------------------------------------------
    def guest_watchdog(self, vm: str, do: str, timeout_ms: int | None) -> None:
        rt = self.vms[vm]
        if rt.spec.watchdog_action is None:
            log.warning("VM %s has no watchdog; its guest's %s ignored", vm, do)
            return
        if do == "arm" and timeout_ms is not None:
            rt.watchdog_ms = timeout_ms
        elif do == "disarm":
            rt.watchdog_ms = None
        if rt.watchdog_ms is None or rt.state not in ("running", "starting", "hung"):
            self._stop_watchdog(rt)
            return
        # arm, kick, or armed as the guest's state says: the timer starts over.
        rt.watchdog_fired = False
        if rt.watchdog_timer is not None:
            rt.watchdog_timer.cancel()
        rt.watchdog_timer = asyncio.get_running_loop().call_later(
            rt.watchdog_ms / 1000, self._watchdog_expired, rt, rt.pid)

    @staticmethod
    def _stop_watchdog(rt: VmRuntime) -> None:
        if rt.watchdog_timer is not None:
            rt.watchdog_timer.cancel()
            rt.watchdog_timer = None

    def _watchdog_expired(self, rt: VmRuntime, pid: int | None) -> None:
        rt.watchdog_timer = None
        life = self._life(rt)
        if life is None or rt.pid != pid or rt.state in ("stopped", "crashed") \
                or rt.watchdog_fired:
            return  # another life's timer, or said already
        rt.watchdog_fired = True
        vm, action, ms = rt.spec.name, rt.spec.watchdog_action, rt.watchdog_ms
        # The agent's timer knows the timeout; a VM's own device keeps it to itself.
        what = f"not kicked for {ms} ms" if ms is not None else "its watchdog device ran out"
        self._log_action(vm, "watchdog", f"{what}: {action}")
        self._emit.emit(
            Kind.VM_WATCHDOG, f"vm/{vm}", severity=Severity.CRITICAL,
            event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="watchdog-expired",
            description=f"the watchdog of VM {vm} ran out ({what}); action: {action}",
            detected_mono_ns=self._clock.mono_ns(),
            details={"timeout_ms": ms, "action": action},
        )
        if action in ("reset", "poweroff"):
            rt.killed_by = "watchdog"
            background(self._watchdog_action(rt, life, reset=action == "reset"))

    async def _watchdog_action(self, rt: VmRuntime, life: VmLife, *, reset: bool) -> None:
        """Power the VM off - its death is reported as a crash, so its VNF fails over
        and the VIM's repair policy follows - and for a reset boot it again (a start
        the VIM asks for meanwhile finds it running, or starts it first: one start)."""
        await self._driver.kill(rt.spec, life)
        if not reset:
            return
        try:
            await asyncio.wait_for(rt.exited.wait(), self._cfg.settings.watchdog_kill_timeout_s)
            await self.start_vm(rt.spec.name)
        except (TimeoutError, RuntimeError, KeyError) as e:
            self._log_action(rt.spec.name, "watchdog-reset-failed", str(e))
            log.warning("VM %s: watchdog reset failed: %s", rt.spec.name, e)

    # -- records (NFVI-5, HV-6) ----------------------------------------------
    def sample(self, rt: VmRuntime) -> dict[str, Any] | None:
        """Blocking: the VM's resource use now, from its driver."""
        used = self._driver.sample(rt.spec)
        if used is None:
            return None
        return {"time": self._clock.wall(), **used, "state": rt.state}

    def _record(self, rt: VmRuntime, keep: int) -> dict[str, Any] | None:
        """Sample the VM and append to its records, keeping about ``keep`` of them."""
        s = self.sample(rt)
        if s is None:
            return None
        path = self._vm_dir(rt.spec.name) / "records.jsonl"
        with open(path, "a") as f:
            f.write(json.dumps(s) + "\n")
        if path.stat().st_size > keep * 400:
            lines = tail_lines(path, keep, max_bytes=keep * 400)
            path.write_text("\n".join(lines) + "\n")
        return s

    async def record_loop(self) -> None:
        keep = self._cfg.settings.vm_records_kept
        while True:
            await asyncio.sleep(self._cfg.settings.vm_record_interval_s)
            for rt in self.vms.values():
                if rt.state not in ("running", "hung", "starting") or rt.released:
                    continue
                try:
                    s = await asyncio.to_thread(self._record, rt, keep)
                except OSError:
                    continue
                if s is not None:
                    rt.last_sample = s
            self._on_change()

    # -- inventory ---------------------------------------------------------
    def inventory(self) -> tuple[list[VmInfo], list[VnfcInfo]]:
        vms, vnfcs = [], []
        for name, rt in self.vms.items():
            if rt.released:
                continue
            s = rt.last_sample or {}
            vms.append(VmInfo(
                name=name, state=rt.state, pid=rt.pid, since=rt.since,
                hypervisor=self._driver.kind,
                memory_bytes=s.get("memory_bytes"), cpu_usage_ns=s.get("cpu_usage_ns"),
            ))
            for v in rt.vnfcs.values():
                vnfcs.append(VnfcInfo(
                    name=v.name, vm=name, state=v.state, pid=v.pid,
                    since=v.since,
                ))
        return vms, vnfcs
