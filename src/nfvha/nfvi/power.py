"""The local fence device: power control of a test-bed host.

Powering a host off does what a power cut does: its NICs go dark first (so no FIN or RST
leaves the host, and peers see silence rather than a clean close), then every process
of the host — its supervisor, agent and VMs — dies at once. The namespaces stay, as
disks do. Powering on brings the NICs back and boots the host again from the boot
command saved in ``<run>/hosts/<host>/boot.json``.

Host cgroup layout (v1 and v2 alike): ``nfvha-<run>/<host>/system`` for the host's own
processes, ``nfvha-<run>/<host>/vm-<vm>`` for its VMs, ``nfvha-<run>/control`` for the
controller, ``nfvha-<run>/director`` for its HA director, ``nfvha-<run>/front`` for its
API front.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths
from nfvha.nfvi.fabric import HOST_LINKS, FabricPlan, set_host_link
from nfvha.nfvi.spawn import Spawned, spawn_detached_sync
from nfvha.util.files import atomic_write_json, read_json
from nfvha.util.runpaths import RunPaths

BOOT_FILE = "boot.json"


class PowerError(RuntimeError):
    """The power operation cannot be done in the host's current state."""


def host_cgroup(run: RunPaths, host: str) -> str:
    return f"{run.tag}/{host}"


def host_system_cgroup(run: RunPaths, host: str) -> str:
    return f"{run.tag}/{host}/system"


def vm_cgroup(run: RunPaths, host: str, vm: str) -> str:
    return f"{run.tag}/{host}/vm-{vm}"


def controller_cgroup(run: RunPaths) -> str:
    return f"{run.tag}/control"


def director_cgroup(run: RunPaths) -> str:
    """The HA directors' (ADR 0014): not the controllers', whose API a flood keeps busy."""
    return f"{run.tag}/director"


def front_cgroup(run: RunPaths) -> str:
    """The API front's (ADR 0014 "The API front"): bulk work, beside the controller's."""
    return f"{run.tag}/front"


def save_boot_spec(
    run: RunPaths,
    host: str,
    *,
    argv: list[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    log: str | None = None,
) -> Path:
    """Record how the host boots (what :meth:`LocalPowerDevice.on` relaunches)."""
    if not argv:
        raise ValueError("argv must not be empty")
    path = run.host_dir(host) / BOOT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"argv": list(argv), "env": env, "cwd": cwd, "log": log})
    return path


class LocalPowerDevice:
    def __init__(self, run: RunPaths, plan: FabricPlan, host: str, cgroups: CgroupDriver) -> None:
        plan.host(host)  # fail early on an unknown host
        self.run = run
        self.plan = plan
        self.host = host
        self.cgroups = cgroups

    def status(self) -> Literal["on", "off"]:
        """ "on" iff any process lives in the host's cgroup subtree."""
        rel = host_cgroup(self.run, self.host)
        return "on" if self.cgroups.pids(rel) else "off"

    def off(self) -> None:
        """Cut the host's links, then kill its whole process tree. Idempotent."""
        for link in HOST_LINKS:
            set_host_link(self.plan, self.host, link, False)
        self.cgroups.kill_all(host_cgroup(self.run, self.host))

    def on(self) -> Spawned:
        """Restore the host's links and boot it again. Refused while it is still on."""
        if self.status() == "on":
            raise PowerError(f"host {self.host} is already on")
        boot = self._boot_spec()
        for link in HOST_LINKS:
            set_host_link(self.plan, self.host, link, True)
        system = host_system_cgroup(self.run, self.host)
        self.cgroups.create(system)
        return spawn_detached_sync(
            [str(a) for a in boot["argv"]],
            env=boot.get("env"),
            cwd=boot.get("cwd"),
            netns=self.plan.host(self.host).netns,
            cgroup_procs=cgroup_procs_paths(self.cgroups, system),
            log=boot.get("log"),
        )

    def _boot_spec(self) -> dict[str, Any]:
        path = self.run.host_dir(self.host) / BOOT_FILE
        try:
            spec = read_json(path)
        except FileNotFoundError as e:
            raise PowerError(f"host {self.host} has no boot command ({path})") from e
        if not isinstance(spec, dict) or not isinstance(spec.get("argv"), list) or not spec["argv"]:
            raise PowerError(f"{path}: not a boot spec with a non-empty argv")
        return spec
