"""Times that enter through the API are bounded to what nfvha can use later (ADR 0016):
a time outside 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59Z is a 400 naming the
field, and one inside - the edges included - becomes an alarm with that time. Before,
Masakari's ``generated_time "0001-01-01T00:00:00+14:00"`` was taken, stored, and its
alarm lost (``ValueError: year 0 is out of range`` in the alarm decision)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from api_limits_util import Controller, doctor_event, masakari_notification
from test_api_limits_body import refusal

from nfvha.faults.model import NotificationType

UNUSABLE = [
    "0001-01-01T00:00:00+14:00",  # the issue's: year 0 in UTC
    "0001-01-01T00:00:00+00:00",
    "1969-12-31T23:59:59+00:00",
    "1970-01-01T05:00:00+06:00",  # 1969 in UTC
    "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
    "9999-12-31T23:59:59.500000+00:00",  # a fraction past the last second
]
EDGES = ["1970-01-01T00:00:00+00:00", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00",
         "9999-12-31T23:59:59Z", "2027-01-15T08:00:00.123456+02:00"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def alarm_times(controller: Controller, after: int) -> set[datetime]:
    """Run the alarm decision on what was stored after event ``after``: the raised
    alarms' event times (a host down raises its own alarm and its VMs')."""
    out = set()
    for ev in controller.bus.store.events(after=after, limit=100):
        for change in controller.alarms.on_event(ev):
            if change.notification is NotificationType.ALARM:
                out.add(change.alarm.eventTime)
    return out


@pytest.mark.parametrize("when", UNUSABLE)
async def test_masakari_time_out_of_range_is_400_naming_the_field(
        client: httpx.AsyncClient, controller: Controller, when: str) -> None:
    before = controller.bus.last_id
    r = await client.post("/v1/notifications", json=masakari_notification(when))
    message = refusal(r, "/v1/notifications", 400)
    assert "notification/generated_time" in message and "out of range" in message
    assert controller.bus.last_id == before


@pytest.mark.req("FM-5")
@pytest.mark.parametrize("when", EDGES)
async def test_masakari_time_at_the_edges_makes_an_alarm_with_that_time(
        client: httpx.AsyncClient, controller: Controller, when: str) -> None:
    before = controller.bus.last_id
    r = await client.post("/v1/notifications", json=masakari_notification(when))
    assert r.status_code == 202, r.text
    assert await alarm_times(controller, before) == {utc(when)}


async def test_masakari_naive_time_is_utc_and_bounded(client: httpx.AsyncClient,
                                                       controller: Controller) -> None:
    r = await client.post("/v1/notifications", json=masakari_notification("0001-01-01T00:00:00"))
    assert "out of range" in refusal(r, "/v1/notifications", 400)
    before = controller.bus.last_id
    r = await client.post("/v1/notifications", json=masakari_notification("1970-01-01T00:00:00"))
    assert r.status_code == 202, r.text
    assert await alarm_times(controller, before) == {datetime(1970, 1, 1, tzinfo=UTC)}


@pytest.mark.parametrize("when", [*UNUSABLE, "0001-01-01T00:00:00"])
async def test_doctor_time_out_of_range_is_400_naming_the_field(
        client: httpx.AsyncClient, controller: Controller, when: str) -> None:
    before = controller.bus.last_id
    r = await client.put("/doctor/events", json=[doctor_event(when)])
    message = refusal(r, "/doctor/events", 400)
    assert "[0].time" in message and "out of range" in message
    assert controller.bus.last_id == before


@pytest.mark.req("FM-5")
@pytest.mark.parametrize("when", EDGES)
async def test_doctor_time_at_the_edges_makes_an_alarm_with_that_time(
        client: httpx.AsyncClient, controller: Controller, when: str) -> None:
    before = controller.bus.last_id
    r = await client.put("/doctor/events", json=[doctor_event(when)])
    assert r.status_code == 200, r.text
    assert await alarm_times(controller, before) == {utc(when)}


@pytest.mark.parametrize(("since", "status"), [
    ("0001-01-01T00:00:00+14:00", 400), ("1969-12-31T00:00:00", 400),
    ("9999-12-31T23:59:59-01:00", 400), ("1970-01-01T00:00:00", 200),
    ("9999-12-31T23:59:59", 200)])
async def test_masakari_generated_since_is_bounded(client: httpx.AsyncClient, since: str,
                                                   status: int) -> None:
    r = await client.get("/v1/notifications", params={"generated-since": since})
    assert r.status_code == status, r.text
    if status == 400:
        assert refusal(r, "/v1/notifications", 400) == "Invalid generated-since value"


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/events", {"wait": "nan"}), ("/v1/events", {"wait": "inf"}),
    ("/v1/events", {"wait": "-1"}), ("/v1/events", {"wait": "61"}),
    ("/v1/events", {"wait": "1e999"}), ("/v1/events", {"after": "9" * 5000}),
    ("/v1/events", {"after": "-1"}), ("/v1/hosts/host1/conditions", {"limit": "9" * 5000}),
    ("/v1/notifications", {"limit": "9" * 5000}),
])
async def test_query_numbers_out_of_range_are_400(client: httpx.AsyncClient, path: str,
                                                  params: dict[str, str]) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 400, r.text


async def test_vm_action_failure_id_out_of_range_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/vms/gw-vm1/repair", params={"failure": "9" * 5000})
    assert r.status_code == 400, r.text
