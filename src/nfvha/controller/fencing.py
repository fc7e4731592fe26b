"""The controller's fence devices: one driver per host (ADR 0011).

Two uses. The liveness check asks the power status of a suspect host on every tick
(ADR 0004) and must not block: a local device answers at once, a fence agent's last
answer is served from a cache refreshed in the background. Host repair fences a host
(power off, then *verified* off by status) before anything of it is started
elsewhere (REC-1), and may power it on again afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from nfvha.controller.config import ControllerConfig
from nfvha.model.settings import Settings
from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.fabric import FabricPlan
from nfvha.nfvi.fence import FenceDriver, FenceError, PowerState, fence_driver
from nfvha.nfvi.power import LocalPowerDevice
from nfvha.util.clock import Clock
from nfvha.util.runpaths import RunPaths

log = logging.getLogger(__name__)


@dataclass
class _Cached:
    state: PowerState | None = None
    at_ns: int = 0
    generation: int = 0  # bumped by every fence action: older answers are stale
    refreshing: bool = False


class Fencing:
    def __init__(self, drivers: dict[str, FenceDriver], settings: Settings,
                 clock: Clock) -> None:
        self.drivers = drivers
        self._settings = settings
        self._clock = clock
        self._cache: dict[str, _Cached] = {h: _Cached() for h in drivers}
        self._tasks: set[asyncio.Task[None]] = set()

    def has_device(self, host: str) -> bool:
        return host in self.drivers

    def describe(self, host: str) -> str:
        d = self.drivers.get(host)
        return d.description if d is not None else "no fence device"

    # -- for the liveness check (synchronous, never blocks) -------------------------
    def power_status(self, host: str) -> PowerState | None:
        driver = self.drivers.get(host)
        if driver is None:
            return None
        quick = driver.quick_status()
        if quick is not None:
            return quick
        c = self._cache[host]
        max_age_ns = self._settings.fence_status_cache_ms * 1_000_000
        if not c.refreshing and self._clock.mono_ns() - c.at_ns >= max_age_ns:
            c.refreshing = True
            task = asyncio.get_running_loop().create_task(self._refresh(host, c.generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return c.state

    async def _refresh(self, host: str, generation: int) -> None:
        c = self._cache[host]
        try:
            state: PowerState | None = await self.drivers[host].status()
        except FenceError as e:
            log.warning("power status of %s unknown: %s", host, e)
            state = None
        finally:
            c.refreshing = False
        if c.generation == generation:
            c.state, c.at_ns = state, self._clock.mono_ns()

    def _remember(self, host: str, state: PowerState) -> None:
        c = self._cache[host]
        c.generation += 1
        c.state, c.at_ns = state, self._clock.mono_ns()

    # -- for host repair -------------------------------------------------------------
    async def fence_off(self, host: str) -> str:
        """Power ``host`` off and wait until its device reports it off. Returns how it
        was done; raises FenceError (the host is then NOT known to be isolated)."""
        driver = self.drivers.get(host)
        if driver is None:
            raise FenceError(f"host {host} has no fence device")
        await driver.off()
        interval = self._settings.fence_verify_interval_ms / 1000
        loop = asyncio.get_running_loop()
        end = loop.time() + self._settings.fence_verify_timeout_s
        while (state := await driver.status()) != "off":
            if loop.time() >= end:
                raise FenceError(f"{driver.description}: {host} still reports power"
                                 f" {state} {self._settings.fence_verify_timeout_s:g} s"
                                 " after off")
            await asyncio.sleep(interval)
        self._remember(host, "off")
        return driver.description

    async def power_on(self, host: str) -> None:
        driver = self.drivers.get(host)
        if driver is None:
            raise FenceError(f"host {host} has no fence device")
        await driver.on()
        self._remember(host, "on")

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()


def build_fencing(cfg: ControllerConfig, clock: Clock) -> Fencing:
    """Drivers for the hosts of ``cfg`` that have a fence device."""
    local: dict[str, LocalPowerDevice] = {}
    if cfg.fabric is not None and any(h.fence.type == "local" for h in cfg.hosts):
        plan = FabricPlan.from_json(cfg.fabric)
        run = RunPaths(cfg.run_id)
        cgroups = detect_cgroups()
        local = {h.name: LocalPowerDevice(run, plan, h.name, cgroups)
                 for h in cfg.hosts if h.fence.type == "local"}
    drivers: dict[str, FenceDriver] = {}
    for h in cfg.hosts:
        d = fence_driver(h.fence, h.name, local.get(h.name))
        if d is not None:
            drivers[h.name] = d
    return Fencing(drivers, cfg.settings, clock)
