"""FmNotificationsFilter semantics (SOL003 7.5.3.2): absent = all, AND across
attributes, OR within a list; nfvha's managedObjectIds / resourceIds (HW-3)."""

from __future__ import annotations

from typing import Any

import pytest
from notify_testutil import make_alarm

from nfvha.faults.filters import matches
from nfvha.faults.model import (
    Alarm,
    FaultyResourceType,
    FmNotificationsFilter,
    NotificationType,
)
from nfvha.model.events import EventType, Severity

ALARM = NotificationType.ALARM
CLEARED = NotificationType.ALARM_CLEARED
REBUILT = NotificationType.ALARM_LIST_REBUILT

VM_ALARM = make_alarm(
    "a-vm",
    managed_object="vnf-gw",
    resource_id="vm/gw-vm1",
    resource_type=FaultyResourceType.COMPUTE,
    severity=Severity.CRITICAL,
    event_type=EventType.PROCESSING_ERROR_ALARM,
    probable_cause="vm-failure",
    fault_details=["host=h1", "vnfdId=vnfd-gw"],
)
LINK_ALARM = make_alarm(
    "a-link",
    managed_object="host/h2",
    resource_id="link/h2/eth0",
    resource_type=FaultyResourceType.NETWORK,
    severity=Severity.MAJOR,
    event_type=EventType.COMMUNICATIONS_ALARM,
    probable_cause="link-down",
)
NO_ROOT_ALARM = make_alarm("a-noroot", resource_id=None, severity=Severity.WARNING)


def f(**kwargs: Any) -> FmNotificationsFilter:
    return FmNotificationsFilter.model_validate(kwargs)


CASES: list[tuple[str, FmNotificationsFilter | None, NotificationType, Alarm | None, bool]] = [
    ("no filter matches everything", None, ALARM, VM_ALARM, True),
    ("empty filter matches everything", f(), CLEARED, LINK_ALARM, True),
    ("no filter, list rebuilt", None, REBUILT, None, True),
    # notificationTypes
    ("type listed", f(notificationTypes=[ALARM, CLEARED]), CLEARED, VM_ALARM, True),
    ("type not listed", f(notificationTypes=[ALARM]), CLEARED, VM_ALARM, False),
    ("rebuilt admitted", f(notificationTypes=[REBUILT]), REBUILT, None, True),
    ("rebuilt not admitted", f(notificationTypes=[ALARM, CLEARED]), REBUILT, None, False),
    # Alarm attributes do not apply to a list-rebuilt notification (it has no alarm).
    ("rebuilt ignores alarm attributes",
     f(perceivedSeverities=["CRITICAL"], managedObjectIds=["x"]), REBUILT, None, True),
    # severities: OR within the list
    ("severity one of", f(perceivedSeverities=["MAJOR", "CRITICAL"]), ALARM, VM_ALARM, True),
    ("severity none of", f(perceivedSeverities=["MINOR", "WARNING"]), ALARM, VM_ALARM, False),
    ("empty list = absent", f(perceivedSeverities=[]), ALARM, VM_ALARM, True),
    # eventTypes, probableCauses
    ("event type", f(eventTypes=["COMMUNICATIONS_ALARM"]), ALARM, LINK_ALARM, True),
    ("event type mismatch", f(eventTypes=["COMMUNICATIONS_ALARM"]), ALARM, VM_ALARM, False),
    ("probable cause", f(probableCauses=["link-down", "x"]), ALARM, LINK_ALARM, True),
    ("probable cause mismatch", f(probableCauses=["link-down"]), ALARM, VM_ALARM, False),
    # faultyResourceTypes: on the root-cause faulty resource
    ("resource type", f(faultyResourceTypes=["NETWORK"]), ALARM, LINK_ALARM, True),
    ("resource type mismatch", f(faultyResourceTypes=["STORAGE"]), ALARM, LINK_ALARM, False),
    ("resource type, alarm without root", f(faultyResourceTypes=["COMPUTE"]), ALARM,
     NO_ROOT_ALARM, False),
    # vnfInstanceSubscriptionFilter against managedObjectId
    ("vnf instance id", f(vnfInstanceSubscriptionFilter={"vnfInstanceIds": ["vnf-gw"]}),
     ALARM, VM_ALARM, True),
    ("vnf instance id mismatch", f(vnfInstanceSubscriptionFilter={"vnfInstanceIds": ["vnf-x"]}),
     ALARM, VM_ALARM, False),
    ("vnf instance name", f(vnfInstanceSubscriptionFilter={"vnfInstanceNames": ["vnf-gw"]}),
     ALARM, VM_ALARM, True),
    ("vnf instance name mismatch",
     f(vnfInstanceSubscriptionFilter={"vnfInstanceNames": ["vnf-x"]}), ALARM, VM_ALARM, False),
    ("vnfd id from faultDetails", f(vnfInstanceSubscriptionFilter={"vnfdIds": ["vnfd-gw"]}),
     ALARM, VM_ALARM, True),
    ("vnfd id unknown for alarm", f(vnfInstanceSubscriptionFilter={"vnfdIds": ["vnfd-gw"]}),
     ALARM, LINK_ALARM, False),
    ("empty vnf instance filter", f(vnfInstanceSubscriptionFilter={}), ALARM, VM_ALARM, True),
    # nfvha extensions
    ("managed object", f(managedObjectIds=["host/h1", "host/h2"]), ALARM, LINK_ALARM, True),
    ("managed object mismatch", f(managedObjectIds=["host/h1"]), ALARM, LINK_ALARM, False),
    ("resource id", f(resourceIds=["vm/gw-vm1"]), ALARM, VM_ALARM, True),
    ("resource id mismatch", f(resourceIds=["vm/gw-vm2"]), ALARM, VM_ALARM, False),
    ("resource id, alarm without root", f(resourceIds=["vm/gw-vm1"]), ALARM, NO_ROOT_ALARM,
     False),
    # AND across attributes
    ("all attributes match",
     f(notificationTypes=[ALARM], perceivedSeverities=["CRITICAL"], eventTypes=[
         "PROCESSING_ERROR_ALARM"], probableCauses=["vm-failure"], faultyResourceTypes=[
         "COMPUTE"], resourceIds=["vm/gw-vm1"], managedObjectIds=["vnf-gw"]),
     ALARM, VM_ALARM, True),
    ("one attribute fails the whole filter",
     f(perceivedSeverities=["CRITICAL"], eventTypes=["PROCESSING_ERROR_ALARM"],
       probableCauses=["vm-failure"], faultyResourceTypes=["NETWORK"]),
     ALARM, VM_ALARM, False),
    # a cleared notification is matched against the alarm it clears
    ("cleared alarm, filter on it", f(notificationTypes=[CLEARED], resourceIds=["vm/gw-vm1"]),
     CLEARED, VM_ALARM, True),
    ("cleared alarm of another resource", f(resourceIds=["vm/gw-vm2"]), CLEARED, VM_ALARM,
     False),
]


