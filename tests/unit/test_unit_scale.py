"""Start-up work is linear in hosts + VMs + VNFCs (issue 11): a generated deployment
of 1,000 hosts and 20,000 VMs is loaded, the controller's start-up objects are built
over it, its status and listings are served and every process's configuration is
written, well within a few seconds; and twice the deployment costs about twice the
time, so that a quadratic path (a lookup by scanning a list, per item) cannot come
back unnoticed."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from nfvha.controller.agents import AgentServer, HostInventory
from nfvha.controller.fencing import Fencing
from nfvha.controller.hostrepair import HostRepair
from nfvha.controller.hoststates import HostStates
from nfvha.controller.placement import Placement
from nfvha.controller.view import InventoryView
from nfvha.controller.vmrepair import VmRepairPolicy
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology, parse_topology
from nfvha.testbed.deploy import Testbed
from nfvha.util.clock import ManualClock
from nfvha.wire.frames import Hello, Inventory, Reply, VmInfo, VnfcInfo

VMS_PER_HOST = 20
HOSTS_PER_RACK = 20


def generated_topology(hosts: int) -> dict[str, Any]:
    """``hosts`` hosts in racks of 20, 20 VMs each, one VNFC per VM but for standby
    VMs: per host, 16 VMs in 2N VNFs paired with the host half the deployment away (in
    another rack), 2 in n-way-active VNFs of up to 50 components on as many hosts, 1 of
    a failover-standby-vm VNF whose standby VM is on the next host."""
    assert hosts % 2 == 0 and hosts >= 2 * HOSTS_PER_RACK
    names = [f"h{i:05d}" for i in range(hosts)]

    def vm(h: int, k: int) -> str:
        return f"vm{h:05d}-{k:02d}"

    vms: list[dict[str, Any]] = []
    for h, host in enumerate(names):
        for k in range(VMS_PER_HOST):
            spec: dict[str, Any] = {"name": vm(h, k), "host": host}
            if k == 19:
                spec["standby_for"] = vm((h - 1) % hosts, 18)
            vms.append(spec)
    vnfs: list[dict[str, Any]] = []
    half = hosts // 2
    for h in range(half):
        for k in range(16):
            vnfs.append({"name": f"p{h:05d}-{k:02d}", "redundancy": "2n", "stateful": True,
                         "state": "sync", "anti_affinity": "rack",
                         "components": [{"name": f"p{h:05d}-{k:02d}-a", "vm": vm(h, k)},
                                        {"name": f"p{h:05d}-{k:02d}-b",
                                         "vm": vm(h + half, k)}]})
    for k in (16, 17):
        for start in range(0, hosts, 50):
            vnfs.append({"name": f"w{start:05d}-{k:02d}", "redundancy": "n-way-active",
                         "stateful": False, "anti_affinity": "host", "components": [
                             {"name": f"w{h:05d}-{k:02d}", "vm": vm(h, k)}
                             for h in range(start, min(start + 50, hosts))]})
    for h in range(hosts):
        vnfs.append({"name": f"s{h:05d}", "redundancy": "none", "stateful": False,
                     "repair_action": "failover-standby-vm",
                     "components": [{"name": f"s{h:05d}", "vm": vm(h, 18)}]})
    racks = [{"name": f"r{r:04d}", "hosts": [{"name": n} for n in
                                             names[r * HOSTS_PER_RACK:(r + 1) * HOSTS_PER_RACK]]}
             for r in range((hosts + HOSTS_PER_RACK - 1) // HOSTS_PER_RACK)]
    return {"name": "scale", "sites": [{"name": "s1", "racks": racks}], "vms": vms,
            "vnfs": vnfs}


class _Session:
    def __init__(self, host: str) -> None:
        self.hello = Hello(host=host, agent_pid=1, incarnation="i", started_time=1.0)
        self.connected_time = 1.0


class _Agents:
    """The agent server as the views and repair policies see it: every agent
    connected, every inventory in, all running."""

    def __init__(self, t: Topology) -> None:
        self.sessions = {h: _Session(h) for h in t.host_names()}
        self.agent_lost: dict[str, float] = {}
        self.inventories = {h: HostInventory(Inventory(
            host=h,
            vms=[VmInfo(name=v.name, state="stopped" if v.standby_for else "running",
                        pid=1, since=1.0) for v in t.vms_on(h)],
            vnfcs=[VnfcInfo(name=c.name, vm=v.name, state="running", pid=2, since=1.0)
                   for v in t.vms_on(h) for _, c in t.components_on(v.name)]))
            for h in t.host_names()}

    async def command(self, host: str, op: str, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply:
        return Reply(id=1, ok=True)


async def _publish(_events: object) -> None:
    return None


def controller_start_up(data: dict[str, Any]) -> None:
    """What the controller and its API do with a deployment at start-up: load it,
    build the repair policies, placement and views, and serve a status and a listing."""
    t = parse_topology(data)
    clock = ManualClock()
    settings = Settings()
    agents = _Agents(t)
    placement = Placement(t)
    HostRepair(t, settings, clock, Fencing({}, settings, clock), placement, agents,
               t.host_names, _publish)
    VmRepairPolicy(t, agents, _publish, clock, host_of=placement.host_of)
    liveness = HostStates(t.host_names(), clock)
    view = InventoryView(t, cast(AgentServer, agents), liveness, clock, placement.host_of)
    status = view.summary("scale", 0, 20)
    assert status.vms.total == len(t.vms) and status.vms.by_state["running"] > 0
    for offset in range(0, len(t.vms), 2000):
        assert view.vms(offset, 2000)


def write_configs(data: dict[str, Any], root: Path) -> None:
    """Every process's configuration, as the test bed writes it (loopback: no fabric)."""
    tb = Testbed(parse_topology(data), api_port=1)
    tb.write_configs()
    assert (tb.run.host_dir("h00000") / "agent.json").exists()


