"""nfvha's guest image for real (QEMU) VMs, built from Debian packages (ADR 0017).

``python -m nfvha.nfvi.guestimage build [--dir D]``

- a kernel: Debian's ``linux-image-amd64`` (its versioned dependency, e.g.
  ``linux-image-6.1.0-57-amd64``), downloaded with ``apt-get download`` and extracted
  with ``dpkg-deb -x``, never installed. Not the ``cloud`` flavour: it has neither
  9p nor the i6300esb watchdog;
- an initramfs (cpio newc, gzip) with ``busybox-static``, the kernel modules the
  guest needs (:data:`GUEST_MODULES` and their dependencies) and ``/init``
  (:mod:`nfvha.nfvi.guestinit`);
- a base disk: a small qcow2 holding an empty ext4 file system; each VM boots from
  an overlay on it (:func:`fresh_overlay`, the disk mode ``initial``).

The image lives in ``$NFVHA_GUEST_DIR`` or ``<repo>/.cache/guest``; ``image.json``
there records the inputs it was built from, and ``build`` rebuilds only when they
changed (new kernel or busybox version, other modules, another /init or disk size).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nfvha.nfvi.guestinit import DISK_DEVICE, HOST_TAG, INIT_SCRIPT, MODULE_LIST, PORT_NAME
from nfvha.nfvi.initramfs import CpioWriter, ModuleIndex, module_bytes, modules_to_load

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
GUEST_MODULES: tuple[str, ...] = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
    "9p", "9pnet_virtio",
    "crc32c_generic", "ext4",  # ext4 needs crc32c through the crypto API (no symbol dep)
    "pvpanic_mmio", "pvpanic_pci",  # QEMU's pvpanic (ISA/ACPI) and pvpanic-pci
    "i6300esb",  # the hardware watchdog libvirt's <watchdog model='i6300esb'/> gives
)
DEFAULT_DISK_MB = 64
# Bump when the image's layout changes in a way the other inputs do not show.
IMAGE_FORMAT = 1
ENV_DIR = "NFVHA_GUEST_DIR"
IMAGE_RECORD = "image.json"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
BASE_DISK_FILE = "base.qcow2"
APT_TIMEOUT_S = 600.0
TOOL_TIMEOUT_S = 120.0


class ImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class GuestImage:
    kernel: Path
    initrd: Path
    base_disk: Path
    kernel_version: str

    def to_json(self) -> dict[str, str]:
        return {"kernel": str(self.kernel), "initrd": str(self.initrd),
                "base_disk": str(self.base_disk), "kernel_version": self.kernel_version}


def default_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    # src/nfvha/nfvi/guestimage.py -> the repository
    return Path(__file__).resolve().parents[3] / ".cache" / "guest"


# --------------------------------------------------------------------------- tools


def _run(argv: Sequence[str], timeout_s: float = TOOL_TIMEOUT_S,
         cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ImageError(f"{argv[0]}: {e}") from None
    if done.returncode != 0:
        raise ImageError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def resolve_kernel_package(meta: str = KERNEL_META_PACKAGE) -> str:
    """The versioned kernel package a meta package depends on."""
    out = _run(["apt-cache", "depends", meta])
    found = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if found is None:
        raise ImageError(f"{meta} depends on no linux-image package:\n{out}")
    return found.group(1)


def candidate_version(package: str) -> str:
    out = _run(["apt-cache", "policy", package])
    found = re.search(r"Candidate:\s*(\S+)", out)
    if found is None or found.group(1) == "(none)":
        raise ImageError(f"no candidate version of {package} (apt-get update?)")
    return found.group(1)


def download(package: str, version: str, debs: Path,
             timeout_s: float = APT_TIMEOUT_S) -> Path:
    """The package's .deb in ``debs``, downloaded unless it is already there."""
    debs.mkdir(parents=True, exist_ok=True)
    for deb in debs.glob(f"{package}_*.deb"):
        if _run(["dpkg-deb", "-f", str(deb), "Version"]).strip() == version:
            return deb
    _run(["apt-get", "download", "-q", f"{package}={version}"], timeout_s, cwd=debs)
    for deb in debs.glob(f"{package}_*.deb"):
        if _run(["dpkg-deb", "-f", str(deb), "Version"]).strip() == version:
            return deb
    raise ImageError(f"apt-get download {package}={version} left no .deb in {debs}")


# --------------------------------------------------------------------------- initramfs


