"""The guest image's initramfs builder: module dependencies, modinfo, cpio layout."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from nfvha.nfvi import guestimage
from nfvha.nfvi.guestinit import INIT_SCRIPT
from nfvha.nfvi.initramfs import (
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    CpioWriter,
    KernelModule,
    ModuleError,
    ModuleIndex,
    elf_section,
    module_name,
    modules_to_load,
    parse_modules_dep,
    read_cpio,
    read_modinfo,
)


def fake_module(modinfo: dict[str, str] | None = None, extra: bytes = b"") -> bytes:
    """A minimal ELF64 LE file with a ``.modinfo`` section (and a decoy section)."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in (modinfo or {}).items())
    names = b"\0.text\0.modinfo\0.shstrtab\0"
    body = extra + info + names
    text_at, info_at = 64, 64 + len(extra)
    names_at = info_at + len(info)
    shoff = 64 + len(body)
    shoff += -shoff % 8
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, 4, 3)

    def section(name_off: int, offset: int, size: int) -> bytes:
        sh = bytearray(64)
        struct.pack_into("<I", sh, 0, name_off)
        struct.pack_into("<QQ", sh, 0x18, offset, size)
        return bytes(sh)

    image = bytes(header) + body
    image += b"\0" * (shoff - len(image))
    return image + (section(0, 0, 0) + section(1, text_at, len(extra))
                    + section(7, info_at, len(info)) + section(16, names_at, len(names)))


def module_tree(root: Path, modules: dict[str, dict[str, str]], builtin: list[str] = (),
                compress: bool = False) -> Path:
    tree = root / "lib" / "modules" / "6.1.0-test"
    for rel, info in modules.items():
        path = tree / "kernel" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = fake_module(info, extra=b"code of " + rel.encode())
        if compress:
            path.with_name(path.name + ".xz").write_bytes(lzma.compress(data))
        else:
            path.write_bytes(data)
    (tree / "modules.builtin").write_text("".join(f"kernel/{b}\n" for b in builtin))
    return tree


def test_module_names_as_the_kernel_knows_them() -> None:
    assert module_name("kernel/net/9p/9pnet_virtio.ko.xz") == "9pnet_virtio"
    assert module_name("crc32c-intel.ko") == "crc32c_intel"
    assert module_name("x.ko.zst") == "x"


def test_modules_dep_lines() -> None:
    text = ("kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
            "kernel/net/9p/9pnet.ko:\n")
    assert parse_modules_dep(text) == {"9p": ("9pnet", "netfs"), "9pnet": ()}


def test_modinfo_is_read_from_the_elf_section_plain_and_xz(tmp_path: Path) -> None:
    data = fake_module({"depends": "virtio,virtio_ring", "softdep": "pre: crc32c",
                        "license": "GPL"})
    (tmp_path / "a.ko").write_bytes(data)
    (tmp_path / "a.ko.xz").write_bytes(lzma.compress(data))
    for name in ("a.ko", "a.ko.xz"):
        info = read_modinfo(tmp_path / name)
        assert info["depends"] == ["virtio,virtio_ring"]
        assert info["softdep"] == ["pre: crc32c"]
    assert elf_section(data, ".nothere") is None
    with pytest.raises(ModuleError):
        elf_section(b"not an elf at all" * 8, ".modinfo")


def test_dependencies_come_first_and_builtins_are_left_out(tmp_path: Path) -> None:
    tree = module_tree(tmp_path, {
        "fs/9p/9p.ko": {"depends": "9pnet,fscache,netfs"},
        "fs/fscache/fscache.ko": {"depends": "netfs"},
        "fs/netfs/netfs.ko": {"depends": ""},
        "net/9p/9pnet.ko": {"depends": ""},
        "net/9p/9pnet_virtio.ko": {"depends": "virtio,9pnet,virtio_ring"},
        "drivers/virtio/virtio.ko": {"depends": "virtio_ring"},
        "drivers/virtio/virtio_ring.ko": {"depends": ""},
        "fs/ext4/ext4.ko": {"depends": "jbd2", "softdep": "pre: crc32c_generic nosuch"},
        "crypto/crc32c_generic.ko": {"depends": ""},
        "unused/other.ko": {"depends": ""},
    }, builtin=["fs/jbd2/jbd2.ko"], compress=True)
    index = ModuleIndex.scan(tree)
    order = [m.name for m in modules_to_load(index, ["9p", "9pnet_virtio", "ext4"])]
    assert sorted(order) == sorted(["9p", "fscache", "netfs", "9pnet", "9pnet_virtio",
                                    "virtio", "virtio_ring", "ext4", "crc32c_generic"])
    for before, after in [("netfs", "fscache"), ("fscache", "9p"), ("9pnet", "9p"),
                          ("virtio_ring", "virtio"), ("virtio", "9pnet_virtio"),
                          ("crc32c_generic", "ext4")]:
        assert order.index(before) < order.index(after), (before, after, order)
    assert "jbd2" not in order  # built in


