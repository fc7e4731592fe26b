"""Does KVM really run a guest here? (ADR 0018)

``/dev/kvm`` can exist while a KVM guest hangs right after the boot loader (nested
virtualisation that does not work: the machine this project is built on). So the
answer is measured: boot the given kernel with ``-accel kvm`` (plain QEMU, no libvirt
needed) and wait until the serial console shows ``Linux version``. The answer is kept
per boot of the machine (keyed by the kernel's boot id), so the price, at most
``timeout_s`` where KVM hangs, is paid once. Drivers use ``type='kvm'`` where the answer
is yes and ``type='qemu'`` (TCG) elsewhere, and say which.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU_SYSTEM = "/usr/bin/qemu-system-x86_64"
PROBE_TIMEOUT_S = 5.0
CACHE_FILE = Path("/run/nfvha/kvm-probe.json")
BOOT_MARK = b"Linux version"


@dataclass(frozen=True)
class KvmProbe:
    runs_guests: bool
    detail: str  # why not, or how long the kernel took to speak
    boot_id: str
    probed_at: float  # wall clock, for people


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _cached(cache_file: Path) -> KvmProbe | None:
    try:
        raw = json.loads(cache_file.read_text())
        probe = KvmProbe(**raw)
    except (OSError, ValueError, TypeError):
        return None
    return probe if probe.boot_id == boot_id() else None


def _store(cache_file: Path, probe: KvmProbe) -> None:
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(probe)))
        os.replace(tmp, cache_file)


async def _boot_speaks(kernel: Path, qemu: str, timeout_s: float) -> tuple[bool, str]:
    argv = [
        qemu, "-accel", "kvm", "-m", "128", "-smp", "1", "-nodefaults", "-no-user-config",
        "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1",
    ]
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(timeout_s):
            while BOOT_MARK not in seen:
                chunk = await proc.stdout.read(4096)
                if not chunk:
                    tail = seen.decode(errors="replace").strip().splitlines()[-1:]
                    return False, f"QEMU exited before the kernel spoke: {tail}"
                seen = seen[-4096:] + chunk
        return True, f"kernel spoke after {time.monotonic() - t0:.2f}s"
    except TimeoutError:
        return False, f"no kernel output in {timeout_s}s with -accel kvm (guest hangs)"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def kvm_runs_guests(
    kernel: Path,
    *,
    timeout_s: float = PROBE_TIMEOUT_S,
    cache_file: Path = CACHE_FILE,
    qemu: str = QEMU_SYSTEM,
    refresh: bool = False,
) -> KvmProbe:
    """Whether a KVM guest boots here (``.runs_guests``), cached per machine boot."""
    if not refresh:
        cached = _cached(cache_file)
        if cached is not None:
            return cached
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        ok, detail = False, "/dev/kvm missing or not accessible"
    elif not os.access(qemu, os.X_OK):
        ok, detail = False, f"{qemu} missing"
    else:
        ok, detail = await _boot_speaks(kernel, qemu, timeout_s)
    probe = KvmProbe(ok, detail, boot_id(), time.time())
    _store(cache_file, probe)
    return probe


def virt_type(probe: KvmProbe) -> str:
    """The libvirt domain type to use: ``kvm`` where KVM runs guests, else ``qemu`` (TCG)."""
    return "kvm" if probe.runs_guests else "qemu"
