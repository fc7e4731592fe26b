"""The fabric's limits per run (issue 11): known to ``nfvha validate``, refused by
``nfvha up`` before anything is created, and wider subnets for big runs."""

from __future__ import annotations

import ipaddress
import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha.cli import main as cli_main
from nfvha.model.topology import parse_topology
from nfvha.nfvi.fabric import (
    FABRIC_RANGE,
    MAX_HOSTS,
    MAX_VIPS,
    MAX_VMS,
    MAX_VMS_PER_HOST,
    layout_for,
    limit_problems,
    plan_fabric,
    subnet_layout,
    topology_limit_problems,
)


def topology(hosts: int, vms_per_host: int = 0) -> dict[str, Any]:
    names = [f"h{i}" for i in range(hosts)]
    return {
        "name": "big",
        "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": h} for h in names]}]}],
        "vms": [{"name": f"vm-{h}-{j}", "host": h, "memory_mb": 32}
                for h in names for j in range(vms_per_host)],
    }


def test_a_small_run_keeps_its_24_and_its_layout() -> None:
    lay = layout_for(3, 6, 3)
    assert lay == subnet_layout(24)
    assert (lay.host_base, lay.max_hosts, lay.vm_base, lay.max_vms, lay.vip_base,
            lay.max_vips) == (10, 50, 60, 140, 200, 50)


@pytest.mark.parametrize("prefixlen", range(18, 25))
def test_every_layout_stays_inside_its_subnet_without_overlaps(prefixlen: int) -> None:
    lay = subnet_layout(prefixlen)
    size = 1 << (32 - prefixlen)
    ranges = sorted([(lay.host_base, lay.max_hosts), (lay.vm_base, lay.max_vms),
                     (lay.vip_base, lay.max_vips)])
    assert ranges[0][0] > 1  # .0 network, .1 the root side
    for (base, n), (next_base, _) in itertools.pairwise(ranges):
        assert base + n <= next_base
    last_base, last_n = ranges[-1]
    assert last_base + last_n <= size - 1  # not the broadcast address


def test_bigger_runs_get_the_narrowest_wider_subnet() -> None:
    lay51 = layout_for(51, 0, 0)
    assert lay51 is not None and lay51.prefixlen == 23
    lay_vms = layout_for(12, 141, 0)
    assert lay_vms is not None and lay_vms.prefixlen == 23
    lay_big = layout_for(1000, 10_000, 2000)
    assert lay_big is not None and lay_big.prefixlen == 18
    assert layout_for(1001, 0, 0) is None


def test_limit_problems_name_each_limit() -> None:
    assert limit_problems(MAX_HOSTS, MAX_VMS, MAX_VIPS, MAX_VMS_PER_HOST) == []
    problems = limit_problems(MAX_HOSTS + 1, MAX_VMS + 1, MAX_VIPS + 1, MAX_VMS_PER_HOST + 1)
    assert problems == [
        "1001 hosts: the fabric takes at most 1,000 per run",
        "10241 VMs: the fabric takes at most 10,240 per run",
        "2047 VIPs (VNFs with a service address): the fabric takes at most 2,046 per run",
        "1023 VMs on one host: the fabric takes at most 1,022 per host",
    ]


def test_topology_limit_problems_counts_vms_per_host() -> None:
    assert topology_limit_problems(parse_topology(topology(2, 3))) == []


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 ('ip') is not installed")
def test_a_plan_for_60_hosts_and_300_vms_fits_the_fabric_range() -> None:
    hosts = [f"h{i}" for i in range(60)]
    vms = [(f"vm{j}", hosts[j % 60]) for j in range(300)]
    plan = plan_fabric("zzzzz", hosts, vms, n_vips=60)
    assert plan.prefixlen == 23
    data = ipaddress.IPv4Network(plan.data_subnet)
    mgmt = ipaddress.IPv4Network(plan.mgmt_subnet)
    assert data.subnet_of(FABRIC_RANGE) and mgmt.subnet_of(FABRIC_RANGE)
    assert not data.overlaps(mgmt)
    addresses = [plan.root_data_ip, *(h.data_ip for h in plan.hosts),
                 *(v.data_ip for v in plan.vms), *plan.vips]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.IPv4Address(a) in data for a in addresses)
    assert all(ipaddress.IPv4Address(h.mgmt_ip) in mgmt for h in plan.hosts)
    assert str(data.broadcast_address) not in addresses


def test_validate_says_a_topology_is_beyond_the_fabric(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(topology(MAX_HOSTS + 1)))
    assert cli_main(["validate", str(big)]) == 1
    err = capsys.readouterr().err
    assert "1001 hosts: the fabric takes at most 1,000 per run" in err
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(topology(2, 1)))
    assert cli_main(["validate", str(ok)]) == 0
    assert "within the fabric's limits" in capsys.readouterr().out


def test_up_refuses_it_before_creating_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(runs))
    big = tmp_path / "big.yaml"
    big.write_text(yaml.safe_dump(topology(MAX_HOSTS + 1)))
    assert cli_main(["up", "-f", str(big), "--no-live"]) == 1
    assert "1001 hosts: the fabric takes at most 1,000 per run" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())
