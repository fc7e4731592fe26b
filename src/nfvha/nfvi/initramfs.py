"""Building blocks of the guest image's initramfs (ADR 0017): kernel modules and cpio.

- :func:`read_modinfo` reads a kernel module's ``.modinfo`` section (``depends=``,
  ``softdep=``) straight from the ELF file, compressed or not, so that no
  ``depmod``/``modinfo`` is needed: Debian's kernel package ships no ``modules.dep``
  (``depmod`` writes it when the package is installed, and we never install it);
- :class:`ModuleIndex` maps module names to files and their dependencies, from
  ``modules.dep`` when there is one, else from every module's modinfo;
- :func:`modules_to_load` resolves the modules a guest needs, with their dependencies,
  into a load order (dependencies first), leaving out what is built into the kernel;
- :class:`CpioWriter` writes a cpio archive in the "newc" format the kernel unpacks
  as its initramfs, with device nodes and symlinks, as an unprivileged user can't
  create them on disk.

Pure Python (stdlib), apart from ``zstd`` for ``.ko.zst`` modules.
"""

from __future__ import annotations

import gzip
import io
import lzma
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


class ModuleError(RuntimeError):
    pass


def module_name(path: str | Path) -> str:
    """The kernel's name of a module file: ``9pnet_virtio.ko.xz`` -> ``9pnet_virtio``;
    the kernel treats ``-`` and ``_`` alike in module names."""
    name = Path(path).name
    for suffix in MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def module_bytes(path: Path) -> bytes:
    """A module file's ELF image, decompressed (busybox's insmod takes plain ELF)."""
    raw = path.read_bytes()
    name = path.name
    if name.endswith(".xz"):
        return lzma.decompress(raw)
    if name.endswith(".gz"):
        return gzip.decompress(raw)
    if name.endswith(".zst"):
        # No zstd in Python 3.11's stdlib.
        try:
            done = subprocess.run(["zstd", "-dc"], input=raw, capture_output=True, check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise ModuleError(f"cannot decompress {path} (zstd): {e}") from None
        return done.stdout
    return raw


def elf_section(image: bytes, wanted: str) -> bytes | None:
    """The contents of the ELF64 little-endian section named ``wanted``, or None."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ModuleError("not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        (name_off,) = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 0x18)
        return name_off, offset, size

    _, names_at, names_size = header(shstrndx)
    names = image[names_at:names_at + names_size]
    for i in range(shnum):
        name_off, offset, size = header(i)
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode(errors="replace") == wanted:
            return image[offset:offset + size]
    return None


def read_modinfo(path: Path) -> dict[str, list[str]]:
    """A module's modinfo fields (``key=value`` strings), each key to all its values."""
    section = elf_section(module_bytes(path), ".modinfo")
    fields: dict[str, list[str]] = {}
    for entry in (section or b"").split(b"\0"):
        key, sep, value = entry.decode(errors="replace").partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    return fields


def _softdep_pre(values: Iterable[str]) -> list[str]:
    """Module names a ``softdep=pre: a b post: c`` wants loaded before it."""
    names: list[str] = []
    for value in values:
        section = None
        for word in value.split():
            if word.endswith(":"):
                section = word[:-1]
            elif section == "pre":
                names.append(word.replace("-", "_"))
    return names


@dataclass(frozen=True)
class KernelModule:
    name: str
    path: Path
    depends: tuple[str, ...]
    # Loaded before it if it exists as a module (ext4 wants crc32c, which it finds
    # through the crypto API, not a symbol: modules.dep does not show it).
    soft_pre: tuple[str, ...] = ()


class ModuleIndex:
    """The modules of one kernel (``lib/modules/<version>``)."""

    def __init__(self, modules: dict[str, KernelModule], builtin: set[str]) -> None:
        self.modules = modules
        self.builtin = builtin

    @classmethod
    def scan(cls, root: Path) -> ModuleIndex:
        builtin = {module_name(line.strip())
                   for line in _lines(root / "modules.builtin") if line.strip()}
        dep_file = root / "modules.dep"
        files = {module_name(p): p for p in root.rglob("*.ko*") if p.name.endswith(MODULE_SUFFIXES)}
        modules: dict[str, KernelModule] = {}
        if dep_file.exists():
            for name, depends in parse_modules_dep(dep_file.read_text()).items():
                if name in files:
                    modules[name] = KernelModule(name, files[name], depends)
        else:
            for name, path in files.items():
                info = read_modinfo(path)
                depends = tuple(d.replace("-", "_") for v in info.get("depends", [])
                                for d in v.split(",") if d)
                modules[name] = KernelModule(name, path, depends,
                                             tuple(_softdep_pre(info.get("softdep", []))))
        return cls(modules, builtin)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def parse_modules_dep(text: str) -> dict[str, tuple[str, ...]]:
    """``kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko`` lines
    (depmod's format) as ``{"9p": ("9pnet", "netfs")}``."""
    deps: dict[str, tuple[str, ...]] = {}
    for line in text.splitlines():
        target, sep, rest = line.partition(":")
        if sep:
            deps[module_name(target)] = tuple(module_name(d) for d in rest.split())
    return deps


def modules_to_load(index: ModuleIndex, wanted: Iterable[str]) -> list[KernelModule]:
    """``wanted`` (module names) and all they depend on, each dependency before its
    users; modules built into the kernel are left out. Unknown names raise."""
    order: list[KernelModule] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(name: str, required: bool, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in placed or name in index.builtin:
            return
        module = index.modules.get(name)
        if module is None:
            if required:
                raise ModuleError(f"no kernel module {name!r} (wanted by {' <- '.join(chain)})"
                                  if chain else f"no kernel module {name!r}")
            return
        if name in visiting:
            raise ModuleError(f"dependency cycle: {' -> '.join((*chain, name))}")
        visiting.add(name)
        for soft in module.soft_pre:
            visit(soft, False, (*chain, name))
        for dep in module.depends:
            visit(dep, True, (*chain, name))
        visiting.discard(name)
        placed.add(name)
        order.append(module)

    for name in wanted:
        visit(name, True, ())
    return order


# --------------------------------------------------------------------------- cpio

S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000


class CpioWriter:
    """A cpio "newc" archive (what the kernel unpacks as initramfs), built in memory.

    Entries are written in the order given; parents must come before their contents.
    Every entry is owned by root and has mtime 0, so the same inputs give the same
    bytes (the image is rebuilt only when its inputs change, and compared by hash).
    """

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._ino = 0
        self.names: list[str] = []

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, S_IFCHR | mode, b"", rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"", nlink=1, count=False)
        return self._out.getvalue()

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1,
               rdev: tuple[int, int] = (0, 0), count: bool = True) -> None:
        name = name.strip("/")
        if not name:
            raise ValueError("empty name in cpio archive")
        if count:
            self.names.append(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded)
        self._pad()
        self._out.write(data)
        self._pad()

    def _pad(self) -> None:
        self._out.write(b"\0" * (-self._out.tell() % 4))


def read_cpio(archive: bytes) -> dict[str, tuple[int, bytes, tuple[int, int]]]:
    """``{name: (mode, data, (rdev major, minor))}`` of a newc archive (tests, checks)."""
    entries: dict[str, tuple[int, bytes, tuple[int, int]]] = {}
    at = 0
    while True:
        if archive[at:at + 6] != b"070701":
            raise ValueError(f"bad cpio magic at {at}")
        fields = [int(archive[at + 6 + 8 * i: at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmajor, rminor, namesize = (fields[1], fields[6], fields[9], fields[10],
                                                fields[11])
        at += 110
        name = archive[at:at + namesize - 1].decode()
        at += namesize
        at += -at % 4
        data = archive[at:at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data, (rmajor, rminor))
