"""What only the libvirt driver does: a guest kernel panic (an NMI from the hypervisor,
as the fault ``guest-panic`` injects it) ends the VM's life and is reported once, as a
panic. (Its console may not show it: the kernel flushes an NMI's messages only after
the pvpanic device has told QEMU, which ends the guest.)"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from driverkit import Exits, started, vm_spec

from nfvha.agent.hypervisor.contract import HypervisorDriver
from nfvha.util.runpaths import RunPaths

BOOT_S = 120.0  # the kernel's start under TCG on a busy 2-core machine, with margin


@pytest.mark.req("HV-2")
@pytest.mark.parametrize("driver", ["libvirt"], indirect=True)
async def test_a_guest_kernel_panic_is_reported_once(driver: HypervisorDriver,
                                                     run: RunPaths) -> None:
    import libvirt

    spec = vm_spec()
    life, vm_dir = await started(driver, run, spec)
    exits = Exits()
    driver.watch(spec, life, exits)
    console = driver.console_path(vm_dir)
    end = time.monotonic() + BOOT_S
    # Its kernel must be up, with its pvpanic module, to take the NMI and say so.
    while b"modules loaded" not in (console.read_bytes() if console.exists() else b""):
        assert time.monotonic() < end, "the guest kernel did not start"
        assert exits.count == 0, "the VM died while booting"
        await asyncio.sleep(0.05)

    def nmi() -> None:
        conn = libvirt.open(driver._paths.uri)  # type: ignore[attr-defined]
        try:
            conn.lookupByName(f"{run.tag}-{spec.name}").injectNMI(0)
        finally:
            conn.close()

    await asyncio.to_thread(nmi)
    try:
        await asyncio.wait_for(exits.event.wait(), 30)
    except TimeoutError:
        raise AssertionError("no exit after the NMI; console:\n"
                             + console.read_text(errors="replace")[-3000:]) from None
    await driver.release(spec)  # the guest is dead; its QEMU is gone once released
    assert not driver.is_alive(life)
    assert "guest kernel panic" in (driver.death_cause(life) or "")
    await asyncio.sleep(0)  # a second report would be queued by now
    assert exits.count == 1


@pytest.mark.req("VNFHA-1")
@pytest.mark.parametrize("driver", ["libvirt"], indirect=True)
async def test_a_real_vms_watchdog_device_runs_out_and_is_reported(
        driver: HypervisorDriver, run: RunPaths) -> None:
    """A VNFC arms the VM's i6300esb through the SDK and never kicks it: QEMU's device
    runs out (whatever the guest and the agent do) and libvirt says so."""
    arm_and_stop = ("from nfvha.amf.watchdog import Watchdog\n"
                    "import time\nWatchdog().arm(1.0)\ntime.sleep(1e6)\n")
    spec = vm_spec().model_copy(update={"watchdog_action": "none"})
    spec = spec.model_copy(update={"vnfcs": [spec.vnfcs[0].model_copy(
        update={"argv": [sys.executable, "-c", arm_and_stop]})]})
    life, vm_dir = await started(driver, run, spec)
    exits, fired = Exits(), Exits()
    driver.watch(spec, life, exits, fired)
    try:
        await asyncio.wait_for(fired.event.wait(), BOOT_S)
    except TimeoutError:
        raise AssertionError("the watchdog did not run out; console:\n"
                             + driver.console_path(vm_dir).read_text(errors="replace")[-2000:]
                             ) from None
    assert exits.count == 0 and driver.is_alive(life)  # action none: the VM runs on
    await driver.kill(spec, life)
    await asyncio.wait_for(exits.event.wait(), 30)
    await driver.release(spec)