def build_initramfs(busybox: Path, modules_root: Path,
                    wanted: Sequence[str] = GUEST_MODULES) -> bytes:
    """The gzipped cpio initramfs: busybox, ``wanted`` modules (with dependencies,
    uncompressed) in load order in ``/etc/nfvha/modules``, and ``/init``."""
    index = ModuleIndex.scan(modules_root)
    order = modules_to_load(index, wanted)
    cpio = CpioWriter()
    for d in ("bin", "dev", "etc", "etc/nfvha", "host", "lib", "lib/modules", "proc",
              "sys", "tmp"):
        cpio.directory(d)
    # The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
    cpio.char_device("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    names = []
    for module in order:
        name = f"{module.name}.ko"
        cpio.file(f"lib/modules/{name}", module_bytes(module.path))
        names.append(name)
    cpio.file(MODULE_LIST, ("\n".join(names) + "\n").encode())
    cpio.file("init", INIT_SCRIPT.encode(), 0o755)
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------- disks


def build_base_disk(dest: Path, size_mb: int = DEFAULT_DISK_MB,
                    timeout_s: float = TOOL_TIMEOUT_S) -> None:
    """A qcow2 holding an empty ext4 file system of ``size_mb`` MiB (label nfvha-disk)."""
    with tempfile.TemporaryDirectory(prefix="nfvha-disk-", dir=dest.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        with open(raw, "wb") as f:
            f.truncate(size_mb << 20)
        # Initialised now, not lazily by the guest's kernel: an overlay stays small
        # and a booting guest does not spend its (emulated) CPU on it.
        _run(["mkfs.ext4", "-q", "-F", "-L", "nfvha-disk", "-m", "0",
              "-E", "lazy_itable_init=0,lazy_journal_init=0", str(raw)], timeout_s)
        new = Path(tmp) / "base.qcow2"
        _run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(new)],
             timeout_s)
        os.replace(new, dest)


def fresh_overlay(base_disk: Path, overlay: Path, timeout_s: float = TOOL_TIMEOUT_S) -> Path:
    """A new, empty overlay on ``base_disk`` at ``overlay`` (replacing any old one): the
    VM's disk in its initial state (disk mode ``initial``)."""
    overlay.parent.mkdir(parents=True, exist_ok=True)
    new = overlay.with_name(overlay.name + ".new")
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base_disk.resolve()),
          "-F", "qcow2", str(new)], timeout_s)
    os.replace(new, overlay)  # a crash midway leaves the old disk or the new one
    return overlay


# --------------------------------------------------------------------------- the image


def image_inputs(kernel_package: str, kernel_version: str, busybox_version: str,
                 disk_mb: int, modules: Sequence[str] = GUEST_MODULES) -> dict[str, object]:
    return {
        "format": IMAGE_FORMAT,
        "kernel_package": kernel_package,
        "kernel_version": kernel_version,
        "busybox_version": busybox_version,
        "modules": list(modules),
        "init_sha256": hashlib.sha256(INIT_SCRIPT.encode()).hexdigest(),
        "disk_mb": disk_mb,
    }


