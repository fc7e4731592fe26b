"""Alarms from real faults on the test bed, through the ETSI FM API."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bedkit import Bed

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]


async def alarms_where(bed: Bed, flt: str, n: int = 1, timeout_s: float = 10.0
                       ) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        r = await bed.client.get("/vnffm/v1/alarms", params={"filter": flt})
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        if len(found) >= n or loop.time() > end:
            return found
        await asyncio.sleep(0.05)


@pytest.mark.req("REC-3")
async def test_vm_crash_alarm_with_correlated_vnfc_then_cleared(bed: Bed) -> None:
    bed.faults.inject("vm-crash", "vm-a")
    [vm] = await alarms_where(bed, "(eq,faultType,vm-failure);"
                                   "(eq,rootCauseFaultyResource/faultyResource/resourceId,vm/vm-a)")
    assert vm["perceivedSeverity"] == "CRITICAL" and vm["isRootCause"] is True
    assert vm["managedObjectId"] == "gw" and vm["vnfcInstanceIds"] == ["gw-a"]
    [vnfc] = await alarms_where(bed, "(eq,faultType,vnfc-failure)")
    assert vnfc["isRootCause"] is False and vnfc["correlatedAlarmIds"] == [vm["id"]]
    r = await bed.client.post("/v1/vms/vm-a/start")
    assert r.status_code == 200, r.text
    cleared = await alarms_where(bed, f"(eq,id,{vm['id']});(eq,perceivedSeverity,CLEARED)")
    assert cleared and cleared[0]["alarmClearedTime"]


async def test_host_failure_is_root_cause_of_its_vms_alarms(bed: Bed) -> None:
    bed.faults.inject("host-down", "h2")
    [host] = await alarms_where(bed, "(eq,faultType,host-failure);(eq,perceivedSeverity,CRITICAL)")
    assert host["isRootCause"] is True and host["managedObjectId"] == "host/h2"
    lost = await alarms_where(bed, f"(cont,correlatedAlarmIds,{host['id']});"
                                   "(eq,isRootCause,false)", n=2)
    resources = {a["rootCauseFaultyResource"]["faultyResource"]["resourceId"] for a in lost}
    assert resources == {"vm/vm-b", "vnfc/gw-b"}
    # No alarm says the agent of h2 failed: that is a consequence, not news.
    assert await alarms_where(bed, "(eq,faultType,hypervisor-failure)", n=0, timeout_s=0) == []
    bed.faults.inject("host-up", "h2")
