"""The libvirt daemon's config and the domain XML, without libvirt (ADR 0018)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nfvha.nfvi.libvirt_domain import BridgeNic, DomainSpec, Share, domain_xml
from nfvha.nfvi.libvirtd import (
    QEMU_CONF,
    LibvirtdError,
    LibvirtdPaths,
    LibvirtdSettings,
    daemon_argv,
    libvirtd_conf,
)
from nfvha.util.runpaths import RunPaths


def test_paths_short_and_under_the_host() -> None:
    p = LibvirtdPaths.for_host(RunPaths("ab12c"), "compute-1")
    assert p.base.parts[-2:] == ("compute-1", "libvirt")
    assert p.uri == f"qemu+unix:///system?socket={p.base}/run/libvirt-sock"
    assert p.qemu_pidfile("vm1") == p.base / "run" / "qemu" / "vm1.pid"
    p.check_lengths()
    with pytest.raises(LibvirtdError, match="too long"):
        LibvirtdPaths(Path("/tmp/" + "x" * 100)).check_lengths()


def test_config_root_qemu_no_cgroups_no_logd() -> None:
    for line in ('user = "root"', 'security_driver = "none"', "dynamic_ownership = 0",
                 "cgroup_controllers = [ ]", 'stdio_handler = "file"', "namespaces = [ ]"):
        assert line in QEMU_CONF.splitlines()
    p = LibvirtdPaths(Path("/tmp/nfvha-ab12c/hosts/h/libvirt"))
    conf = libvirtd_conf(p, LibvirtdSettings())
    assert f'unix_sock_dir = "{p.run}"' in conf
    assert 'auth_unix_rw = "none"' in conf


def test_daemon_argv_binds_the_system_dirs_then_execs() -> None:
    p = LibvirtdPaths(Path("/tmp/nfvha-ab12c/hosts/h w/libvirt"))
    argv = daemon_argv(p)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    script = argv[-1]
    assert "mount --bind '/tmp/nfvha-ab12c/hosts/h w/libvirt/run' /run/libvirt" in script
    assert script.splitlines()[-1].startswith("exec /usr/sbin/libvirtd -f ")


def test_domain_xml_has_what_detection_needs() -> None:
    spec = DomainSpec(
        name="nfvha-ab12c-vm1", kernel=Path("/k"), initrd=Path("/i"),
        cmdline="console=ttyS0 panic=-1", console_log=Path("/c.log"),
        console_socket=Path("/c.sock"), watchdog="reset", channel_socket=Path("/g.sock"),
        shares=(Share(Path("/"), "nfvha-host"),), disk=Path("/d.qcow2"),
        nics=(BridgeNic("br0", "52:54:00:00:00:01", "tap0"),), metadata={"vm": "vm1"},
    )
    dom = ET.fromstring(domain_xml(spec))
    assert dom.get("type") == "qemu"
    assert dom.findtext("os/kernel") == "/k" and dom.findtext("os/initrd") == "/i"
    assert dom.findtext("on_crash") == "destroy"
    dev = dom.find("devices")
    assert dev is not None
    assert dev.find("panic").get("model") == "isa"  # type: ignore[union-attr]
    assert dev.find("watchdog").get("action") == "reset"  # type: ignore[union-attr]
    assert dev.find("serial/log").get("file") == "/c.log"  # type: ignore[union-attr]
    assert dev.find("channel/target").get("name") == "org.nfvha.guest.0"  # type: ignore[union-attr]
    assert dev.find("filesystem/readonly") is not None
    assert dev.find("interface/source").get("bridge") == "br0"  # type: ignore[union-attr]
    assert dev.find("memballoon").get("model") == "none"  # type: ignore[union-attr]
