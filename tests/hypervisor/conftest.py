"""Fixtures for the hypervisor driver tests. Everything a test creates is removed
afterwards, even when it fails: the run fixture tears the whole run down by its tag."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nfvha.nfvi.cgroups import CgroupDriver, detect_cgroups
from nfvha.nfvi.cleanup import teardown_run
from nfvha.nfvi.fabric import list_fabric_objects
from nfvha.util.runpaths import RunPaths, new_run_id


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups)")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPaths]:
    """A fresh run under /tmp (a libvirtd's sockets need short paths); torn down
    completely afterwards, as ``nfvha down`` would."""
    _require_root()
    monkeypatch.delenv("NFVHA_RUN_ROOT", raising=False)
    paths = RunPaths(new_run_id())
    paths.root.mkdir(parents=True)
    try:
        yield paths
    finally:
        teardown_run(paths.run_id)
        netnses, links = list_fabric_objects(paths.run_id)
        assert not netnses and not links, f"left behind: {netnses + links}"
        assert not detect_cgroups().exists(paths.tag)
        assert not paths.root.exists()


@pytest.fixture
def cg() -> CgroupDriver:
    _require_root()
    return detect_cgroups()
