"""The containment (fault-zone) graph built from the bundled default topology."""

from __future__ import annotations

import pytest

from nfvha.model.containment import ContainmentGraph, EntityRef
from nfvha.model.topology import default_topology_path, load_topology


@pytest.fixture(scope="module")
def graph() -> ContainmentGraph:
    return ContainmentGraph.from_topology(load_topology(default_topology_path()))


def ref(text: str) -> EntityRef:
    return EntityRef.parse(text)


def test_ancestors_of_a_vnfc_are_vm_host_rack_site(graph: ContainmentGraph) -> None:
    assert list(graph.ancestors(ref("vnfc/gw-a"))) == [
        ref("vm/gw-vm1"),
        ref("host/host1"),
        ref("rack/rack1"),
        ref("site/site1"),
    ]
    assert list(graph.ancestors(ref("vnfc/gw-b"))) == [
        ref("vm/gw-vm2"),
        ref("host/host3"),
        ref("rack/rack2"),
        ref("site/site1"),
    ]


def test_a_site_has_no_ancestors(graph: ContainmentGraph) -> None:
    assert list(graph.ancestors(ref("site/site1"))) == []


def test_descendants_of_a_host_are_its_vms_and_their_vnfcs(graph: ContainmentGraph) -> None:
    assert set(graph.descendants(ref("host/host1"))) == {
        ref("vm/gw-vm1"),
        ref("vnfc/gw-a"),
        ref("vm/web-vm1"),
        ref("vnfc/web-1"),
        ref("vm/lb-vm1"),
        ref("vnfc/web-lb-a"),
    }
    assert set(graph.descendants(ref("host/host2"))) == {
        ref("vm/web-vm2"),
        ref("vnfc/web-2"),
        ref("vm/db-vm1"),
        ref("vnfc/db-1"),
        ref("vm/dns-vm1"),
        ref("vnfc/dns-1"),
    }


def test_descendants_are_depth_first_each_vm_before_its_vnfcs(graph: ContainmentGraph) -> None:
    order = list(graph.descendants(ref("host/host1")))
    assert order.index(ref("vm/gw-vm1")) < order.index(ref("vnfc/gw-a"))
    assert order.index(ref("vm/web-vm1")) < order.index(ref("vnfc/web-1"))


def test_descendants_of_the_site_cover_everything(graph: ContainmentGraph) -> None:
    below = list(graph.descendants(ref("site/site1")))
    assert len(below) == len(set(below))
    kinds = sorted(r.kind for r in below)
    assert kinds.count("rack") == 2
    assert kinds.count("host") == 3
    assert kinds.count("vm") == 9
    assert kinds.count("vnfc") == 9


def test_a_vnfc_has_no_descendants(graph: ContainmentGraph) -> None:
    assert list(graph.descendants(ref("vnfc/db-1"))) == []


def test_container(graph: ContainmentGraph) -> None:
    assert graph.container(ref("vnfc/web-3"), "host") == ref("host/host3")
    assert graph.container(ref("vnfc/web-3"), "vm") == ref("vm/web-vm3")
    assert graph.container(ref("vnfc/web-3"), "rack") == ref("rack/rack2")
    assert graph.container(ref("vm/db-vm1"), "site") == ref("site/site1")
    # Nothing above is of that kind.
    assert graph.container(ref("host/host1"), "vm") is None
    assert graph.container(ref("site/site1"), "host") is None


def test_membership(graph: ContainmentGraph) -> None:
    assert ref("vnfc/gw-a") in graph
    assert ref("site/site1") in graph
    assert ref("vm/nope") not in graph


def test_unknown_entity_has_no_relatives(graph: ContainmentGraph) -> None:
    assert list(graph.ancestors(ref("vm/nope"))) == []
    assert list(graph.descendants(ref("vm/nope"))) == []
    assert graph.container(ref("vm/nope"), "host") is None


def test_entity_ref_round_trip() -> None:
    r = EntityRef.parse("vm/gw-vm1")
    assert r == EntityRef("vm", "gw-vm1")
    assert str(r) == "vm/gw-vm1"
    assert EntityRef.parse(str(r)) == r


@pytest.mark.parametrize("text", ["", "vm", "vm/", "/gw-vm1", "disk/d1", "VM/gw-vm1"])
def test_entity_ref_parse_errors(text: str) -> None:
    with pytest.raises(ValueError, match="not an entity reference"):
        EntityRef.parse(text)