@pytest.mark.parametrize(
    ("flt", "ntype", "alarm", "expected"),
    [pytest.param(flt, nt, a, exp, id=name) for name, flt, nt, a, exp in CASES],
)
def test_filter_semantics(
    flt: FmNotificationsFilter | None, ntype: NotificationType, alarm: Alarm | None,
    expected: bool,
) -> None:
    assert matches(flt, ntype, alarm) is expected


@pytest.mark.req("HW-3")
def test_vnf_subscribed_to_its_hosts_gets_only_their_hardware_faults() -> None:
    """A VNF on hosts h1 and h3 asks for the hardware faults of those hosts only:
    by managed object (host-level alarms) or by faulty resource (the host itself,
    or a sensor of it)."""
    by_host = f(managedObjectIds=["host/h1", "host/h3"], eventTypes=["EQUIPMENT_ALARM"])
    by_resource = f(resourceIds=["host/h1", "host/h3", "sensor/h1/temp1"])

    def hw(alarm_id: str, host: str, resource: str) -> Alarm:
        return make_alarm(alarm_id, managed_object=f"host/{host}", resource_id=resource,
                          event_type=EventType.EQUIPMENT_ALARM,
                          probable_cause="host-hardware-failure")

    mine = [hw("m1", "h1", "host/h1"), hw("m2", "h3", "host/h3"),
            hw("m3", "h1", "sensor/h1/temp1")]
    others = [
        hw("o1", "h2", "host/h2"),
        hw("o2", "h4", "sensor/h4/temp1"),
        # a software fault on my host is not a hardware fault
        make_alarm("o3", managed_object="host/h1", resource_id="host/h1",
                   event_type=EventType.PROCESSING_ERROR_ALARM,
                   probable_cause="host-software-failure"),
        # a VNF-level alarm of someone else
        make_alarm("o4", managed_object="vnf-other", resource_id="vm/other-vm1"),
    ]
    assert [a.id for a in mine + others if matches(by_host, ALARM, a)] == ["m1", "m2", "m3"]
    by_resource_hits = [a.id for a in mine + others if matches(by_resource, ALARM, a)]
    assert by_resource_hits == ["m1", "m2", "m3", "o3"]  # resourceIds alone: any fault type
    both = f(resourceIds=["host/h1", "host/h3", "sensor/h1/temp1"],
             eventTypes=["EQUIPMENT_ALARM"])
    assert [a.id for a in mine + others if matches(both, ALARM, a)] == ["m1", "m2", "m3"]
