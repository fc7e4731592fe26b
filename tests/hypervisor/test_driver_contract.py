"""The hypervisor driver contract (ADR 0019), the same tests for every driver: a VM
is made, watched, frozen for a snapshot, sampled, stopped and killed the way the VM
manager relies on. Parametrized by driver: the ``process`` driver without a fabric
(the VM in the host's namespace) in a cgroup of its own; the ``libvirt`` driver with
a real QEMU guest of the project's image on the host's private libvirtd, its NIC on
the host's bridge of a one-host fabric."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.agent.config import AgentConfig, VmLaunch, VnfcLaunch
from nfvha.agent.hypervisor.contract import HypervisorDriver, VmLife
from nfvha.agent.hypervisor.process import ProcessDriver
from nfvha.nfvi.cgroups import CgroupDriver
from nfvha.nfvi.disk import DiskMode
from nfvha.util.procs import pidfd_open
from nfvha.util.runpaths import RunPaths

HOST = "h1"


def vm_spec(name: str = "vm1") -> VmLaunch:
    sleeper = [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"]
    return VmLaunch(name=name, cpu=0.5, memory_mb=128, netns=None, data_ip="127.0.0.1",
                    vnfcs=[VnfcLaunch(name=f"{name}-c1", argv=sleeper, port=7000)])


@pytest.fixture(params=["process", "libvirt"])
async def driver(request: pytest.FixtureRequest, run: RunPaths, cg: CgroupDriver
                 ) -> AsyncIterator[HypervisorDriver]:
    run.host_dir(HOST).mkdir(parents=True, exist_ok=True)
    if request.param == "process":
        yield ProcessDriver(agent_config(run), run, cg, None)
        return
    why = libvirt_missing()
    if why:
        pytest.skip(f"libvirt driver: {why}")
    from nfvha.agent.hypervisor.libvirt import LibvirtDriver
    from nfvha.nfvi.fabric import create_fabric, plan_fabric
    from nfvha.nfvi.libvirtd import LibvirtdPaths, start_libvirtd, stop_libvirtd

    plan = plan_fabric(run.run_id, [HOST], [("vm1", HOST)], n_vips=0)
    create_fabric(plan)
    # Its own reaper above it: no host supervisor here to reap the QEMUs it daemonizes.
    daemon = await start_libvirtd(LibvirtdPaths.for_host(run, HOST),
                                  netns=plan.host(HOST).netns, subreaper=True)
    lv = LibvirtDriver(agent_config(run, plan.to_json()), run, plan)
    await lv.start()
    try:
        yield lv
    finally:
        await lv.close()
        await stop_libvirtd(daemon)


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


async def test_a_killed_vm_is_reported_once_and_is_no_longer_alive(
        driver: HypervisorDriver, run: RunPaths) -> None:
    spec = vm_spec()
    life, _ = await started(driver, run, spec)
    assert driver.is_alive(life)
    exits = Exits()
    driver.watch(spec, life, exits)
    await driver.kill(spec, life)
    await asyncio.wait_for(exits.event.wait(), 10)
    assert not driver.is_alive(life)
    await driver.release(spec)
    await asyncio.sleep(0)  # a second report would be queued by now
    assert exits.count == 1


async def test_watching_a_life_that_has_ended_reports_it_at_once(
        driver: HypervisorDriver, run: RunPaths) -> None:
    spec = vm_spec()
    life, _ = await started(driver, run, spec)
    first = Exits()
    driver.watch(spec, life, first)
    await driver.kill(spec, life)
    await asyncio.wait_for(first.event.wait(), 10)
    late = Exits()  # an agent that adopts a VM which died while it was away
    driver.watch(spec, life, late)
    await asyncio.wait_for(late.event.wait(), 10)
    await driver.release(spec)


async def test_terminate_stops_a_vm_that_honours_it(
        driver: HypervisorDriver, run: RunPaths) -> None:
    spec = vm_spec()
    life, vm_dir = await started(driver, run, spec)
    exits = Exits()
    driver.watch(spec, life, exits)
    driver.terminate(spec, life)
    await asyncio.wait_for(exits.event.wait(), 15)
    _status, desc = await driver.exit_status_later(life)
    assert desc  # a status, or why it is unknown - never nothing
    await driver.release(spec)
    assert driver.console_path(vm_dir).exists()


async def test_snapshot_and_sample_of_a_running_vm(
        driver: HypervisorDriver, run: RunPaths) -> None:
    spec = vm_spec()
    life, vm_dir = await started(driver, run, spec)
    exits = Exits()
    driver.watch(spec, life, exits)
    try:
        await asyncio.to_thread(driver.check_snapshot, spec, vm_dir)
        info, frozen = await asyncio.to_thread(driver.snapshot, spec, vm_dir, 1234.5)
        assert info.taken == 1234.5
        assert frozen  # the VM is frozen (process) or paused (libvirt) while copied
        used = await asyncio.to_thread(driver.sample, spec)
        assert used is not None
        assert used["memory_limit_bytes"] == spec.memory_mb << 20
        assert used["memory_bytes"] > 0 and used["cpu_usage_ns"] > 0
        assert driver.is_alive(life) and exits.count == 0  # thawed, not killed
    finally:
        await driver.kill(spec, life)
        await asyncio.wait_for(exits.event.wait(), 10)
        await driver.release(spec)


async def test_unwatch_forgets_a_vm_without_reporting_it(
        driver: HypervisorDriver, run: RunPaths) -> None:
    spec = vm_spec()
    life, _ = await started(driver, run, spec)
    exits = Exits()
    driver.watch(spec, life, exits)
    driver.unwatch(spec)
    await driver.kill(spec, life)
    await driver.release(spec)
    await died(life)
    await asyncio.sleep(0)  # a report would be queued by now
    assert not driver.is_alive(life)
    assert exits.count == 0


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
