"""A local-NFVI VM's disk and its last snapshot (REC-2, ADR 0010).

A test-bed VM is a guest process, so its "disk" is a directory: ``<vm dir>/disk``.
The guest records every boot there (``boot.log``, one JSON line per boot) and gives
its VNFCs the path in ``NFVHA_VM_DISK``; whatever they write there is the VM's
persistent state. The rest of the VM directory (console, records, last words) is the
hypervisor's, not the VM's, and is never reset or snapshotted.

- initial state: an empty disk (the image every VM is provisioned with);
- snapshot: a copy of the disk in ``<vm dir>/snapshot/data`` with ``info.json``;
  only the last one is kept. It is built beside the old one and swapped in by
  renames, so a crash mid-snapshot leaves the previous snapshot usable;
- restore: the disk is replaced by the snapshot's copy (the VM is not running).

Symlinks are copied as symlinks, never followed: a VNFC must not make the host copy
files from outside its disk.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from nfvha.nfvi.guest import DISK_DIR

SNAPSHOT_DIR = "snapshot"
# The agent freezes the VM while it copies (crash-consistent); a big disk would keep
# it frozen long enough to look hung, so snapshots are for small disks only.
DEFAULT_MAX_SNAPSHOT_BYTES = 16 << 20

DiskMode = Literal["keep", "initial", "snapshot"]
DISK_MODES: tuple[DiskMode, ...] = ("keep", "initial", "snapshot")


class DiskError(RuntimeError):
    pass


@dataclass(frozen=True)
class SnapshotInfo:
    taken: float  # wall clock
    files: int
    bytes: int

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def disk_usage(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``, symlinks counted but not followed."""
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            files += 1
            size += os.lstat(os.path.join(root, n)).st_size
    return files, size


class VmDisk:
    def __init__(self, vm_dir: Path,
                 max_snapshot_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES) -> None:
        self.vm_dir = vm_dir
        self.path = vm_dir / DISK_DIR
        self._snap = vm_dir / SNAPSHOT_DIR
        self._max_bytes = max_snapshot_bytes

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """Back to the initial state: empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True)

    def check_size(self) -> tuple[int, int]:
        files, size = disk_usage(self.path)
        if size > self._max_bytes:
            raise DiskError(f"disk of {self.vm_dir.name} holds {size} bytes; snapshots are"
                            f" limited to {self._max_bytes}")
        return files, size

    def snapshot(self, taken: float) -> SnapshotInfo:
        """Copy the disk as it is now (the caller keeps it from changing meanwhile)."""
        self.ensure()
        files, size = self.check_size()
        new = self._sibling(".new")
        shutil.rmtree(new, ignore_errors=True)
        try:
            shutil.copytree(self.path, new / "data", symlinks=True)
        except (OSError, shutil.Error) as e:
            shutil.rmtree(new, ignore_errors=True)
            raise DiskError(f"snapshot of {self.vm_dir.name} failed: {e}") from None
        info = SnapshotInfo(taken=taken, files=files, bytes=size)
        (new / "info.json").write_text(json.dumps(info.to_json()))
        old = self._sibling(".old")
        shutil.rmtree(old, ignore_errors=True)
        if self._snap.exists():
            os.rename(self._snap, old)
        os.rename(new, self._snap)
        shutil.rmtree(old, ignore_errors=True)
        return info

    def last_snapshot(self) -> SnapshotInfo | None:
        found = self._usable()
        return None if found is None else found[1]

    def restore(self) -> SnapshotInfo | None:
        """Replace the disk by the last snapshot; without one, reset it (None)."""
        found = self._usable()
        if found is None:
            self.reset()
            return None
        where, info = found
        shutil.rmtree(self.path, ignore_errors=True)
        shutil.copytree(where / "data", self.path, symlinks=True)
        return info

    def prepare(self, mode: DiskMode) -> dict[str, object]:
        """Make the disk what a VM start asked for; what was done, for the reply."""
        if mode == "keep":
            self.ensure()
            return {"mode": mode}
        if mode == "initial":
            self.reset()
            return {"mode": mode}
        info = self.restore()
        if info is None:
            return {"mode": mode, "snapshot": None, "fallback": "initial (no snapshot yet)"}
        return {"mode": mode, "snapshot": info.to_json()}

    def _sibling(self, suffix: str) -> Path:
        return self._snap.with_name(SNAPSHOT_DIR + suffix)

    def _usable(self) -> tuple[Path, SnapshotInfo] | None:
        # A crash between the two renames of a snapshot leaves only ".old".
        for where in (self._snap, self._sibling(".old")):
            try:
                raw = json.loads((where / "info.json").read_text())
                info = SnapshotInfo(taken=float(raw["taken"]), files=int(raw["files"]),
                                    bytes=int(raw["bytes"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if (where / "data").is_dir():
                return where, info
        return None
