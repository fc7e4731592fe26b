"""Where a run keeps its files.

Every run of the test bed has a run id (5 characters, [a-z0-9]) and a directory
``/tmp/nfvha-<run>`` (or ``$NFVHA_RUN_ROOT/nfvha-<run>``) holding the per-host and
per-VM files. All kernel objects carry the same ``nfvha-<run>`` prefix so that
``nfvha down`` can find the leftovers of a crashed run.
"""

from __future__ import annotations

import os
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

PREFIX = "nfvha-"
RUN_ID_RE = re.compile(r"^[a-z0-9]{5}$")
_ALPHABET = string.ascii_lowercase + string.digits


def new_run_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(5))


def run_root() -> Path:
    return Path(os.environ.get("NFVHA_RUN_ROOT", "/tmp"))


@dataclass(frozen=True)
class RunPaths:
    run_id: str

    def __post_init__(self) -> None:
        if not RUN_ID_RE.match(self.run_id):
            raise ValueError(f"bad run id {self.run_id!r}: 5 characters a-z0-9")

    @property
    def tag(self) -> str:
        """``nfvha-<run>``: the prefix of every namespace, bridge, cgroup and dir."""
        return f"{PREFIX}{self.run_id}"

    @property
    def root(self) -> Path:
        return run_root() / self.tag

    @property
    def run_file(self) -> Path:
        """The run's description: addresses, ports, pids of top-level processes."""
        return self.root / "run.json"

    @property
    def topology_file(self) -> Path:
        return self.root / "topology.yaml"

    @property
    def controller_dir(self) -> Path:
        return self.root / "controller"

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def vm_dir(self, vm: str) -> Path:
        return self.root / "vms" / vm

    def host_netns(self, host: str) -> str:
        return f"{self.tag}-host-{host}"

    def vm_netns(self, vm: str) -> str:
        return f"{self.tag}-vm-{vm}"
