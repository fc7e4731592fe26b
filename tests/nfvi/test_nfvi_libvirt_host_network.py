"""The network of a VM on a libvirt host (issue 12): no namespace of its own, its NIC a
tap ``v<index>`` on the host namespace's ``br0`` (libvirt makes it; a plain tap stands
for it here). Where a VM is attached is answered for it as for a process VM, a process
VM that moves onto a libvirt host leaves nothing on its old host once its namespace
is deleted, and teardown removes the tap with the host."""

from __future__ import annotations

import subprocess

import pytest

from nfvha.nfvi.fabric import (
    create_fabric,
    create_vm_network,
    delete_vm_network,
    destroy_fabric,
    list_fabric_objects,
    list_netns,
    plan_fabric,
    vm_attached_host,
)
from nfvha.util.runpaths import RunPaths


def _ip(netns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True,
                          check=True).stdout


def _tap(netns: str, name: str) -> None:
    """What libvirt does for ``<interface type='bridge'><target dev=NAME/>``."""
    _ip(netns, "tuntap", "add", "dev", name, "mode", "tap")
    _ip(netns, "link", "set", name, "master", "br0", "up")


@pytest.mark.testbed
def test_libvirt_vm_network_is_a_tap_on_its_hosts_bridge(run: RunPaths) -> None:
    # "a" is a process VM on h0, "b" a libvirt VM on h1.
    plan = plan_fabric(run.run_id, ["h0", "h1"], [("a", "h0"), ("b", "h1")])
    try:
        create_fabric(plan)
        h0, h1 = plan.host("h0"), plan.host("h1")
        assert vm_attached_host(plan, "b") is None
        _tap(h1.netns, f"v{plan.vm_index('b')}")
        assert vm_attached_host(plan, "b") == "h1"
        assert plan.vm("b").netns not in list_netns()  # none made for a libvirt VM

        # The process VM "a" is re-created by the VIM on libvirt host h1 (ADR 0011):
        # the libvirt driver deletes its old namespace, whose veth hung on h0's br0.
        create_vm_network(plan, "a")
        assert vm_attached_host(plan, "a") == "h0"
        delete_vm_network(plan, "a")
        assert vm_attached_host(plan, "a") is None
        _tap(h1.netns, f"v{plan.vm_index('a')}")
        assert vm_attached_host(plan, "a") == "h1"
        assert "v0" not in _ip(h0.netns, "-o", "link", "show")
    finally:
        destroy_fabric(run.run_id)
    assert list_fabric_objects(run.run_id) == ([], [])
