"""Fixtures for the libvirt fact tests: a private libvirtd in a network namespace of the
test's own (``nfvha-<run>-host-lv``), the stand-in guest, and an event recorder.
Everything is removed in teardown by ``teardown_run`` (what ``nfvha down`` runs), which
also proves that ``nfvha down`` finds a daemon's leftovers."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from libvirt_standin import missing_tools, standin_guest
from libvirt_testutil import LvHost

from nfvha.nfvi.libvirtd import (
    LibvirtdPaths,
    missing_prerequisites,
    start_libvirtd,
    stop_libvirtd,
)
from nfvha.util.runpaths import RunPaths, new_run_id

HOST = "lv"


def _require() -> None:
    why = missing_prerequisites()
    if why:
        pytest.skip(f"libvirt tests: {why}")


@pytest.fixture(scope="session")
def guest() -> tuple[Path, Path]:
    """(kernel, initrd) of the stand-in guest (see libvirt_standin.py)."""
    _require()
    why = missing_tools()
    if why:
        pytest.skip(f"stand-in guest: {why}")
    return standin_guest()


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPaths]:
    """A run under /tmp (short socket paths), torn down as ``nfvha down`` would."""
    _require()
    monkeypatch.delenv("NFVHA_RUN_ROOT", raising=False)
    paths = RunPaths(new_run_id())
    paths.root.mkdir(parents=True)
    try:
        yield paths
    finally:
        from nfvha.nfvi.cleanup import teardown_run
        from nfvha.nfvi.fabric import list_fabric_objects
        from nfvha.nfvi.libvirtd import leftover_pids

        teardown_run(paths.run_id)
        netnses, links = list_fabric_objects(paths.run_id)
        assert not netnses and not links, f"left behind: {netnses + links}"
        assert not paths.root.exists()
        assert not leftover_pids(paths.root)


@pytest.fixture
def host_netns(run: RunPaths) -> str:
    """The test's own host namespace (deleted by the run's teardown, by its tag)."""
    netns = run.host_netns(HOST)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
    return netns


@pytest.fixture
async def lvhost(run: RunPaths, host_netns: str) -> AsyncIterator[LvHost]:
    netns = host_netns
    paths = LibvirtdPaths.for_host(run, HOST)
    daemon = await start_libvirtd(paths, netns=netns, subreaper=True)
    vm_dir = run.root / "vms"
    vm_dir.mkdir()
    host = LvHost(run, netns, paths, daemon, vm_dir)
    try:
        yield host
    finally:
        await stop_libvirtd(host.daemon)
