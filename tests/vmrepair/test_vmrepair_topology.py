"""Standby VMs in the topology (ADR 0010): every problem an operator can make, with the
exact line ``nfvha up`` prints."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from nfvha.model.topology import TopologyError, parse_topology

BASE: dict[str, Any] = {
    "name": "standby",
    "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                       {"name": "r2", "hosts": [{"name": "h2"}]},
                                       {"name": "r3", "hosts": [{"name": "h3"}]}]}],
    "vms": [
        {"name": "vm-a", "host": "h1"},
        {"name": "vm-b", "host": "h2"},
        {"name": "vm-a-sb", "host": "h3", "standby_for": "vm-a"},
        {"name": "vm-b-sb", "host": "h3", "standby_for": "vm-b"},
        {"name": "vm-x", "host": "h1"},
    ],
    "vnfs": [
        {"name": "gw", "redundancy": "2n", "stateful": False, "anti_affinity": "none",
         "repair_action": "failover-standby-vm",
         "components": [{"name": "gw-a", "vm": "vm-a"}, {"name": "gw-b", "vm": "vm-b"}]},
        {"name": "db", "redundancy": "none", "stateful": False,
         "components": [{"name": "db-1", "vm": "vm-x"}]},
    ],
}


def problems(edit: Callable[[dict[str, Any]], object]) -> list[str]:
    data = copy.deepcopy(BASE)
    edit(data)
    with pytest.raises(TopologyError) as e:
        parse_topology(data, "t.yaml")
    return e.value.problems


def test_the_base_topology_with_standby_vms_is_valid() -> None:
    t = parse_topology(copy.deepcopy(BASE), "t.yaml")
    assert [v.standby_for for v in t.vms] == [None, None, "vm-a", "vm-b", None]


@pytest.mark.req("REC-2")
@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["vms"][2].update(standby_for="vm-z"),
     "vms[2].standby_for: no VM named 'vm-z'"),
    (lambda d: d["vms"][2].update(standby_for="vm-a-sb"),
     "vms[2].standby_for: a VM cannot stand by for itself"),
    (lambda d: d["vms"][3].update(standby_for="vm-a-sb"),
     "vms[3].standby_for: 'vm-a-sb' is a standby VM itself (for 'vm-a')"),
    (lambda d: d["vms"][3].update(standby_for="vm-a"),
     "vms[3].standby_for: 'vm-a' already has a standby VM ('vm-a-sb')"),
    (lambda d: d["vms"][2].update(host="h1"),
     "vms[2].host: a standby VM must be on another host than 'vm-a' ('h1'): it would fail"
     " with it"),
    (lambda d: d["vms"].append({"name": "vm-y", "host": "h2"}) or d["vms"][2].update(
        standby_for="vm-y"),
     "vms[2].standby_for: 'vm-y' runs no VNFC: nothing to stand by for"),
    (lambda d: d["vms"].append({"name": "vm-x-sb", "host": "h2", "standby_for": "vm-x"}),
     "vms[5].standby_for: VNF 'db' on 'vm-x' has repair_action 'confirm'; a standby VM is"
     " used only by 'failover-standby-vm'"),
    (lambda d: d["vnfs"][1]["components"].append({"name": "db-2", "vm": "vm-a-sb"}),
     "vnfs[1].components[1].vm: 'vm-a-sb' is a standby VM (for 'vm-a'); it runs the VNFCs"
     " of 'vm-a' after a failover"),
    (lambda d: d["vms"].pop(3),
     "vnfs[0].repair_action: failover-standby-vm needs a standby VM for 'vm-b' (a VM with"
     " standby_for: vm-b)"),
    (lambda d: d["vnfs"][1].update(components=[{"name": "db-1", "vm": "vm-a", "port": 7100}]),
     "vnfs[1].repair_action: VM 'vm-a' also runs VNF 'gw' with repair_action"
     " 'failover-standby-vm'; VNFs sharing a VM need the same repair action"),
    (lambda d: d["vnfs"][0].update(anti_affinity="host") or d["vms"][2].update(host="h2"),
     "vms[2].host: anti-affinity 'host' of VNF 'gw': after a failover of 'vm-a', its VNFCs"
     " would share host 'h2' with 'gw-b'"),
])
def test_standby_problems_are_reported_with_their_path(
        edit: Callable[[dict[str, Any]], object], expected: str) -> None:
    assert expected in problems(edit)
