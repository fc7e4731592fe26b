"""A STAND-IN guest for the libvirt fact tests, until the real guest image lands
(``src/nfvha/nfvi/guestimage.py``, being built on another branch).

Kernel: Debian's ``linux-image-cloud-amd64`` (its dependency, the versioned image
package), fetched with ``apt-get download`` and unpacked with ``dpkg-deb`` into a cache
dir; nothing is installed on the machine. Initramfs: a newc cpio holding the kernel's
``pvpanic.ko`` + ``pvpanic-mmio.ko`` (modules in the cloud kernel, so a guest without
them never reports a panic) and a tiny static ``/init`` compiled here with gcc. The init
loads the two modules, prints ``nfvha-standin: ready``, then, by the kernel command line
variable ``standin=``: ``panic`` exits (so the kernel panics: "Attempted to kill init")
or ``idle`` waits forever.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

CACHE = Path(os.environ.get("NFVHA_STANDIN_CACHE",
                            Path(__file__).resolve().parents[2] / ".cache" / "libvirt-standin"))
META_PACKAGE = "linux-image-cloud-amd64"

INIT_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void load(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0)
        printf("nfvha-standin: cannot load %s\n", path);
    if (fd >= 0) close(fd);
}

int main(void) {
    load("/pvpanic.ko");
    load("/pvpanic-mmio.ko");
    const char *mode = getenv("standin");
    printf("nfvha-standin: ready mode=%s\n", mode ? mode : "idle");
    fflush(stdout);
    if (mode && strcmp(mode, "panic") == 0) {
        printf("nfvha-standin: panicking\n");
        fflush(stdout);
        return 1; /* init exits: the kernel panics */
    }
    for (;;) pause();
}
"""


def missing_tools() -> str | None:
    for tool in ("apt-get", "apt-cache", "dpkg-deb", "gcc"):
        if shutil.which(tool) is None:
            return f"{tool} missing"
    if not Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return "libc6-dev (static libc) missing"
    return None


def _image_package() -> str:
    out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                         text=True, check=True).stdout
    m = re.search(r"Depends:\s+(linux-image-\S+-cloud-amd64)", out)
    if not m:
        raise RuntimeError(f"apt-cache depends {META_PACKAGE}: no image package in {out!r}")
    return m.group(1)


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A newc cpio archive of (name, mode, data); directories have empty data."""
    out = bytearray()

    def add(ino: int, name: str, mode: int, data: bytes) -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        )
        out.extend(hdr.encode() + nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for i, (name, mode, data) in enumerate(entries, start=1):
        add(i, name, mode, data)
    add(0, "TRAILER!!!", 0, b"")
    return bytes(out)


def _build(cache: Path) -> tuple[Path, Path]:
    pkg = _image_package()
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(["apt-get", "download", "-q", pkg], cwd=work, check=True,
                   capture_output=True)
    deb = next(work.glob("*.deb"))
    tree = work / "tree"
    tree.mkdir()
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                         capture_output=True).stdout
    subprocess.run(["tar", "-x", "--wildcards", "./boot/vmlinuz-*", "*/pvpanic/*.ko"],
                   cwd=tree, input=tar, check=True)
    vmlinuz = next((tree / "boot").glob("vmlinuz-*"))
    pvpanic = tree.glob("lib/modules/*/kernel/drivers/misc/pvpanic/*.ko")
    mods = {p.name: p.read_bytes() for p in pvpanic}
    (work / "init.c").write_text(INIT_C)
    subprocess.run(["gcc", "-static", "-Os", "-o", str(work / "init"), str(work / "init.c")],
                   check=True, capture_output=True)
    initrd = _newc([
        ("dev", 0o040755, b""),
        ("proc", 0o040755, b""),
        ("init", 0o100755, (work / "init").read_bytes()),
        ("pvpanic.ko", 0o100644, mods["pvpanic.ko"]),
        ("pvpanic-mmio.ko", 0o100644, mods["pvpanic-mmio.ko"]),
    ])
    kernel_out, initrd_out = cache / "vmlinuz", cache / "initrd.cpio"
    shutil.copyfile(vmlinuz, kernel_out)
    initrd_out.write_bytes(initrd)
    (cache / "VERSION").write_text(pkg + "\n")
    shutil.rmtree(work)
    return kernel_out, initrd_out


def standin_guest(cache: Path = CACHE) -> tuple[Path, Path]:
    """(kernel, initrd) of the stand-in guest; built once into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    kernel, initrd = cache / "vmlinuz", cache / "initrd.cpio"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (kernel.exists() and initrd.exists()):
            return _build(cache)
    return kernel, initrd
