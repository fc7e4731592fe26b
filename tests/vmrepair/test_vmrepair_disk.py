"""A test-bed VM's disk (ADR 0010): initial state, snapshot, restore."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nfvha.nfvi.disk import DiskError, VmDisk


def write(disk: VmDisk, name: str, text: str) -> None:
    disk.ensure()
    (disk.path / name).parent.mkdir(parents=True, exist_ok=True)
    (disk.path / name).write_text(text)


@pytest.mark.req("REC-2")
def test_restore_brings_back_the_disk_as_it_was_at_the_snapshot(tmp_path: Path) -> None:
    disk = VmDisk(tmp_path)
    write(disk, "db/rows", "1\n")
    info = disk.snapshot(taken=7.0)
    assert (info.taken, info.files, info.bytes) == (7.0, 1, 2)
    write(disk, "db/rows", "1\n2\n")
    write(disk, "later", "x")
    assert disk.prepare("snapshot") == {"mode": "snapshot", "snapshot": info.to_json()}
    assert (disk.path / "db/rows").read_text() == "1\n"
    assert not (disk.path / "later").exists()
    # A second snapshot replaces the first; only the last one is kept.
    write(disk, "db/rows", "3\n")
    assert disk.snapshot(taken=8.0).taken == 8.0
    last = disk.last_snapshot()
    assert last is not None and last.taken == 8.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "snapshot"]


@pytest.mark.req("VNFHA-13")
def test_initial_state_is_an_empty_disk_and_keep_keeps_it(tmp_path: Path) -> None:
    disk = VmDisk(tmp_path)
    write(disk, "f", "data")
    assert disk.prepare("keep") == {"mode": "keep"}
    assert (disk.path / "f").read_text() == "data"
    assert disk.prepare("initial") == {"mode": "initial"}
    assert list(disk.path.iterdir()) == []


def test_restore_without_a_snapshot_falls_back_to_the_initial_state(tmp_path: Path) -> None:
    disk = VmDisk(tmp_path)
    write(disk, "f", "data")
    done = disk.prepare("snapshot")
    assert done["snapshot"] is None and "initial" in str(done["fallback"])
    assert list(disk.path.iterdir()) == []


def test_a_snapshot_interrupted_between_its_renames_is_still_found(tmp_path: Path) -> None:
    disk = VmDisk(tmp_path)
    write(disk, "f", "v1")
    disk.snapshot(taken=1.0)
    # What a crash after renaming the old snapshot away leaves behind.
    os.rename(tmp_path / "snapshot", tmp_path / "snapshot.old")
    write(disk, "f", "v2")
    info = disk.restore()
    assert info is not None and info.taken == 1.0
    assert (disk.path / "f").read_text() == "v1"


def test_symlinks_are_copied_as_links_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "outside"
    secret.write_text("host file")
    disk = VmDisk(tmp_path / "vm")
    disk.ensure()
    (disk.path / "link").symlink_to(secret)
    disk.snapshot(taken=1.0)
    copied = tmp_path / "vm" / "snapshot" / "data" / "link"
    assert copied.is_symlink() and os.readlink(copied) == str(secret)


def test_a_disk_too_big_to_snapshot_is_refused_and_the_old_snapshot_kept(
        tmp_path: Path) -> None:
    disk = VmDisk(tmp_path, max_snapshot_bytes=100)
    write(disk, "small", "x")
    disk.snapshot(taken=1.0)
    write(disk, "big", "y" * 200)
    with pytest.raises(DiskError, match="limited to 100"):
        disk.snapshot(taken=2.0)
    last = disk.last_snapshot()
    assert last is not None and last.taken == 1.0