def cpu_seconds(work: Callable[[], object]) -> float:
    """CPU time of ``work`` without the cyclic garbage collector: its passes grow with
    everything alive in the test process, not with the work measured."""
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        work()
        return time.process_time() - t0
    finally:
        gc.enable()


def best_of(work: Callable[[], None], runs: int = 3) -> float:
    """The least CPU time of a few runs: what the work costs without the noise of a
    busy machine (other processes, a garbage collection landing in one run)."""
    return min(cpu_seconds(work) for _ in range(runs))


@pytest.fixture(autouse=True)
def _loopback_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NFVHA_LOOPBACK", "1")  # no namespaces: nothing is created
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))


def test_a_thousand_hosts_start_up_in_seconds(tmp_path: Path) -> None:
    data = generated_topology(1000)
    assert len(data["vms"]) == 20_000
    # CPU time, not wall time (a machine shared with other test runs), and generous:
    # ~5 s on an idle machine; the quadratic paths took hours at this size.
    spent = cpu_seconds(lambda: (controller_start_up(data), write_configs(data, tmp_path)))
    assert spent < 20.0, f"{spent:.1f} s of CPU"


@pytest.mark.parametrize("work", [controller_start_up, write_configs],
                         ids=["controller", "configs"])
def test_start_up_work_grows_linearly(work: Callable[..., None], tmp_path: Path) -> None:
    small, large = generated_topology(200), generated_topology(400)
    args: tuple[Any, ...] = () if work is controller_start_up else (tmp_path,)
    one = best_of(lambda: work(small, *args))
    two = best_of(lambda: work(large, *args))
    # Linear: ~2x. A quadratic path over VMs or VNFCs: ~4x (seen before: 3.9x).
    assert two < 3 * one, f"{one:.2f} s -> {two:.2f} s for twice the deployment"


def test_the_generated_topology_is_a_valid_one() -> None:
    t = parse_topology(generated_topology(40))
    assert len(t.vms) == 800 and len(t.host_names()) == 40
    assert t.vm("vm00003-19").standby_for == "vm00002-18"
    assert {v.redundancy for v in t.vnfs} == {"2n", "n-way-active", "none"}

