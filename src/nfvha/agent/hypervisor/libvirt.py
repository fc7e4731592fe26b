"""The ``libvirt`` hypervisor driver: a VM is a QEMU guest (ADR 0017's image: a Debian
kernel, a busybox initramfs, the host's file system read-only over 9p, a qcow2 overlay
as its disk) run by the host's private libvirtd (ADR 0018) as a transient domain.

The guest runs nfvha's guest program unchanged; its channel to the agent is a
virtio-serial port whose host end QEMU serves at ``<vm dir>/guest.sock`` - the path
the VM manager's guest link connects to for every VM. Its NIC is a tap ``v<index>``
on the host's ``br0`` with the VM's planned address and MAC.

Death is seen twice, and reported once: a pidfd on QEMU (milliseconds: the primary
signal) and libvirt's lifecycle events (STOPPED, CRASHED - a guest panic through
pvpanic - which may come first for a panic, and also tell of a pause nobody
ordered). QEMU is not the agent's child: libvirtd daemonizes it, so the host
supervisor (the subreaper) reaps it and records its wait status.

libvirt's calls block: they run in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
from nfvha.agent.config import AgentConfig, VmLaunch
from nfvha.agent.exits import wait_exit_status, zombie_status
from nfvha.agent.hypervisor.contract import VmLife
from nfvha.agent.hypervisor.guestconfig import write_guest_config
from nfvha.nfvi.disk import DiskError, DiskMode, SnapshotInfo
from nfvha.nfvi.fabric import FabricPlan, delete_vm_network, vm_mac
from nfvha.nfvi.guestimage import GuestImage, default_dir, fresh_overlay, kernel_cmdline, load_image
from nfvha.nfvi.guestinit import HOST_TAG, PORT_NAME
from nfvha.nfvi.kvmprobe import kvm_runs_guests, virt_type
from nfvha.nfvi.libvirt_domain import (
    NMI_PANIC_ARG,
    BridgeNic,
    DomainSpec,
    Share,
    domain_xml,
    vm_domain_name,
)
from nfvha.nfvi.libvirt_events import ConnectionEvent, ConnState, DomainEvent, LibvirtEvents
from nfvha.nfvi.libvirtd import LibvirtdPaths, qemu_pid, running_daemon, start_libvirtd
from nfvha.util.files import atomic_write_json
from nfvha.util.procs import is_same_process, kill_pid, pidfd_of_life, read_stat
from nfvha.util.runpaths import RunPaths

log = logging.getLogger(__name__)

CONSOLE_FILE = "console.log"
DISK_FILE = "disk.qcow2"
SNAPSHOT_DIR = "snapshot"
SNAPSHOT_DISK = "disk.qcow2"
SNAPSHOT_INFO = "info.json"
# The overlay holds what the VM wrote; a snapshot copies it while the VM is paused, so
# a large one would keep the guest paused long enough to look hung.
MAX_SNAPSHOT_BYTES = 64 << 20
EVENTS_CONNECT_TIMEOUT_S = 10.0
QEMU_PIDFILE_TIMEOUT_S = 5.0
TOOL_TIMEOUT_S = 60.0
# An NMI from the hypervisor (``virsh inject-nmi``, the fault ``guest-panic``) panics
# the guest's kernel: the way to inject a guest kernel panic from outside the guest.
GUEST_KERNEL_EXTRA = (NMI_PANIC_ARG,)
WATCHDOG_DEVICE = "/dev/watchdog"


@dataclass
class _Watch:
    life: VmLife
    on_exit: Callable[[], None]
    on_watchdog: Callable[[], None] | None
    pidfd: int | None


class LibvirtDriver:
    kind = "libvirt"

    def __init__(self, cfg: AgentConfig, run: RunPaths, plan: FabricPlan | None) -> None:
        if plan is None:
            raise RuntimeError(f"host {cfg.host}: libvirt VMs need the namespaced test bed"
                               " (their NIC is a tap on the host's bridge)")
        self._cfg = cfg
        self._run = run
        self._plan = plan
        self._paths = LibvirtdPaths.for_host(run, cfg.host)
        self._exits_dir = run.host_dir(cfg.host) / "exits"
        self._events: LibvirtEvents | None = None
        self._image: GuestImage | None = None
        self._virt_type = "qemu"
        self._watches: dict[str, _Watch] = {}
        self._causes: dict[VmLife, str] = {}  # what libvirt said ended a life

    # -- what the driver runs on ---------------------------------------------------
    async def start(self) -> None:
        found = load_image(default_dir())
        if found is None:
            raise RuntimeError(f"no guest image in {default_dir()}: run ./scripts/bootstrap"
                               " (python -m nfvha.nfvi.guestimage build)")
        self._image = found[0]
        probe = await kvm_runs_guests(self._image.kernel)
        self._virt_type = virt_type(probe)
        log.info("libvirt VMs on %s: domain type %s (%s)", self._cfg.host, self._virt_type,
                 probe.detail)
        if running_daemon(self._paths) is None:
            # Spawned detached: the host supervisor becomes its parent and reaps the
            # QEMUs it daemonizes, so a VM's death is final at once (ADR 0018).
            daemon = await start_libvirtd(self._paths, netns=self._plan.host(self._cfg.host).netns)
            log.info("libvirtd of %s started (pid %d) in %.2f s", self._cfg.host, daemon.pid,
                     daemon.started_in_s)
        self._events = LibvirtEvents(self._paths.uri, self._on_event, self._on_connection)
        await asyncio.wait_for(self._events.start(), EVENTS_CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        for name in list(self._watches):
            self._drop_watch(name)
        if self._events is not None:
            await self._events.stop()
            self._events = None

    def _conn(self) -> Any:
        conn = None if self._events is None else self._events.conn
        if conn is None:
            raise RuntimeError(f"libvirtd of {self._cfg.host} is not connected")
        return conn

    def _domain_name(self, vm: str) -> str:
        return vm_domain_name(self._run.tag, vm)

    def _vm_of_domain(self, domain: str) -> str | None:
        prefix = f"{self._run.tag}-"
        return domain[len(prefix):] if domain.startswith(prefix) else None

    # -- making a VM ---------------------------------------------------------------
    def prepare(self, spec: VmLaunch, vm_dir: Path, disk: DiskMode) -> dict[str, Any]:
        assert self._image is not None, "start() first"
        vm_dir.mkdir(parents=True, exist_ok=True)
        # A process VM re-created here leaves its namespace behind, whose veth on its
        # old host's br0 would say it is attached there still.
        delete_vm_network(self._plan, spec.name)
        done = self._prepare_disk(vm_dir, disk)
        # The guest's eth0 is its own: nothing outlives a dead guest on the host. The
        # VM's own device is its watchdog timer (QEMU's i6300esb): it runs out whatever
        # the guest or the agent do.
        write_guest_config(spec, vm_dir, release_service_addresses=False,
                           watchdog_device=WATCHDOG_DEVICE)
        for leftover in ("guest.sock", "console.sock"):
            with contextlib.suppress(FileNotFoundError):
                (vm_dir / leftover).unlink()
        return done

    def _prepare_disk(self, vm_dir: Path, mode: DiskMode) -> dict[str, Any]:
        assert self._image is not None
        disk = vm_dir / DISK_FILE
        if mode == "keep" and disk.exists():
            return {"mode": mode}
        if mode == "snapshot":
            snap = vm_dir / SNAPSHOT_DIR
            info = _read_snapshot_info(snap)
            if info is not None:
                new = disk.with_name(disk.name + ".new")
                shutil.copyfile(snap / SNAPSHOT_DISK, new)
                os.replace(new, disk)
                return {"mode": mode, "snapshot": info.to_json()}
            fresh_overlay(self._image.base_disk, disk)
            return {"mode": mode, "snapshot": None, "fallback": "initial (no snapshot yet)"}
        fresh_overlay(self._image.base_disk, disk)
        return {"mode": mode}

    def _domain_spec(self, spec: VmLaunch, vm_dir: Path) -> DomainSpec:
        assert self._image is not None
        vm = self._plan.vm(spec.name)
        return DomainSpec(
            name=self._domain_name(spec.name),
            kernel=self._image.kernel,
            initrd=self._image.initrd,
            cmdline=kernel_cmdline(self._cfg.python, vm_dir,
                                   ip=f"{vm.data_ip}/{self._plan.prefixlen}",
                                   extra=GUEST_KERNEL_EXTRA),
            console_log=self.console_path(vm_dir),
            virt_type="kvm" if self._virt_type == "kvm" else "qemu",
            memory_mib=spec.memory_mb,
            vcpus=max(1, round(spec.cpu)),
            on_crash="destroy",
            # Our guest never reboots on purpose: a reboot is its kernel giving up (a
            # panic before pvpanic is loaded reboots at once, panic=-1), a VM failure.
            on_reboot="destroy",
            # The agent takes the watchdog's action itself (ADR 0019): QEMU only tells.
            watchdog="none" if spec.watchdog_action is not None else None,
            channel_socket=vm_dir / "guest.sock",
            channel_name=PORT_NAME,
            disk=vm_dir / DISK_FILE,
            shares=(Share(Path("/"), HOST_TAG, readonly=True),),
            nics=(BridgeNic("br0", vm_mac(vm.data_ip), f"v{self._plan.vm_index(spec.name)}"),),
            metadata={"vm": spec.name, "host": self._cfg.host},
        )

    async def launch(self, spec: VmLaunch, vm_dir: Path) -> VmLife:
        xml = domain_xml(self._domain_spec(spec, vm_dir))
        name = self._domain_name(spec.name)

        def create() -> None:
            conn = self._conn()
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name).destroy()  # a previous life libvirt still runs
            conn.createXML(xml, 0)

        try:
            await asyncio.to_thread(create)
        except libvirt.libvirtError as e:
            raise RuntimeError(f"VM {spec.name}: libvirt did not start it:"
                               f" {e.get_error_message()}") from None
        pid = await self._qemu_pid(spec.name)
        st = read_stat(pid)
        if st is None:
            raise RuntimeError(f"VM {spec.name}: its QEMU (pid {pid}) is gone already")
        return VmLife(pid, st.start_ticks)

    async def _qemu_pid(self, vm: str) -> int:
        # libvirt writes the pid file before createXML returns; reading it is one file.
        name = self._domain_name(vm)
        loop = asyncio.get_running_loop()
        end = loop.time() + QEMU_PIDFILE_TIMEOUT_S
        while (pid := qemu_pid(self._paths, name)) is None:
            if loop.time() > end:
                raise RuntimeError(f"VM {vm}: no QEMU pid file from libvirt")
            await asyncio.sleep(0.01)
        return pid

    # -- watching ------------------------------------------------------------------
    def watch(self, spec: VmLaunch, life: VmLife, on_exit: Callable[[], None],
              on_watchdog: Callable[[], None] | None = None) -> None:
        self.unwatch(spec)
        loop = asyncio.get_running_loop()
        fd = pidfd_of_life(life.pid, life.start_ticks)
        if fd is None:
            loop.call_soon(on_exit)
            return
        self._watches[spec.name] = _Watch(life, on_exit, on_watchdog, fd)
        loop.add_reader(fd, self._exited, spec.name, life)

    def unwatch(self, spec: VmLaunch) -> None:
        self._drop_watch(spec.name)

    def _drop_watch(self, vm: str) -> _Watch | None:
        w = self._watches.pop(vm, None)
        if w is not None and w.pidfd is not None:
            asyncio.get_running_loop().remove_reader(w.pidfd)
            os.close(w.pidfd)
        return w

    def _exited(self, vm: str, life: VmLife) -> None:
        """Once per life, from whichever signal came first."""
        w = self._watches.get(vm)
        if w is None or w.life != life:
            return
        self._drop_watch(vm)
        w.on_exit()

    def _on_event(self, ev: DomainEvent) -> None:
        vm = self._vm_of_domain(ev.domain)
        if vm is None:
            return
        name = ev.name
        if name.startswith(("STOPPED/", "CRASHED/")):
            w = self._watches.get(vm)
            if w is not None:
                log.info("VM %s: %s", vm, name)
                if name.startswith("CRASHED/"):
                    self._causes[w.life] = f"guest kernel panic (libvirt: {name})"
                self._exited(vm, w.life)
        elif name.startswith("WATCHDOG/"):
            w = self._watches.get(vm)
            if w is not None and w.on_watchdog is not None:
                log.info("VM %s: %s", vm, name)
                w.on_watchdog()
        elif name.startswith("SUSPENDED/") and vm in self._watches:
            # A pause nobody ordered (the driver never pauses but for a snapshot, which
            # is short): the guest stops answering and the hang detector reports it.
            log.warning("VM %s: %s", vm, name)

    def _on_connection(self, ev: ConnectionEvent) -> None:
        if ev.state is ConnState.CONNECTED:
            log.info("libvirtd of %s connected", self._cfg.host)
        else:
            # The pidfds go on watching QEMU; libvirt's events only confirm.
            log.warning("%s", ev.error or ev.state)

    def is_alive(self, life: VmLife) -> bool:
        return is_same_process(life.pid, life.start_ticks)

    def exit_status(self, life: VmLife) -> int | None:
        return zombie_status(life.pid, life.start_ticks)

    def death_cause(self, life: VmLife) -> str | None:
        return self._causes.get(life)

    async def exit_status_later(self, life: VmLife) -> tuple[int | None, str]:
        status, desc = await wait_exit_status(self._exits_dir, life.pid, life.start_ticks)
        cause = self._causes.pop(life, None)
        return status, desc if cause is None else f"{cause}; QEMU {desc}"

    # -- unmaking a VM -------------------------------------------------------------
    def _destroy(self, vm: str, flags: int) -> bool:
        try:
            self._conn().lookupByName(self._domain_name(vm)).destroyFlags(flags)
        except (libvirt.libvirtError, RuntimeError) as e:
            log.info("VM %s: destroy: %s", vm, e)
            return False
        return True

    def terminate(self, spec: VmLaunch, life: VmLife) -> None:
        # SIGTERM to QEMU: it ends the guest, which is what a stop asks for here (the
        # guest's VNFCs get no ACPI shutdown: our minimal guest has no ACPI daemon).
        kill_pid(life.pid, signal.SIGTERM, ticks=life.start_ticks)

    async def kill(self, spec: VmLaunch, life: VmLife) -> None:
        # SIGKILL at once (a hung or paused QEMU too); libvirt then sees it die.
        kill_pid(life.pid, signal.SIGKILL, ticks=life.start_ticks)

    async def release(self, spec: VmLaunch) -> None:
        # Nothing of a dead guest stays on the host that could answer for it: its
        # addresses were inside it, its tap goes with QEMU. A domain libvirt still lists
        # (a QEMU that outlived a daemon's restart) goes now.
        await asyncio.to_thread(self._destroy, spec.name, 0)

    # -- snapshots and records -----------------------------------------------------
    def check_snapshot(self, spec: VmLaunch, vm_dir: Path) -> None:
        size = _allocated_bytes(vm_dir / DISK_FILE)
        if size > MAX_SNAPSHOT_BYTES:
            raise DiskError(f"disk of {spec.name} holds {size} bytes; snapshots are limited"
                            f" to {MAX_SNAPSHOT_BYTES}")

    def snapshot(self, spec: VmLaunch, vm_dir: Path, taken: float) -> tuple[SnapshotInfo, bool]:
        dom = self._conn().lookupByName(self._domain_name(spec.name))
        snap = vm_dir / SNAPSHOT_DIR
        new = snap.with_name(SNAPSHOT_DIR + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.mkdir(parents=True)
        # Paused while copied: the guest writes nothing meanwhile. What its kernel had
        # not written to the disk yet is not in it - as after a power cut (fsync'd data
        # is).
        dom.suspend()
        try:
            subprocess.run(
                ["qemu-img", "convert", "-U", "-q", "-O", "qcow2", str(vm_dir / DISK_FILE),
                 str(new / SNAPSHOT_DISK)],
                check=True, capture_output=True, timeout=TOOL_TIMEOUT_S)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(new, ignore_errors=True)
            raise DiskError(f"snapshot of {spec.name} failed: {e}") from None
        finally:
            dom.resume()
        size = (new / SNAPSHOT_DISK).stat().st_size
        info = SnapshotInfo(taken=taken, files=1, bytes=size)
        atomic_write_json(new / SNAPSHOT_INFO, info.to_json(), fsync=True)
        old = snap.with_name(SNAPSHOT_DIR + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if snap.exists():
            os.rename(snap, old)
        os.rename(new, snap)
        shutil.rmtree(old, ignore_errors=True)
        return info, True

    def sample(self, spec: VmLaunch) -> dict[str, Any] | None:
        try:
            dom = self._conn().lookupByName(self._domain_name(spec.name))
            stats = dom.memoryStats()
            _state, _max_kib, _mem_kib, _vcpus, cpu_ns = dom.info()
        except (libvirt.libvirtError, RuntimeError):
            return None
        return {
            # What the VM costs its host: QEMU's resident memory.
            "memory_bytes": int(stats.get("rss", 0)) << 10,
            "memory_limit_bytes": spec.memory_mb << 20,
            "cpu_usage_ns": int(cpu_ns),
            "oom_kills": 0,
        }

    def console_path(self, vm_dir: Path) -> Path:
        return vm_dir / CONSOLE_FILE


def _allocated_bytes(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def _read_snapshot_info(snap: Path) -> SnapshotInfo | None:
    for where in (snap, snap.with_name(SNAPSHOT_DIR + ".old")):
        try:
            raw = json.loads((where / SNAPSHOT_INFO).read_text())
            info = SnapshotInfo(taken=float(raw["taken"]), files=int(raw["files"]),
                                bytes=int(raw["bytes"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (where / SNAPSHOT_DISK).is_file():
            if where != snap:
                os.rename(where, snap)  # a crash between a snapshot's two renames
            return info
    return None
