"""The domain XML nfvha's VMs need on the test bed (ADR 0018), built from a small spec.

Direct kernel boot (no firmware disk, no boot loader), TCG or KVM, and the devices the
detection functions rely on:
- ``<panic model='isa'/>`` (pvpanic): a guest panic becomes the lifecycle event
  CRASHED/PANICKED (the guest kernel needs its pvpanic + pvpanic-mmio modules loaded);
  ``on_crash`` says what libvirt does then (``destroy``: also STOPPED/CRASHED);
- ``<watchdog model='i6300esb' action=…/>``: its expiry is a WATCHDOG event (the guest
  needs the i6300esb driver, which Debian's cloud kernel does not have);
- the serial console (ttyS0) to a file, optionally also on a unix socket to read live;
- a virtio-serial channel (a unix socket the agent connects to) for the guest link;
- optional: a read-only 9p share, a qcow2 disk, a NIC as a tap on a bridge of the
  host's network namespace (``<interface type='bridge'>``: libvirt makes the tap in the
  daemon's namespace, i.e. the host's);
- no balloon, no USB, no graphics, no default NIC.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CrashAction = Literal["destroy", "restart", "preserve", "coredump-destroy", "coredump-restart"]
WatchdogAction = Literal["reset", "shutdown", "poweroff", "pause", "none", "dump", "inject-nmi"]


@dataclass(frozen=True)
class Share:
    source: Path
    tag: str
    readonly: bool = True


@dataclass(frozen=True)
class BridgeNic:
    bridge: str  # in the host's network namespace
    mac: str
    tap: str | None = None  # the tap's name (<= 15 chars); libvirt picks vnetN if None


@dataclass(frozen=True)
class DomainSpec:
    name: str
    kernel: Path
    cmdline: str
    console_log: Path
    initrd: Path | None = None
    virt_type: Literal["qemu", "kvm"] = "qemu"  # qemu = TCG
    memory_mib: int = 256
    vcpus: int = 1
    machine: str = "pc"
    uuid: str | None = None
    console_socket: Path | None = None  # the console also live on a unix socket
    pvpanic: bool = True
    on_crash: CrashAction = "destroy"
    on_reboot: Literal["restart", "destroy"] = "restart"
    on_poweroff: Literal["destroy", "restart"] = "destroy"
    watchdog: WatchdogAction | None = None
    channel_socket: Path | None = None  # virtio-serial port, QEMU listens here
    channel_name: str = "org.nfvha.guest.0"
    disk: Path | None = None  # qcow2, virtio
    shares: tuple[Share, ...] = ()
    nics: tuple[BridgeNic, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


NS_NFVHA = "https://nfvha.example/libvirt/1"


# On a guest kernel's command line: an NMI nobody claims panics it (x86 boot parameter),
# which is how a guest kernel panic is injected from outside (``injectNMI``).
NMI_PANIC_ARG = "unknown_nmi_panic"


def vm_domain_name(run_tag: str, vm: str) -> str:
    """The libvirt domain of VM ``vm`` of the run tagged ``run_tag`` (``nfvha-<run>``):
    the driver names its domains so, and the fault injector finds them by it."""
    return f"{run_tag}-{vm}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(spec: DomainSpec) -> str:
    dom = ET.Element("domain", {"type": spec.virt_type})
    _sub(dom, "name", spec.name)
    if spec.uuid:
        _sub(dom, "uuid", spec.uuid)
    if spec.metadata:
        md = _sub(dom, "metadata")
        box = ET.SubElement(md, f"{{{NS_NFVHA}}}vm")
        for k, v in sorted(spec.metadata.items()):
            box.set(k, v)
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    _sub(os_, "kernel", str(spec.kernel))
    if spec.initrd is not None:
        _sub(os_, "initrd", str(spec.initrd))
    _sub(os_, "cmdline", spec.cmdline)
    features = _sub(dom, "features")
    _sub(features, "acpi")  # the ISA pvpanic device is found through ACPI
    _sub(dom, "on_poweroff", spec.on_poweroff)
    _sub(dom, "on_reboot", spec.on_reboot)
    _sub(dom, "on_crash", spec.on_crash)
    dev = _sub(dom, "devices")
    if spec.disk is not None:
        disk = _sub(dev, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2", cache="writeback")
        _sub(disk, "source", file=str(spec.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    for share in spec.shares:
        fs = _sub(dev, "filesystem", type="mount", accessmode="passthrough")
        _sub(fs, "source", dir=str(share.source))
        _sub(fs, "target", dir=share.tag)
        if share.readonly:
            _sub(fs, "readonly")
    for nic in spec.nics:
        iface = _sub(dev, "interface", type="bridge")
        _sub(iface, "source", bridge=nic.bridge)
        _sub(iface, "mac", address=nic.mac)
        _sub(iface, "model", type="virtio")
        if nic.tap:
            _sub(iface, "target", dev=nic.tap)
    if spec.console_socket is not None:
        serial = _sub(dev, "serial", type="unix")
        _sub(serial, "source", mode="bind", path=str(spec.console_socket))
        _sub(serial, "log", file=str(spec.console_log), append="on")
    else:
        serial = _sub(dev, "serial", type="file")
        _sub(serial, "source", path=str(spec.console_log), append="on")
    _sub(serial, "target", port="0")
    if spec.channel_socket is not None:
        ch = _sub(dev, "channel", type="unix")
        _sub(ch, "source", mode="bind", path=str(spec.channel_socket))
        _sub(ch, "target", type="virtio", name=spec.channel_name)
    if spec.watchdog is not None:
        _sub(dev, "watchdog", model="i6300esb", action=spec.watchdog)
    if spec.pvpanic:
        _sub(dev, "panic", model="isa")
    _sub(dev, "memballoon", model="none")
    ET.register_namespace("nfvha", NS_NFVHA)
    return ET.tostring(dom, encoding="unicode")
