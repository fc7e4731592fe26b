"""The hypervisor driver contract (ADR 0019), the same tests for every driver: a VM
is made, watched, frozen for a snapshot, sampled, stopped and killed the way the VM
manager relies on. Parametrized by driver (the ``driver`` fixture): the ``process``
driver without a fabric (the VM in the host's namespace) in a cgroup of its own; the
``libvirt`` driver with a real QEMU guest of the project's image on the host's
private libvirtd, its NIC on the host's bridge of a one-host fabric."""

from __future__ import annotations

import asyncio

from driverkit import Exits, died, started, vm_spec

from nfvha.agent.hypervisor.contract import HypervisorDriver
from nfvha.util.runpaths import RunPaths


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
