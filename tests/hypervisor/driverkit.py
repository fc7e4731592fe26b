"""What the hypervisor driver tests share: a VM spec, a running VM, exit counting."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from nfvha.agent.config import AgentConfig, VmLaunch, VnfcLaunch
from nfvha.agent.hypervisor.contract import HypervisorDriver, VmLife
from nfvha.nfvi.disk import DiskMode
from nfvha.util.procs import pidfd_open
from nfvha.util.runpaths import RunPaths

HOST = "h1"


def vm_spec(name: str = "vm1") -> VmLaunch:
    sleeper = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]
    return VmLaunch(name=name, cpu=0.5, memory_mb=128, netns=None, data_ip="127.0.0.1",
                    vnfcs=[VnfcLaunch(name=f"{name}-c1", argv=sleeper, port=7000)])


def agent_config(run: RunPaths, fabric: dict[str, Any] | None = None) -> AgentConfig:
    return AgentConfig(run_id=run.run_id, host=HOST, python=sys.executable,
                       controller_ip="127.0.0.1", controller_port=1, heartbeat_port=1,
                       mgmt_ip="127.0.0.1", fabric=fabric)


def libvirt_missing() -> str | None:
    """Why the libvirt driver cannot run here, or None."""
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "the libvirt binding is not installed (./scripts/bootstrap)"
    from nfvha.nfvi.guestimage import default_dir, load_image
    from nfvha.nfvi.libvirtd import missing_prerequisites

    return missing_prerequisites() or (
        None if load_image(default_dir()) else "no guest image (./scripts/bootstrap)")


class Exits:
    """Counts a driver's exit callbacks; each one must come once."""

    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


async def started(driver: HypervisorDriver, run: RunPaths, spec: VmLaunch,
                  disk: DiskMode = "initial") -> tuple[VmLife, Path]:
    vm_dir = run.vm_dir(spec.name)
    await asyncio.to_thread(driver.prepare, spec, vm_dir, disk)
    life = await driver.launch(spec, vm_dir)
    return life, vm_dir


async def died(life: VmLife, timeout_s: float = 10.0) -> None:
    """Until the life's process has ended, seen through a pidfd of the test's own."""
    fd = pidfd_open(life.pid)
    if fd is None:
        return  # gone already
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    loop.add_reader(fd, gone.set)
    try:
        await asyncio.wait_for(gone.wait(), timeout_s)
    finally:
        loop.remove_reader(fd)
        os.close(fd)
