"""The hypervisor driver contract (ADR 0019): what the agent's VM manager asks of the
thing that runs its VMs.

The VM manager (``nfvha.agent.vms``) owns a VM's states, its guest link, its events
and its records; a driver owns how a VM is made and unmade: its disk, its resources,
its network, the process that *is* the VM (the guest program of a process VM; QEMU of
a real one), how its death is seen, how it is stopped, frozen for a snapshot,
sampled. A driver never emits events and never changes a VM's state: it answers, and
calls back once when a VM's life ends.

Every life of a VM is a process: a pid and its start time in clock ticks, which tells
it from a later process that got the same pid. That pair is what the agent's state
file keeps, so that a restarted agent adopts the VMs that ran on without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nfvha.agent.config import VmLaunch
from nfvha.nfvi.disk import DiskMode, SnapshotInfo


@dataclass(frozen=True)
class VmLife:
    """One life of a VM: the process that is the VM."""

    pid: int
    start_ticks: int


class HypervisorDriver(Protocol):
    """What runs VMs on one host. Blocking methods are called from a worker thread,
    coroutines and callbacks on the agent's loop."""

    kind: str  # "process" or "libvirt": shown with each VM

    async def start(self) -> None:
        """Before the first VM is adopted or started: what the driver runs on (the
        libvirt driver's daemon and its event connection)."""
        ...

    async def close(self) -> None:
        """The agent stops: let go of what ``start`` opened. VMs go on running."""
        ...

    def prepare(self, spec: VmLaunch, vm_dir: Path, disk: DiskMode) -> dict[str, Any]:
        """Blocking. Everything the VM needs before it boots: its disk in the mode
        asked (ADR 0010), its resources, its network, its guest's configuration.
        Leftovers of a previous life are removed first. Returns what was done to the
        disk."""
        ...

    async def launch(self, spec: VmLaunch, vm_dir: Path) -> VmLife:
        """Start the prepared VM; returns as soon as its process exists (it boots on
        its own; its guest says when it is up)."""
        ...

    def watch(self, spec: VmLaunch, life: VmLife, on_exit: Callable[[], None],
              on_watchdog: Callable[[], None] | None = None) -> None:
        """Call ``on_exit`` once, on the loop, as soon as the VM's life ends - at once
        (on the loop's next turn) if it has ended already. Event-driven: no polling.
        A life ends when its process exits, or when the hypervisor says the guest is
        dead (a guest kernel panic) while its process is still being ended: ``release``
        finishes that. ``on_watchdog``: the VM's watchdog device ran out (a driver whose
        VMs have one; the VM manager takes the VM's watchdog action)."""
        ...

    def unwatch(self, spec: VmLaunch) -> None:
        """Stop watching the VM (it is being forgotten, not stopped)."""
        ...

    def is_alive(self, life: VmLife) -> bool:
        """The VM's process of that life still runs (adoption after an agent restart)."""
        ...

    def exit_status(self, life: VmLife) -> int | None:
        """The life's wait status if it can be known now, without waiting."""
        ...

    def death_cause(self, life: VmLife) -> str | None:
        """What the hypervisor said ended this life, if it said (``guest kernel
        panic``): the VM's crash report says so rather than how its process ended."""
        ...

    async def exit_status_later(self, life: VmLife) -> tuple[int | None, str]:
        """(wait status, description), waiting briefly for whoever reaps the VM's
        process to record it: for last words, never on the detection path."""
        ...

    def terminate(self, spec: VmLaunch, life: VmLife) -> None:
        """Ask the VM to stop (it may take its time, or ignore it)."""
        ...

    async def kill(self, spec: VmLaunch, life: VmLife) -> None:
        """End the VM now, also when it is hung or frozen."""
        ...

    async def release(self, spec: VmLaunch) -> None:
        """After the VM's death: what it leaves must go before anything restarts it -
        service addresses that would go on answering ARP, processes left behind."""
        ...

    def check_snapshot(self, spec: VmLaunch, vm_dir: Path) -> None:
        """Blocking. Raise if the VM's disk cannot be snapshotted (too large), before
        the VM is frozen for it."""
        ...

    def snapshot(self, spec: VmLaunch, vm_dir: Path, taken: float) -> tuple[SnapshotInfo, bool]:
        """Blocking. The VM's disk as its last snapshot, crash-consistent (the VM is
        frozen meanwhile where the driver can freeze it); (info, whether it was
        frozen)."""
        ...

    def sample(self, spec: VmLaunch) -> dict[str, Any] | None:
        """Blocking. The VM's resource use now (NFVI-5, HV-6): memory_bytes,
        memory_limit_bytes, cpu_usage_ns, oom_kills; None if the driver cannot tell."""
        ...

    def console_path(self, vm_dir: Path) -> Path:
        """Where the VM's console output goes (its last words quote the tail)."""
        ...
