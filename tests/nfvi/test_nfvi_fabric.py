"""The isolated fabric: addressing plan, connectivity, no way out, complete teardown."""

from __future__ import annotations

import errno
import ipaddress
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nfvi_testutil import echo_argv, log_has, socket_in_netns, udp_roundtrip, wait_dead, wait_until

from nfvha.nfvi.cgroups import CgroupDriver
from nfvha.nfvi.fabric import (
    FABRIC_RANGE,
    FabricPlan,
    create_fabric,
    create_vm_network,
    delete_vm_network,
    destroy_fabric,
    list_fabric_objects,
    list_netns,
    plan_fabric,
    set_host_link,
    vm_mac,
)
from nfvha.nfvi.spawn import spawn_detached_sync
from nfvha.util.procs import kill_pid
from nfvha.util.runpaths import RunPaths, new_run_id

ECHO_PORT = 7007


def _root_networks() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    nets = []
    for line in out.splitlines():
        words = line.split()
        nets.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    return nets


def test_plan_addresses_names_and_limits() -> None:
    run_id = new_run_id()
    paths = RunPaths(run_id)
    plan = plan_fabric(run_id, ["h0", "h1"], [("a", "h0"), ("b", "h1"), ("c", "h0")], n_vips=2)
    mgmt = ipaddress.IPv4Network(plan.mgmt_subnet)
    data = ipaddress.IPv4Network(plan.data_subnet)
    assert mgmt.prefixlen == data.prefixlen == 24 and mgmt != data
    assert mgmt.subnet_of(FABRIC_RANGE) and data.subnet_of(FABRIC_RANGE)
    assert not any(mgmt.overlaps(n) or data.overlaps(n) for n in _root_networks())
    assert plan.controller_ip == str(mgmt.network_address + 1)
    assert plan.root_data_ip == str(data.network_address + 1)
    assert [(h.name, h.index, h.mgmt_ip, h.data_ip) for h in plan.hosts] == [
        ("h0", 0, str(mgmt.network_address + 10), str(data.network_address + 10)),
        ("h1", 1, str(mgmt.network_address + 11), str(data.network_address + 11)),
    ]
    assert plan.hosts[1].netns == paths.host_netns("h1")
    assert [v.data_ip for v in plan.vms] == [str(data.network_address + 60 + j) for j in range(3)]
    assert plan.vms[2].host == "h0" and plan.vms[2].netns == paths.vm_netns("c")
    assert plan.vips == (str(data.network_address + 200), str(data.network_address + 201))
    assert plan.mgmt_bridge == f"{paths.tag}m" and plan.data_bridge == f"{paths.tag}d"
    assert plan.root_mgmt_link("h1") == f"{paths.tag}m1"
    assert FabricPlan.from_json(plan.to_json()) == plan

    hosts = [f"h{i}" for i in range(50)]
    big = plan_fabric(run_id, hosts, [(f"v{j}", "h49") for j in range(140)], n_vips=50)
    assert all(len(big.root_data_link(h)) <= 15 for h in hosts)
    assert big.vms[-1].data_ip == str(ipaddress.ip_network(big.data_subnet).network_address + 199)
    assert big.prefixlen == 24
    # Past a /24's 50 hosts, 140 VMs or 50 VIPs: a wider subnet (issue 11), up to the
    # fabric's limits per run.
    assert plan_fabric(run_id, [*hosts, "h50"], []).prefixlen == 23
    assert plan_fabric(run_id, ["h0"], [(f"v{j}", "h0") for j in range(141)]).prefixlen == 23
    assert plan_fabric(run_id, ["h0"], [], n_vips=51).prefixlen == 23
    with pytest.raises(ValueError):
        plan_fabric(run_id, [f"h{i}" for i in range(1001)], [])
    with pytest.raises(ValueError):
        plan_fabric(run_id, ["h0"], [(f"v{j}", "h0") for j in range(1023)])
    with pytest.raises(ValueError):
        plan_fabric(run_id, ["h0"], [], n_vips=2047)
    with pytest.raises(ValueError):
        plan_fabric(run_id, ["h0"], [("a", "elsewhere")])


