"""IF-2 in the topology: a load-balancer VNF (program ``lb``) that ``balances`` a VNF of
service address kind ``lb``; what the operator reads is checked like everything else."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from nfvha.model.topology import (
    TopologyError,
    default_topology_path,
    load_topology,
    parse_topology,
)

BASE: dict[str, Any] = {
    "name": "t",
    "sites": [{"name": "s", "racks": [{"name": "r", "hosts": [{"name": "h1"}, {"name": "h2"}]}]}],
    "vms": [{"name": "vm1", "host": "h1"}, {"name": "vm2", "host": "h2"},
            {"name": "lb1", "host": "h1"}, {"name": "lb2", "host": "h2"}],
    "vnfs": [
        {"name": "web", "redundancy": "n-way-active", "stateful": False,
         "service_address": {"kind": "lb", "port": 7100},
         "components": [{"name": "web-1", "vm": "vm1", "port": 7100},
                        {"name": "web-2", "vm": "vm2", "port": 7100}]},
        {"name": "web-lb", "redundancy": "2n", "stateful": False, "balances": "web",
         "service_address": {"kind": "vip", "port": 7100},
         "components": [{"name": "lb-a", "vm": "lb1", "program": "lb", "port": 7100},
                        {"name": "lb-b", "vm": "lb2", "program": "lb", "port": 7100}]},
    ],
}


def problems(mutate: Callable[[dict[str, Any]], object]) -> list[str]:
    data = copy.deepcopy(BASE)
    mutate(data)
    try:
        parse_topology(data)
    except TopologyError as e:
        return e.problems
    return []


@pytest.mark.req("IF-2")
def test_a_balancer_vnf_names_the_vnf_whose_components_are_its_members() -> None:
    t = parse_topology(copy.deepcopy(BASE))
    lb = t.balancer_of("web")
    assert lb is not None and lb.name == "web-lb"
    assert [c.program for c in lb.components] == ["lb", "lb"]
    assert t.balancer_of("web-lb") is None
    assert t.vnf("web").service_address is not None


def lb_vnf(d: dict[str, Any]) -> dict[str, Any]:
    vnf: dict[str, Any] = d["vnfs"][1]
    return vnf


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: lb_vnf(d).update(balances="nope"), ["vnfs[1].balances: no VNF named 'nope'"]),
    (lambda d: d["vnfs"][0].update(service_address=None),
     ["vnfs[1].balances: 'web' needs service_address kind 'lb'"]),
    (lambda d: lb_vnf(d).update(service_address={"kind": "vip", "port": 7101}),
     ["vnfs[1].service_address: a load balancer of 'web' has a VIP on its service port 7100",
      "vnfs[1].components[0].port: an lb serves on its VIP's port 7101",
      "vnfs[1].components[1].port: an lb serves on its VIP's port 7101"]),
    (lambda d: lb_vnf(d)["components"][1].update(program="counter"),
     ["vnfs[1].components: a load balancer's components have program 'lb'"]),
    (lambda d: d["vnfs"][0]["components"][0].update(program="lb"),
     ["vnfs[0].components: program 'lb' runs only in a VNF that 'balances' another"]),
    (lambda d: lb_vnf(d).update(redundancy="n-way-active", service_address=None),
     ["vnfs[1].redundancy: a load balancer is a stateless 2n pair (or none)",
      "vnfs[1].service_address: a load balancer of 'web' has a VIP on its service port 7100"]),
    (lambda d: lb_vnf(d).update(balances="web-lb"),
     ["vnfs[1].balances: 'web-lb' is a load balancer itself",
      "vnfs[1].balances: 'web-lb' needs service_address kind 'lb'"]),
], ids=["unknown", "target-not-lb", "port", "program", "lb-outside", "model", "self"])
def test_balancer_problems_name_the_field(mutate: Callable[[dict[str, Any]], object],
                                          expected: list[str]) -> None:
    assert problems(mutate) == expected


def test_one_balancer_per_vnf() -> None:
    def second(d: dict[str, Any]) -> None:
        d["vms"] += [{"name": "lb3", "host": "h1"}, {"name": "lb4", "host": "h2"}]
        other = copy.deepcopy(lb_vnf(d))
        other["name"] = "web-lb2"
        other["components"] = [{"name": "lb-c", "vm": "lb3", "program": "lb", "port": 7100},
                               {"name": "lb-d", "vm": "lb4", "program": "lb", "port": 7100}]
        d["vnfs"].append(other)

    assert problems(second) == [
        "vnfs[1].balances: 'web' already has a load balancer ('web-lb2')",
        "vnfs[2].balances: 'web' already has a load balancer ('web-lb')"]


@pytest.mark.req("IF-2")
def test_the_default_topology_fronts_web_with_an_lb_pair() -> None:
    t = load_topology(default_topology_path())
    lb = t.balancer_of("web")
    assert lb is not None and lb.redundancy == "2n"
    assert lb.service_address is not None and lb.service_address.kind == "vip"
    hosts = {t.vm(c.vm).host for c in lb.components}
    assert len(hosts) == 2  # the pair survives a host
    dns = t.vnf("dns")  # UC-7/8: stateless without redundancy
    assert (dns.redundancy, dns.stateful) == ("none", False)
