"""Fixtures for the libvirt fact tests: a private libvirtd in a network namespace of the
test's own (``nfvha-<run>-host-lv``), the stand-in guest, and an event recorder.
Everything is removed in teardown by ``teardown_run`` (what ``nfvha down`` runs), which
also proves that ``nfvha down`` finds a daemon's leftovers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfvha.nfvi.libvirtd import (
    Libvirtd,
    LibvirtdPaths,
    missing_prerequisites,
    start_libvirtd,
    stop_libvirtd,
)
from nfvha.util.runpaths import RunPaths, new_run_id

sys.path.insert(0, str(Path(__file__).parent))
from standin import missing_tools, standin_guest

HOST = "lv"


def _require() -> None:
    why = missing_prerequisites()
    if why:
        pytest.skip(f"libvirt tests: {why}")


@pytest.fixture(scope="session")
def guest() -> tuple[Path, Path]:
    """(kernel, initrd) of the stand-in guest (see standin.py)."""
    _require()
    why = missing_tools()
    if why:
        pytest.skip(f"stand-in guest: {why}")
    return standin_guest()


@dataclass
class LvHost:
    run: RunPaths
    netns: str
    paths: LibvirtdPaths
    daemon: Libvirtd
    vm_dir: Path

    async def restart_daemon(self) -> Libvirtd:
        self.daemon = await start_libvirtd(self.paths, netns=self.netns, subreaper=True)
        return self.daemon


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


def proc_field(pid: int, key: str) -> str:
    """A field of /proc/<pid>/status (e.g. VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise KeyError(key)


def rss_mib(pid: int) -> float:
    return int(proc_field(pid, "VmRSS").split()[0]) / 1024


def cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def read_until(reader: asyncio.StreamReader, mark: bytes, timeout_s: float) -> int:
    """Read a console stream until ``mark``; returns time.monotonic_ns() when seen."""
    buf = b""
    async with asyncio.timeout(timeout_s):
        while mark not in buf:
            chunk = await reader.read(4096)
            assert chunk, f"console closed before {mark!r}: {buf[-500:]!r}"
            buf = buf[-4096:] + chunk
    return time.monotonic_ns()


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


@dataclass
class Recorder:
    """Collects what a LibvirtEvents delivers; tests wait on it (no sleeps)."""

    items: list[object] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, item: object) -> None:
        self.items.append(item)
        self.changed.set()

    async def wait_for(self, pred: Callable[[object], bool], timeout_s: float) -> object:
        async with asyncio.timeout(timeout_s):
            seen = 0
            while True:
                for item in self.items[seen:]:
                    if pred(item):
                        return item
                seen = len(self.items)
                self.changed.clear()
                await self.changed.wait()
