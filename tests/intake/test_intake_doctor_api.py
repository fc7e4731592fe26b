"""The Doctor inspector intake: ``PUT /events`` as Doctor's sample monitor sends it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import httpx
import pytest
from intake_testutil import Recorder

from nfvha.model.events import EventType, Kind, Severity
from nfvha.store.base import StoreUnavailable


def doctor_event(hostname: str = "h2", status: str = "down", type_: str = "compute.host.down",
                 time: str = "2027-01-15T09:00:00.250000") -> dict[str, Any]:
    """As doctor_tests/monitor/sample.py builds it."""
    return {
        "id": "monitor_sample_id1",
        "time": time,
        "type": type_,
        "details": {"hostname": hostname, "status": status, "monitor": "monitor_sample",
                    "monitor_event_id": "monitor_sample_event1"},
    }


async def put(client: httpx.AsyncClient, data: Any) -> httpx.Response:
    # The sample monitor sends json.dumps(...) with PUT, like this.
    return await client.put("/doctor/events", content=json.dumps(data),
                            headers={"Content-Type": "application/json"})


async def test_host_down_then_up(client: httpx.AsyncClient, recorder: Recorder) -> None:
    r = await put(client, [doctor_event()])
    assert (r.status_code, r.text) == (200, "OK")  # as the sample inspector answers
    [down] = recorder.events
    assert (down.host, down.seq, down.origin, down.kind, down.entity) == (
        "h2", 0, "doctor", Kind.HOST_DOWN, "host/h2")
    assert down.severity == Severity.CRITICAL and down.event_type == EventType.EQUIPMENT_ALARM
    assert not down.clears
    # A naive time is the monitor's local time (it stamps datetime.now()).
    assert down.event_time == pytest.approx(datetime(2027, 1, 15, 9, 0, 0, 250000).timestamp())
    assert down.details["monitor"] == "monitor_sample"
    assert down.details["monitor_event_id"] == "monitor_sample_event1"
    assert down.details["doctor_event_id"] == "monitor_sample_id1"
    assert (await put(client, [doctor_event(status="up")])).status_code == 200
    up = recorder.events[1]
    assert (up.kind, up.clears, up.severity) == (Kind.HOST_UP, True, Severity.CLEARED)


async def test_several_events_in_one_request(client: httpx.AsyncClient,
                                             recorder: Recorder) -> None:
    events = [doctor_event("h1"), doctor_event("h3", time="2027-01-15T09:00:00Z")]
    events[1]["details"]["vendor_key"] = "kept"
    assert (await put(client, events)).status_code == 200
    assert len(recorder.batches) == 1
    assert [e.entity for e in recorder.events] == ["host/h1", "host/h3"]
    assert recorder.events[1].details["monitor_details"] == {"vendor_key": "kept"}


async def test_empty_list_is_nothing(client: httpx.AsyncClient, recorder: Recorder) -> None:
    assert (await put(client, [])).status_code == 200
    assert recorder.calls == 0


@pytest.mark.parametrize(("events", "needle"), [
    ([doctor_event(type_="compute.host.slow")], "[0].type: unknown event type"),
    ([doctor_event(), doctor_event("h9")], "[1].details.hostname: no host named 'h9'"),
    ([doctor_event(status="sideways")], "details.status"),
    ([doctor_event(time="noonish")], "time"),
    ([{**doctor_event(), "severity": "high"}], "severity"),
    ([{k: v for k, v in doctor_event().items() if k != "details"}], "details"),
    (doctor_event(), "list"),
    ({"events": [doctor_event()]}, "list"),
])
async def test_bad_requests_are_400_and_take_nothing(
        client: httpx.AsyncClient, recorder: Recorder, events: Any, needle: str) -> None:
    r = await put(client, events)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]
    assert recorder.calls == 0


async def test_store_failure_is_503(client: httpx.AsyncClient, recorder: Recorder) -> None:
    recorder.fail_with = StoreUnavailable("disk full")
    r = await put(client, [doctor_event()])
    assert r.status_code == 503 and "disk full" in r.json()["detail"]