@pytest.fixture
def fabric(run: RunPaths) -> Iterator[FabricPlan]:
    plan = plan_fabric(run.run_id, ["h0", "h1"], [("a", "h0"), ("b", "h1")], n_vips=1)
    try:
        create_fabric(plan)
        yield plan
    finally:
        destroy_fabric(run.run_id)


def _ip_in(netns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True, check=False)


def _sysctl_in(netns: str, key: str) -> str:
    # /proc/sys/net belongs to the reading thread's namespace; a socket's thread does too.
    import threading

    from nfvha.nfvi.spawn import NETNS_DIR, setns_net

    value: list[str] = []

    def work() -> None:
        setns_net(f"{NETNS_DIR}/{netns}")
        value.append(Path(f"/proc/sys/{key.replace('.', '/')}").read_text().strip())

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return value[0]


@pytest.mark.testbed
def test_fabric_connectivity_isolation_and_teardown(
    run: RunPaths, cg: CgroupDriver, fabric: FabricPlan, tmp_path: Path
) -> None:
    plan = fabric
    h0, h1 = plan.hosts
    a, b = plan.vms
    for vm in ("a", "b"):
        create_vm_network(plan, vm)
    create_vm_network(plan, "a")  # idempotent
    assert {h0.netns, h1.netns, a.netns, b.netns} <= set(list_netns())

    # A UDP echo in VM b (on h1), started detached in its namespace.
    log = tmp_path / "echo-b.log"
    echo = spawn_detached_sync(echo_argv("0.0.0.0", ECHO_PORT), netns=b.netns, log=str(log))
    try:
        wait_until(lambda: log_has(log, "ready"), what="the echo server")
        # host h0 -> VM b on another host, over the data network
        assert udp_roundtrip(h0.netns, (b.data_ip, ECHO_PORT), b"h0") == b"echo:h0"
        # VM a (on h0) -> VM b (on h1)
        assert udp_roundtrip(a.netns, (b.data_ip, ECHO_PORT), b"a") == b"echo:a"
        # the root data address (where probes live) -> VM b
        assert udp_roundtrip(None, (b.data_ip, ECHO_PORT), b"probe") == b"echo:probe"

        # host h1 -> the controller address (a socket of ours in the root namespace)
        with socket_in_netns(None) as controller:
            controller.bind((plan.controller_ip, 0))
            port = controller.getsockname()[1]
            with socket_in_netns(h1.netns) as client:
                client.sendto(b"hello controller", (plan.controller_ip, port))
                controller.settimeout(5)
                data, peer = controller.recvfrom(100)
                assert data == b"hello controller" and peer[0] == h1.mgmt_ip
                controller.sendto(b"hello host", peer)
                client.settimeout(5)
                assert client.recvfrom(100)[0] == b"hello host"

        # Cutting h0's data link: h0 and its VM lose the data network, then get it back.
        set_host_link(plan, "h0", "data0", False)
        assert "state DOWN" in _ip_in(h0.netns, "link", "show", "data0").stdout
        with socket_in_netns(a.netns) as s:
            s.settimeout(0.3)
            s.sendto(b"lost", (b.data_ip, ECHO_PORT))
            with pytest.raises(TimeoutError):
                s.recvfrom(100)  # nothing comes back through a cut link
        set_host_link(plan, "h0", "data0", True)
        assert udp_roundtrip(a.netns, (b.data_ip, ECHO_PORT), b"back") == b"echo:back"
        # Cutting mgmt0 removes the on-link route: sending fails at once.
        set_host_link(plan, "h1", "mgmt0", False)
        with socket_in_netns(h1.netns) as s, pytest.raises(OSError) as exc:
            s.sendto(b"x", (plan.controller_ip, 9))
        assert exc.value.errno == errno.ENETUNREACH
        set_host_link(plan, "h1", "mgmt0", True)
        with pytest.raises(ValueError):
            set_host_link(plan, "h1", "eth0", False)
    finally:
        kill_pid(echo.pid, ticks=echo.start_ticks)
    wait_dead(echo.pid, echo.start_ticks)

    # No way out: only on-link routes, no default route, IPv6 off, in every namespace.
    for ns in (h0.netns, h1.netns, a.netns, b.netns):
        got = _ip_in(ns, "route", "get", "8.8.8.8")  # asks the routing table; sends nothing
        assert got.returncode != 0 and "Network is unreachable" in got.stderr
        assert _ip_in(ns, "route", "show", "default").stdout.strip() == ""
        assert _ip_in(ns, "-6", "addr", "show").stdout.strip() == ""
        assert _sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6") == "1"
        for line in _ip_in(ns, "route", "show").stdout.splitlines():
            assert "scope link" in line and " via " not in line, line

    delete_vm_network(plan, "a")
    assert a.netns not in list_netns()
    assert "v0" not in _ip_in(h0.netns, "-o", "link", "show").stdout
    delete_vm_network(plan, "a")  # no error when already gone

    destroy_fabric(run.run_id)
    assert list_fabric_objects(run.run_id) == ([], [])
    root_links = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    assert run.tag not in root_links
    assert not any(run.tag in ns for ns in list_netns())
    assert not cg.exists(run.tag)
    destroy_fabric(run.run_id)  # nothing left: no error


