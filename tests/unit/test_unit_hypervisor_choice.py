"""Each host chooses its hypervisor (issue 12): the topology field and its checks, what
``nfvha up``/``validate`` refuse on this machine, the agent config the test bed
writes, the agent's driver, each VM's hypervisor in the inventory and the status, and
the fault kinds that depend on it (no process is started or signalled here)."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from rich.console import Console

from nfvha.agent.config import AgentConfig
from nfvha.agent.hypervisor.process import ProcessDriver
from nfvha.agent.main import make_driver
from nfvha.cli import main as cli
from nfvha.cli.render import status_tables
from nfvha.controller.agents import AgentServer, HostInventory
from nfvha.controller.hoststates import HostStates
from nfvha.controller.view import InventoryView
from nfvha.model.topology import (
    Topology,
    TopologyError,
    default_topology_path,
    load_topology,
    parse_topology,
)
from nfvha.testbed.deploy import Testbed
from nfvha.testbed.faults import FAULT_KINDS, FaultError, FaultInjector
from nfvha.testbed.hypervisors import hypervisor_problems
from nfvha.util.clock import ManualClock
from nfvha.util.runpaths import RunPaths
from nfvha.wire.frames import Inventory, VmInfo

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "libvirt.yaml"


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(default_topology_path().read_text())
    return data


def mixed() -> Topology:
    """The default topology with host1 and host3 on libvirt."""
    data = default_data()
    hosts = [h for s in data["sites"] for r in s["racks"] for h in r["hosts"]]
    for h in hosts:
        if h["name"] in ("host1", "host3"):
            h["hypervisor"] = "libvirt"
    return parse_topology(data)


# -- the topology --------------------------------------------------------------------
def test_hosts_default_to_process_and_may_mix() -> None:
    assert {h.hypervisor for _, _, h in load_topology(default_topology_path()).hosts()} \
        == {"process"}
    t = mixed()
    assert t.hosts_with("libvirt") == ["host1", "host3"]
    assert t.hosts_with("process") == ["host2"]
    assert t.hypervisor_of("host1") == "libvirt"


def test_an_unknown_hypervisor_is_refused_with_its_path() -> None:
    data = copy.deepcopy(default_data())
    data["sites"][0]["racks"][0]["hosts"][0]["hypervisor"] = "xen"
    with pytest.raises(TopologyError) as e:
        parse_topology(data)
    assert len(e.value.problems) == 1
    problem = e.value.problems[0]
    assert problem.startswith("sites[0].racks[0].hosts[0].hypervisor:")
    assert "'process'" in problem and "'libvirt'" in problem


def test_the_example_is_valid_and_covers_the_patterns() -> None:
    t = load_topology(EXAMPLE)
    libvirt = set(t.hosts_with("libvirt"))
    assert len(libvirt) == 2 and t.hosts_with("process")
    real = {v.name for v in t.vms if v.host in libvirt}
    assert len(real) <= 3  # a 2-core machine under TCG (see the file's comment)
    gw, web, db = t.vnf("gw"), t.vnf("web"), t.vnf("db")
    assert gw.redundancy == "2n" and gw.service_address is not None \
        and gw.service_address.kind == "vip"
    assert {c.vm for c in gw.components} <= real  # 2N with a VIP on real VMs
    assert web.redundancy == "n+m" and t.balancer_of("web") is not None
    assert db.state == "checkpoint" and {c.vm for c in db.components} <= real
    assert all(t.vm(v).boot_timeout_s >= 60 for v in real)
    assert any(t.vm(v).watchdog is not None for v in real)


# -- this machine --------------------------------------------------------------------
def test_a_process_only_topology_needs_nothing() -> None:
    def never() -> str | None:
        raise AssertionError("not asked for process hosts")

    t = load_topology(default_topology_path())
    assert hypervisor_problems(t, namespaced=False, prerequisites=never) == []


def test_libvirt_hosts_on_loopback_are_refused() -> None:
    problems = hypervisor_problems(mixed(), namespaced=False, why_not="not running as root",
                                   prerequisites=lambda: None)
    assert problems == [
        "hosts host1, host3 have hypervisor 'libvirt', which needs the namespaced test bed"
        " (root, network namespaces); here it falls back to loopback (not running as root):"
        " use hypervisor 'process' here, or run where the namespaced test bed runs (root,"
        " iproute2, NFVHA_LOOPBACK unset)"]


def test_missing_packages_and_image_say_what_installs_them(tmp_path: Path) -> None:
    problems = hypervisor_problems(
        mixed(), namespaced=True,
        prerequisites=lambda: "/usr/sbin/libvirtd missing: install libvirt-daemon"
                              " (scripts/bootstrap)",
        image_dir=tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("hypervisor 'libvirt' (hosts host1, host3):"
                                  " /usr/sbin/libvirtd missing")
    assert "./scripts/bootstrap as root" in problems[0]
    assert f"the guest image is not built in {tmp_path}: run ./scripts/bootstrap" \
        in problems[1]


def test_validate_and_up_refuse_before_anything_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NFVHA_LOOPBACK", "1")
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    assert cli(["validate", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err
    assert "on this machine: hosts host1, host3 have hypervisor 'libvirt'" in err
    assert cli(["up", "-f", str(EXAMPLE), "--no-live"]) == 1
    err = capsys.readouterr().err
    assert "on this machine: hosts host1, host3" in err
    assert not any(tmp_path.iterdir())  # no run directory: nothing was started
    assert cli(["validate", str(default_topology_path())]) == 0


# -- what the test bed writes, what the agent picks -------------------------------------
def test_each_hosts_agent_config_says_its_hypervisor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NFVHA_LOOPBACK", "1")  # write_configs only: nothing is started
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    tb = Testbed(mixed(), api_port=1)
    _, agents = tb.write_configs()
    assert {h: a.hypervisor for h, a in agents.items()} == {
        "host1": "libvirt", "host2": "process", "host3": "libvirt"}
    on_disk = AgentConfig.load(tb.run.host_dir("host1") / "agent.json")
    assert on_disk.hypervisor == "libvirt"
    # Without the field (an older test bed's file): a process host.
    raw = json.loads((tb.run.host_dir("host2") / "agent.json").read_text())
    del raw["hypervisor"]
    assert AgentConfig.model_validate(raw).hypervisor == "process"


def _agent_config(hypervisor: str) -> AgentConfig:
    return AgentConfig.model_validate({
        "run_id": "abcde", "host": "host1", "python": "/usr/bin/python3",
        "controller_ip": "127.0.0.1", "controller_port": 1, "heartbeat_port": 2,
        "mgmt_ip": "127.0.0.1", "hypervisor": hypervisor})


def test_the_agent_picks_its_hosts_driver() -> None:
    cfg = _agent_config("process")
    driver = make_driver(cfg, RunPaths(cfg.run_id), None, None)
    assert isinstance(driver, ProcessDriver) and driver.kind == "process"
    pytest.importorskip("libvirt")
    cfg = _agent_config("libvirt")
    # The libvirt driver itself refuses a host without the fabric: it was the one asked.
    with pytest.raises(RuntimeError, match="libvirt VMs need the namespaced test bed"):
        make_driver(cfg, RunPaths(cfg.run_id), None, None)


# -- inventory and status ---------------------------------------------------------------
def test_vm_info_from_an_old_agent_is_a_process_vm() -> None:
    info = VmInfo.model_validate({"name": "vm1", "state": "running", "since": 1.0})
    assert info.hypervisor == "process"


def test_vms_show_their_hypervisor_reported_or_from_the_topology() -> None:
    t = mixed()
    clock = ManualClock()
    inv = Inventory(host="host1", vms=[VmInfo(name="gw-vm1", state="running", since=1.0,
                                              pid=9, hypervisor="libvirt")])
    agents = SimpleNamespace(inventories={"host1": HostInventory(inv)}, sessions={},
                             agent_lost={})
    view = InventoryView(t, cast(AgentServer, agents), HostStates(t.host_names(), clock),
                         clock)
    vms = {v.name: v for v in view.vms()}
    assert vms["gw-vm1"].hypervisor == "libvirt" and vms["gw-vm1"].state == "running"
    assert vms["gw-vm2"].hypervisor == "libvirt"  # host3, not reported: the topology's
    assert vms["db-vm1"].hypervisor == "process"  # host2
    status = {"run_id": "r", "last_event_id": 0, "agents_connected": 0,
              **{k: {"total": 0, "by_state": {}, "not_healthy": 0}
                 for k in ("hosts", "vms", "vnfcs")},
              "not_healthy": {"limit": 20, "hosts": [], "vms": [], "vnfcs": []}}
    rows = [v.model_dump() for v in view.vms()]
    rows[-1].pop("hypervisor")  # an older controller's: a process VM
    out = Console(file=io.StringIO(), width=200)
    out.print(status_tables(status, {"hosts": [], "vms": rows, "vnfcs": []}, [], "http://t"))
    lines = cast(io.StringIO, out.file).getvalue().splitlines()
    assert any("hypervisor" in line for line in lines)
    assert any("gw-vm1" in line and "libvirt" in line for line in lines)
    assert any("web-vm2" in line and "process" in line for line in lines)
    assert any(rows[-1]["name"] in line and "process" in line for line in lines)


# -- faults ------------------------------------------------------------------------------
def make_run(root: Path, monkeypatch: pytest.MonkeyPatch, topology: Path) -> RunPaths:
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(root))
    run = RunPaths("abcde")
    run.controller_dir.mkdir(parents=True)
    run.run_file.write_text(json.dumps({
        "run_id": run.run_id, "api_url": "http://127.0.0.1:1", "mode": "loopback",
        "topology_file": str(topology), "owner_pid": 1}))
    return run


def test_fault_kinds_check_the_vms_hypervisor(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert FAULT_KINDS["guest-panic"] == FAULT_KINDS["watchdog"] == "VM"
    run = make_run(tmp_path, monkeypatch, EXAMPLE)
    inj = FaultInjector(run)
    t = inj.topology
    real = [v.name for v in t.vms if t.hypervisor_of(v.host) == "libvirt"]
    assert inj.valid_targets("guest-panic") == real
    assert inj.valid_targets("vm-crash") == [v.name for v in t.vms]
    assert set(inj.valid_targets("vm-memory-exhaust")).isdisjoint(real)
    assert inj.valid_targets("watchdog") == ["gw-vm1", "gw-vm2", "db-vm1"]
    with pytest.raises(FaultError, match=r"guest-panic: VM web-vm2 is a process VM \(on host"
                                         r" host4\); guest-panic is for libvirt VMs only: a"
                                         r" process VM has no guest kernel to panic; valid:"
                                         r" gw-vm1, gw-vm2, db-vm1"):
        inj.inject("guest-panic", "web-vm2")
    with pytest.raises(FaultError, match="vm-memory-exhaust: VM gw-vm1 is a libvirt VM"):
        inj.inject("vm-memory-exhaust", "gw-vm1")
    with pytest.raises(FaultError, match=r"watchdog: VM web-vm1 has no watchdog armed by a"
                                         r" VNFC .*; valid: gw-vm1, gw-vm2, db-vm1"):
        inj.inject("watchdog", "web-vm1")
    with pytest.raises(FaultError, match="guest-panic: no VM named 'nope'"):
        inj.inject("guest-panic", "nope")
    # A libvirt VM's process is its QEMU, by libvirt's pid file: none here.
    with pytest.raises(FaultError, match=r"VM gw-vm1 has no running QEMU \(domain"
                                         r" nfvha-abcde-gw-vm1 of the libvirtd of host1\)"):
        inj.inject("vm-crash", "gw-vm1")
    # A VM the VIM moved to a process host (ADR 0011) is a process VM now.
    (run.controller_dir / "placement.json").write_text(json.dumps({"gw-vm1": "host2"}))
    assert "gw-vm1" not in inj.valid_targets("guest-panic")
    with pytest.raises(FaultError, match="VM gw-vm1 has no pid record"):
        inj.inject("vm-crash", "gw-vm1")


def test_fault_help_names_the_new_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli(["fault", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "guest-panic (libvirt VMs" in text and "watchdog (VMs with a watchdog" in text


def test_guest_panic_needs_a_kernel_that_panics_on_nmi(tmp_path: Path) -> None:
    """An NMI panics the guest only if its kernel was booted with unknown_nmi_panic
    (measured: without it the guest logs "NMI received for unknown reason" and runs
    on); the injector reads that from the domain's XML before it injects."""
    from nfvha.nfvi.libvirt_domain import DomainSpec, domain_xml
    from nfvha.testbed.faults import NMI_PANIC_ARG, _kernel_cmdline

    spec = DomainSpec(name="d", kernel=tmp_path / "k", console_log=tmp_path / "c",
                      cmdline=f"console=ttyS0 panic=-1 {NMI_PANIC_ARG}")
    assert NMI_PANIC_ARG in _kernel_cmdline(domain_xml(spec)).split()
    assert _kernel_cmdline("<domain type='qemu'><os/></domain>") == ""