def load_image(directory: Path) -> tuple[GuestImage, dict[str, object]] | None:
    """The image built in ``directory`` and the inputs it was built from, if complete."""
    try:
        record = json.loads((directory / IMAGE_RECORD).read_text())
        image = GuestImage(kernel=directory / KERNEL_FILE, initrd=directory / INITRD_FILE,
                           base_disk=directory / BASE_DISK_FILE,
                           kernel_version=str(record["kernel_release"]))
        inputs = record["inputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(p.is_file() for p in (image.kernel, image.initrd, image.base_disk)):
        return None
    return image, inputs


def build(directory: Path | None = None, disk_mb: int = DEFAULT_DISK_MB,
          log: bool = False) -> GuestImage:
    """The guest image in ``directory`` (default :func:`default_dir`), built or rebuilt
    if its inputs changed. Without apt (offline) an existing image is used as it is."""
    directory = (directory or default_dir()).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    existing = load_image(directory)
    try:
        kernel_package = resolve_kernel_package()
        inputs = image_inputs(kernel_package, candidate_version(kernel_package),
                              candidate_version(BUSYBOX_PACKAGE), disk_mb)
    except ImageError as e:
        if existing is not None:
            _say(log, f"guest image: cannot check its packages ({e}); using the one built")
            return existing[0]
        raise
    if existing is not None and existing[1] == inputs:
        return existing[0]
    started = time.monotonic()
    _say(log, f"guest image: building in {directory} from {kernel_package}")
    debs = directory / "debs"
    kernel_deb = download(kernel_package, str(inputs["kernel_version"]), debs)
    busybox_deb = download(BUSYBOX_PACKAGE, str(inputs["busybox_version"]), debs)
    for old in debs.glob("*.deb"):  # keep only what this image is built from
        if old not in (kernel_deb, busybox_deb):
            old.unlink()
    extract = directory / "extract"
    shutil.rmtree(extract, ignore_errors=True)
    extract.mkdir()
    try:
        _run(["dpkg-deb", "-x", str(kernel_deb), str(extract / "kernel")])
        _run(["dpkg-deb", "-x", str(busybox_deb), str(extract / "busybox")])
        kernels = sorted((extract / "kernel" / "boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise ImageError(f"expected one kernel in {kernel_deb}, found {kernels}")
        release = kernels[0].name.removeprefix("vmlinuz-")
        modules_root = _modules_root(extract / "kernel", release)
        initrd = build_initramfs(extract / "busybox" / "bin" / "busybox", modules_root)
        _write_atomic(directory / INITRD_FILE, initrd)
        _write_atomic(directory / KERNEL_FILE, kernels[0].read_bytes())
    finally:
        # Some 400 MB of modules; the .debs stay as the cache.
        shutil.rmtree(extract, ignore_errors=True)
    if existing is None or existing[1].get("disk_mb") != disk_mb:
        build_base_disk(directory / BASE_DISK_FILE, disk_mb)
    record = {"inputs": inputs, "kernel_release": release,
              "built": time.time(), "build_s": round(time.monotonic() - started, 2)}
    _write_atomic(directory / IMAGE_RECORD, json.dumps(record, indent=2).encode())
    image = load_image(directory)
    assert image is not None
    _say(log, f"guest image: built in {record['build_s']} s")
    return image[0]


def _modules_root(kernel_tree: Path, release: str) -> Path:
    # Debian 12 keeps modules under /lib, later releases under /usr/lib.
    for base in ("lib", "usr/lib"):
        root = kernel_tree / base / "modules" / release
        if root.is_dir():
            return root
    raise ImageError(f"no modules for {release} in {kernel_tree}")


def _write_atomic(path: Path, data: bytes) -> None:
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- booting


def kernel_cmdline(python: Path | str, vm_dir: Path, ip: str | None = None,
                   gw: str | None = None, config: Path | None = None,
                   extra: Sequence[str] = ()) -> str:
    """The kernel command line of an nfvha guest (see :mod:`nfvha.nfvi.guestinit`)."""
    args = ["console=ttyS0", "quiet", "panic=-1",
            f"nfvha.python={python}", f"nfvha.vmdir={vm_dir}"]
    for path in (str(python), str(vm_dir)):
        if any(c.isspace() for c in path):
            raise ValueError(f"a path on the kernel command line has a space: {path!r}")
    if config is not None:
        args.append(f"nfvha.config={config}")
    if ip is not None:
        args.append(f"nfvha.ip={ip}")
    if gw is not None:
        args.append(f"nfvha.gw={gw}")
    return " ".join([*args, *extra])


def qemu_command(image: GuestImage, vm_dir: Path, disk: Path, python: Path | str,
                 memory_mb: int = 256, accel: str = "tcg", ip: str | None = None,
                 nic: Sequence[str] = ("-nic", "none"),
                 qemu: str = "qemu-system-x86_64", extra: Sequence[str] = ()) -> list[str]:
    """A plain QEMU command line for an nfvha guest: the devices the guest expects
    (what a libvirt domain of it must have too). The guest link is the unix socket
    ``<vm_dir>/guest.sock`` (QEMU listens; the agent's GuestLink connects), the serial
    console goes to ``<vm_dir>/console.log``."""
    return [
        qemu, "-accel", accel, "-m", str(memory_mb), "-smp", "1",
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", kernel_cmdline(python, vm_dir, ip=ip),
        "-serial", f"file:{vm_dir / 'console.log'}",
        "-fsdev", "local,id=nfvha-host,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", f"virtio-9p-pci,fsdev=nfvha-host,mount_tag={HOST_TAG}",
        "-drive", f"file={disk},if=none,id=nfvha-disk,format=qcow2,cache=writeback",
        "-device", "virtio-blk-pci,drive=nfvha-disk",
        "-chardev", f"socket,id=nfvha-guest,path={vm_dir / 'guest.sock'},server=on,wait=off",
        "-device", "virtio-serial-pci",
        "-device", f"virtserialport,chardev=nfvha-guest,name={PORT_NAME}",
        "-device", "pvpanic",
        "-device", "i6300esb",
        *nic,
        *extra,
    ]


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nfvha.nfvi.guestimage",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the guest image unless it is up to date")
    build_cmd.add_argument("--dir", type=Path, default=None,
                           help=f"image directory (default: ${ENV_DIR} or <repo>/.cache/guest)")
    build_cmd.add_argument("--disk-mb", type=int, default=DEFAULT_DISK_MB)
    args = parser.parse_args(argv)
    try:
        image = build(args.dir, disk_mb=args.disk_mb, log=True)
    except ImageError as e:
        print(f"guest image: {e}", file=sys.stderr)
        return 1
    for key, value in image.to_json().items():
        print(f"{key}: {value}")
    print(f"disk device: {DISK_DEVICE}, 9p tag: {HOST_TAG}, guest port: {PORT_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
