"""Helpers of the libvirt fact tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nfvha.nfvi.libvirt_domain import DomainSpec
from nfvha.nfvi.libvirt_events import DomainEvent, LibvirtEvents
from nfvha.nfvi.libvirtd import Libvirtd, LibvirtdPaths, start_libvirtd
from nfvha.util.runpaths import RunPaths


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


EVENT_TIMEOUT_S = 30.0  # a TCG boot to user space is ~3 s here; generous for a busy CI
CMDLINE = "console=ttyS0 panic=-1 quiet"


def spec(host: LvHost, guest: tuple[Path, Path], name: str, mode: str = "idle",
         **kw: object) -> DomainSpec:
    kernel, initrd = guest
    return DomainSpec(
        name=name, kernel=kernel, initrd=initrd, cmdline=f"{CMDLINE} standin={mode}",
        console_log=host.vm_dir / f"{name}.console", **kw,  # type: ignore[arg-type]
    )


def is_ev(name: str, ev: int, detail: int | None = None):  # type: ignore[no-untyped-def]
    def pred(item: object) -> bool:
        return isinstance(item, DomainEvent) and item.domain == name and item.is_(ev, detail)
    return pred


async def start_domain(w: LibvirtEvents, xml: str) -> None:
    await asyncio.to_thread(w.conn.createXML, xml, 0)


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]
