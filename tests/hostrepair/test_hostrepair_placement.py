"""Where an evacuated VM goes (anti-affinity, load), the persisted placement, and which
agent events are stale after a move."""

from __future__ import annotations

from pathlib import Path

import pytest
from hostrepair_testutil import three_racks

from nfvha.controller.placement import Placement, choose_host
from nfvha.model.events import Event, EventType, Kind, Severity


def test_anti_affinity_keeps_a_vm_off_its_peers_host() -> None:
    t = three_racks()
    now = {"vm-a": "h1", "vm-b": "h2", "vm-c": "h1"}
    # gw-a (vm-a) must not join gw-b (vm-b) on h2.
    assert choose_host(t, "vm-a", now, ["h2", "h3"]) == "h3"
    assert choose_host(t, "vm-a", now, ["h2"]) is None
    # db has no redundancy: anywhere, the least loaded first (h3: 0 VMs), then by name.
    assert choose_host(t, "vm-c", now, ["h2", "h3"]) == "h3"
    assert choose_host(t, "vm-c", {**now, "vm-a": "h3"}, ["h2", "h3"]) == "h2"


def test_rack_and_site_levels_and_none() -> None:
    data = three_racks().model_dump(mode="json")
    # h2 and h3 in one rack: at rack level, h3 is as bad as h2 for vm-a.
    data["sites"] = [{"name": "s1", "racks": [
        {"name": "r1", "hosts": [{"name": "h1"}]},
        {"name": "r2", "hosts": [{"name": "h2"}, {"name": "h3"}]}]}]
    data["vnfs"][0]["anti_affinity"] = "rack"
    t = three_racks(sites=data["sites"], vnfs=data["vnfs"])
    now = {"vm-a": "h1", "vm-b": "h2", "vm-c": "h1"}
    assert choose_host(t, "vm-a", now, ["h2", "h3"]) is None
    data["vnfs"][0]["anti_affinity"] = "none"
    t = three_racks(sites=data["sites"], vnfs=data["vnfs"])
    assert choose_host(t, "vm-a", now, ["h2", "h3"]) == "h3"


def test_placement_is_persisted_and_reloaded(tmp_path: Path) -> None:
    t = three_racks()
    path = tmp_path / "placement.json"
    p = Placement(t, path)
    assert p.vms_on("h1") == ["vm-a", "vm-c"]
    p.move("vm-a", "h3")
    with pytest.raises(KeyError):
        p.move("vm-a", "h9")
    again = Placement(t, path)
    assert again.host_of("vm-a") == "h3" and again.vms_on("h1") == ["vm-c"]
    path.write_text("{not json")
    assert Placement(t, path).host_of("vm-a") == "h1"  # unreadable: the topology's


def event(kind: Kind, entity: str, host: str, origin: str = "agent") -> Event:
    return Event(host=host, seq=1, origin=origin, kind=kind, entity=entity,
                 severity=Severity.CRITICAL, event_type=EventType.PROCESSING_ERROR_ALARM,
                 probable_cause="x", event_time=0.0, detected_mono_ns=0)


def test_events_from_a_host_the_vm_has_left_are_stale() -> None:
    p = Placement(three_racks())
    p.move("vm-a", "h3")
    assert not p.is_current(event(Kind.VM_CRASHED, "vm/vm-a", "h1"))
    assert not p.is_current(event(Kind.VNFC_CRASHED, "vnfc/gw-a", "h1"))
    assert p.is_current(event(Kind.VM_CRASHED, "vm/vm-a", "h3"))
    assert p.is_current(event(Kind.VM_CRASHED, "vm/vm-c", "h1"))
    assert p.is_current(event(Kind.HOST_DOWN, "host/h1", "h1", origin="controller"))
    assert p.current([event(Kind.VM_CRASHED, "vm/vm-a", "h1"),
                      event(Kind.VM_STARTED, "vm/vm-a", "h3")])[0].host == "h3"


def test_an_evacuation_moves_several_vms_in_one_write(tmp_path: Path) -> None:
    t = three_racks()
    path = tmp_path / "placement.json"
    p = Placement(t, path)
    p.move_all({"vm-c": "h2", "vm-a": "h2"})
    assert p.vms_on("h1") == [] and p.vms_on("h2") == ["vm-a", "vm-b", "vm-c"]  # file order
    p.move("vm-a", "h3")
    assert p.vms_on("h2") == ["vm-b", "vm-c"] and p.vms_on("h3") == ["vm-a"]
    assert Placement(t, path).as_dict() == p.as_dict()
    with pytest.raises(KeyError):  # nothing moved when one target is unknown
        p.move_all({"vm-a": "h1", "vm-c": "h9"})
    assert p.host_of("vm-a") == "h3" and p.host_of("vm-c") == "h2"
