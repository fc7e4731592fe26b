"""The guest program's configuration (``<vm dir>/guest.json``), the same for every
driver: what differs is whether a dead VM leaves addresses on the host, and where the
VM's watchdog timer runs."""

from __future__ import annotations

from pathlib import Path

from nfvha.agent.config import VmLaunch
from nfvha.util.files import atomic_write_json

GUEST_CONFIG_FILE = "guest.json"
# The guest's VNFCs ask for memory in chunks of this size when told to leak (fault
# injection): small enough that the VM's memory limit is reached in steps.
MEMORY_HOG_CHUNK_MB = 16


def write_guest_config(spec: VmLaunch, vm_dir: Path, *, release_service_addresses: bool,
                       watchdog_device: str | None) -> None:
    """``release_service_addresses``: the VM's namespace outlives it (a process VM), so
    the guest drops its VIPs as it ends. ``watchdog_device``: a VM with a watchdog
    kicks this device (a real VM's); None: the agent's timer (a process VM)."""
    has_watchdog = spec.watchdog_action is not None
    atomic_write_json(vm_dir / GUEST_CONFIG_FILE, {
        "vm": spec.name,
        "vnfcs": [{"name": c.name, "argv": c.argv, "env": None} for c in spec.vnfcs],
        "memory_hog_chunk_mb": MEMORY_HOG_CHUNK_MB,
        "release_service_addresses": release_service_addresses,
        "watchdog": has_watchdog,
        "watchdog_device": watchdog_device if has_watchdog else None,
    }, fsync=False)
