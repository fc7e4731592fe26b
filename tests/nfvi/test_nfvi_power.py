"""The local fence device: power off is a power cut, power on boots the host again."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfvi_testutil import (
    log_has,
    netns_inode,
    proc_netns_inode,
    udp_roundtrip,
    wait_dead,
    wait_until,
)

from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths
from nfvha.nfvi.fabric import (
    FabricPlan,
    create_fabric,
    create_vm_network,
    destroy_fabric,
    list_netns,
    plan_fabric,
)
from nfvha.nfvi.power import (
    LocalPowerDevice,
    PowerError,
    host_cgroup,
    host_system_cgroup,
    save_boot_spec,
    vm_cgroup,
)
from nfvha.nfvi.spawn import spawn_detached_sync
from nfvha.util.procs import is_same_process
from nfvha.util.runpaths import RunPaths

PORT = 7100

# A stand-in host supervisor: a child process, a TCP listener that keeps its connections
# open, and a UDP echo on the host's mgmt address.
HOSTD = """
import socket, subprocess, sys, threading
child = subprocess.Popen(["sleep", "300"])
listener = socket.create_server((sys.argv[1], int(sys.argv[2])))
held = []
def accept():
    while True:
        held.append(listener.accept()[0])
threading.Thread(target=accept, daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("booted", child.pid, flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"up:" + data, peer)
"""


@pytest.fixture
def fabric(run: RunPaths) -> Iterator[FabricPlan]:
    plan = plan_fabric(run.run_id, ["h0", "h1"], [("a", "h0")])
    try:
        create_fabric(plan)
        yield plan
    finally:
        destroy_fabric(run.run_id)


def _link_is_up(netns: str, link: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show", link], capture_output=True, text=True, check=True
    ).stdout
    flags = out.split("<", 1)[1].split(">", 1)[0].split(",")
    return "UP" in flags


@pytest.mark.testbed
def test_power_off_and_on(
    run: RunPaths, cg: CgroupDriver, fabric: FabricPlan, tmp_path: Path
) -> None:
    plan = fabric
    h0 = plan.host("h0")
    log = run.host_dir("h0") / "hostd.log"
    save_boot_spec(
        run,
        "h0",
        argv=[sys.executable, "-I", "-S", "-c", HOSTD, h0.mgmt_ip, str(PORT)],
        cwd=str(tmp_path),
        log=str(log),
    )
    power = LocalPowerDevice(run, plan, "h0", cg)
    other = LocalPowerDevice(run, plan, "h1", cg)
    assert power.status() == "off"

    boot = power.on()
    assert power.status() == "on" and other.status() == "off"
    assert boot.pid in cg.pids(host_system_cgroup(run, "h0"))
    assert proc_netns_inode(boot.pid) == netns_inode(h0.netns)
    wait_until(lambda: log_has(log, "booted"), what="the host to boot")
    assert udp_roundtrip(None, (h0.mgmt_ip, PORT), b"1") == b"up:1"
    with pytest.raises(PowerError):
        power.on()

    # A VM on the host, in its own namespace and cgroup.
    create_vm_network(plan, "a")
    vm_rel = vm_cgroup(run, "h0", "a")
    cg.create(vm_rel, memory_bytes=64 << 20)
    vm = spawn_detached_sync(
        ["sleep", "300"], netns=plan.vm("a").netns, cgroup_procs=cgroup_procs_paths(cg, vm_rel)
    )
    assert len(cg.pids(host_cgroup(run, "h0"))) == 3  # hostd, its child, the VM
    # A peer's TCP connection to the host: a power cut must not close it cleanly.
    peer = socket.create_connection((h0.mgmt_ip, PORT), timeout=5)

    power.off()
    assert power.status() == "off"
    assert cg.pids(host_cgroup(run, "h0")) == []
    wait_dead(boot.pid, boot.start_ticks)
    wait_dead(vm.pid, vm.start_ticks)
    assert not _link_is_up(h0.netns, "mgmt0") and not _link_is_up(h0.netns, "data0")
    assert plan.vm("a").netns in list_netns()  # like a disk, the VM's namespace stays
    power.off()  # idempotent
    with peer:
        # The links went down before the kill: no FIN or RST reached the peer, which
        # sees only silence (an orderly close would read b"", a reset would raise).
        peer.settimeout(0.5)
        with pytest.raises(TimeoutError):
            peer.recv(1)

    again = power.on()
    assert again.pid != boot.pid or again.start_ticks != boot.start_ticks
    assert _link_is_up(h0.netns, "mgmt0") and _link_is_up(h0.netns, "data0")
    wait_until(lambda: log.read_text().count("booted") == 2, what="the host to boot again")
    assert udp_roundtrip(None, (h0.mgmt_ip, PORT), b"2") == b"up:2"
    assert is_same_process(again.pid, again.start_ticks)
    power.off()
    assert power.status() == "off"


@pytest.mark.testbed
def test_power_on_needs_a_boot_spec(run: RunPaths, cg: CgroupDriver, fabric: FabricPlan) -> None:
    with pytest.raises(PowerError, match="no boot command"):
        LocalPowerDevice(run, fabric, "h1", cg).on()
    with pytest.raises(KeyError):
        LocalPowerDevice(run, fabric, "nope", cg)