def test_modules_dep_is_used_when_the_kernel_tree_has_one(tmp_path: Path) -> None:
    tree = module_tree(tmp_path, {"a/x.ko": {"depends": "wrong"}, "a/y.ko": {}})
    (tree / "modules.dep").write_text("kernel/a/x.ko: kernel/a/y.ko\nkernel/a/y.ko:\n")
    assert [m.name for m in modules_to_load(ModuleIndex.scan(tree), ["x"])] == ["y", "x"]


def test_unknown_modules_and_cycles_are_errors() -> None:
    def mod(name: str, *deps: str) -> KernelModule:
        return KernelModule(name, Path(f"/m/{name}.ko"), deps)

    index = ModuleIndex({"a": mod("a", "b"), "b": mod("b", "a"), "c": mod("c", "zz")}, set())
    with pytest.raises(ModuleError, match="cycle"):
        modules_to_load(index, ["a"])
    with pytest.raises(ModuleError, match=r"'zz'.*c"):
        modules_to_load(index, ["c"])
    with pytest.raises(ModuleError, match="'nosuch'"):
        modules_to_load(index, ["nosuch"])


def test_cpio_newc_layout_round_trips_and_is_aligned() -> None:
    cpio = CpioWriter()
    cpio.directory("bin")
    cpio.file("bin/busybox", b"\x7fELF" + b"x" * 13, 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.char_device("dev/console", 5, 1)
    archive = cpio.finish()
    assert len(archive) % 4 == 0
    assert archive.startswith(b"070701")
    entries = read_cpio(archive)
    assert entries["bin"][0] == S_IFDIR | 0o755
    assert entries["bin/busybox"] == (S_IFREG | 0o755, b"\x7fELF" + b"x" * 13, (0, 0))
    assert entries["bin/sh"][:2] == (S_IFLNK | 0o777, b"busybox")
    assert entries["dev/console"][0] == S_IFCHR | 0o600
    assert entries["dev/console"][2] == (5, 1)
    assert CpioWriter().finish() == CpioWriter().finish()  # deterministic


@pytest.mark.skipif(shutil.which("cpio") is None, reason="no cpio(1) to cross-check with")
def test_cpio_is_read_by_gnu_cpio() -> None:
    cpio = CpioWriter()
    cpio.directory("etc")
    cpio.file("etc/x", b"hello")
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=cpio.finish(),
                             capture_output=True, check=True).stdout.decode().split()
    assert listing == ["etc", "etc/x"]


def test_initramfs_holds_busybox_modules_in_load_order_and_init(tmp_path: Path) -> None:
    tree = module_tree(tmp_path, {
        "drivers/virtio/virtio.ko": {"depends": "virtio_ring"},
        "drivers/virtio/virtio_ring.ko": {"depends": ""},
        "drivers/block/virtio_blk.ko": {"depends": "virtio,virtio_ring"},
    }, compress=True)
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    entries = read_cpio(gzip.decompress(
        guestimage.build_initramfs(busybox, tree, wanted=["virtio_blk"])))
    assert entries["init"][0] == S_IFREG | 0o755
    assert entries["init"][1] == INIT_SCRIPT.encode()
    assert entries["bin/busybox"][1] == b"\x7fELF busybox"
    assert entries["dev/console"][2] == (5, 1)
    assert entries["etc/nfvha/modules"][1].decode().split() == [
        "virtio_ring.ko", "virtio.ko", "virtio_blk.ko"]
    # Stored uncompressed: busybox's insmod takes plain ELF.
    assert entries["lib/modules/virtio_blk.ko"][1].startswith(b"\x7fELF")
    for d in ("proc", "sys", "dev", "host", "tmp"):
        assert entries[d][0] == S_IFDIR | 0o755


def test_init_script_is_valid_shell(tmp_path: Path) -> None:
    script = tmp_path / "init"
    script.write_text(INIT_SCRIPT)
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_kernel_command_line() -> None:
    line = guestimage.kernel_cmdline("/v/bin/python", Path("/vms/vm1"), ip="198.18.1.5/15")
    assert line.split() == ["console=ttyS0", "quiet", "panic=-1", "nfvha.python=/v/bin/python",
                            "nfvha.vmdir=/vms/vm1", "nfvha.ip=198.18.1.5/15"]
    with pytest.raises(ValueError, match="space"):
        guestimage.kernel_cmdline("/v/bin/python", Path("/vms/my vm"))


def test_image_inputs_change_with_what_the_image_is_built_from() -> None:
    base = guestimage.image_inputs("linux-image-6.1.0-57-amd64", "6.1.192-3", "1:1.35.0", 64)
    assert base == guestimage.image_inputs("linux-image-6.1.0-57-amd64", "6.1.192-3",
                                           "1:1.35.0", 64)
    assert base != guestimage.image_inputs("linux-image-6.1.0-58-amd64", "6.1.200-1",
                                           "1:1.35.0", 64)
    assert base != guestimage.image_inputs("linux-image-6.1.0-57-amd64", "6.1.192-3",
                                           "1:1.35.0", 128)