@pytest.mark.testbed
def test_vm_network_moves_to_another_host(run: RunPaths, fabric: FabricPlan) -> None:
    plan = fabric
    create_vm_network(plan, "a")
    assert "v0" in _ip_in(plan.hosts[0].netns, "-o", "link", "show").stdout
    create_vm_network(plan, "a", host="h1")  # restored elsewhere, same address
    assert "v0" not in _ip_in(plan.hosts[0].netns, "-o", "link", "show").stdout
    assert "master br0" in _ip_in(plan.hosts[1].netns, "-o", "link", "show", "v0").stdout
    # Still reachable from the root data address, now through h1.
    with socket_in_netns(None) as probe, socket_in_netns(plan.vms[0].netns) as vm_sock:
        probe.bind((plan.root_data_ip, 0))
        probe.settimeout(5)
        vm_sock.sendto(b"moved", probe.getsockname())
        data, peer = probe.recvfrom(100)
        assert data == b"moved" and peer[0] == plan.vms[0].data_ip
    set_host_link(plan, "h1", "data0", False)  # the VM now depends on h1's NIC
    with socket_in_netns(plan.vms[0].netns) as s:
        s.settimeout(0.3)
        s.sendto(b"x", (plan.root_data_ip, 9))
        with pytest.raises(TimeoutError):
            s.recvfrom(100)


@pytest.mark.testbed
def test_a_wider_fabric_works_end_to_end(run: RunPaths, tmp_path: Path) -> None:
    """A run past a /24's limits (here: 51 VIPs) gets a /23, used everywhere: host and
    VM addresses, the VM's MAC, the root side; it is torn down as any other."""
    plan = plan_fabric(run.run_id, ["h0", "h1"], [("a", "h0"), ("b", "h1")], n_vips=51)
    assert plan.prefixlen == 23
    try:
        create_fabric(plan)
        for vm in ("a", "b"):
            create_vm_network(plan, vm)
        b = plan.vm("b")
        eth0 = _ip_in(b.netns, "-4", "-o", "addr", "show", "eth0").stdout
        assert f"inet {b.data_ip}/23" in eth0
        assert vm_mac(b.data_ip) in _ip_in(b.netns, "link", "show", "eth0").stdout
        log = tmp_path / "echo-b.log"
        echo = spawn_detached_sync(echo_argv("0.0.0.0", ECHO_PORT), netns=b.netns, log=str(log))
        try:
            wait_until(lambda: log_has(log, "ready"), what="the echo server")
            assert udp_roundtrip(None, (b.data_ip, ECHO_PORT), b"wide") == b"echo:wide"
            assert udp_roundtrip(plan.vm("a").netns, (b.data_ip, ECHO_PORT), b"a") == b"echo:a"
        finally:
            kill_pid(echo.pid, ticks=echo.start_ticks)
        wait_dead(echo.pid, echo.start_ticks)
    finally:
        destroy_fabric(run.run_id)
    assert list_fabric_objects(run.run_id) == ([], [])
