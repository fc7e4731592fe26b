"""Existing monitors report into a running nfvha unchanged: a real openstacksdk
instance-ha client (what masakari-monitors uses) and a Doctor-style monitor."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from bedkit import Bed

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]


async def wait_alarm(bed: Bed, flt: str) -> dict[str, Any]:
    for _ in range(200):
        found = (await bed.client.get("/vnffm/v1/alarms", params={"filter": flt})).json()
        if found:
            return dict(found[0])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no alarm matching {flt}")


async def test_masakari_monitor_reports_a_process_failure_through_openstacksdk(
        bed: Bed) -> None:
    openstack = pytest.importorskip("openstack")
    conn = openstack.connect(auth_type="none", load_yaml_config=False, load_envvars=False,
                             instance_ha_endpoint_override=f"{bed.tb.api_url}/v1")

    def report() -> Any:
        return conn.instance_ha.create_notification(
            type="PROCESS", hostname="h1",
            generated_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            payload={"event": "STOPPED", "process_name": "nova-compute"})

    note = await asyncio.to_thread(report)
    assert note.status == "new"
    alarm = await wait_alarm(bed, "(eq,faultType,host-software-failure)")
    assert alarm["managedObjectId"] == "host/h1"
    assert "process=nova-compute" in alarm["faultDetails"]
    segments = await asyncio.to_thread(lambda: list(conn.instance_ha.segments()))
    hosts = await asyncio.to_thread(lambda: list(conn.instance_ha.hosts(segments[0].uuid)))
    assert {h.name for h in hosts} == {"h1", "h2"}


async def test_doctor_monitor_reports_host_down(bed: Bed) -> None:
    r = await bed.client.put("/doctor/events", json=[{
        "time": datetime.now(UTC).isoformat(), "type": "compute.host.down",
        "details": {"hostname": "h2", "status": "down", "monitor": "sample",
                    "monitor_event_id": "e1"}}])
    assert r.status_code == 200, r.text
    alarm = await wait_alarm(bed, "(eq,faultType,host-failure)")
    assert alarm["perceivedSeverity"] == "CRITICAL" and alarm["isRootCause"] is True
