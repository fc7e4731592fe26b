"""The ETSI VNF FM interface: filters, acknowledgement, and errors as ProblemDetails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_alarm_manager import ev, topology

from nfvha.api.problems import install_problem_handlers
from nfvha.api.vnffm import vnffm_router
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.model.events import Kind, Severity
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.util.clock import ManualClock

MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AlarmManager]]:
    store = SqliteAlarmStore(tmp_path / "nfvha-test.db")
    mgr = AlarmManager(topology(), store, ManualClock(), topology().settings)
    mgr.on_event(ev(Kind.VM_CRASHED, "vm/vm-a", severity=Severity.CRITICAL))
    mgr.on_event(ev(Kind.VNFC_CRASHED, "vnfc/gw-a"))
    mgr.on_event(ev(Kind.SENSOR, "host/h2", host="h2", severity=Severity.WARNING,
                    sensor="temp1"))
    outbox = Outbox(tmp_path / "nfvha-test-notifications.db")
    notifier = Notifier(outbox, ManualClock())
    await notifier.start()
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(vnffm_router(mgr, notifier, "http://t/vnffm/v1"), prefix="/vnffm/v1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, mgr
    await notifier.close()
    outbox.close()
    store.close()


async def test_list_get_and_filter(api: tuple[httpx.AsyncClient, AlarmManager]) -> None:
    client, _ = api
    alarms = (await client.get("/vnffm/v1/alarms")).json()
    assert len(alarms) == 3
    assert all("_links" in a and a["_links"]["self"]["href"].endswith(a["id"]) for a in alarms)
    r = await client.get("/vnffm/v1/alarms", params={"filter": "(eq,perceivedSeverity,CRITICAL)"})
    assert [a["faultType"] for a in r.json()] == ["vm-failure"]
    r = await client.get("/vnffm/v1/alarms", params={
        "filter": "(eq,isRootCause,false);(eq,managedObjectId,gw)"})
    assert [a["faultType"] for a in r.json()] == ["vnfc-failure"]
    r = await client.get("/vnffm/v1/alarms", params={
        "filter": "(in,rootCauseFaultyResource/faultyResource/resourceId,host/h2,host/h9)"})
    assert [a["faultType"] for a in r.json()] == ["host-hardware-failure"]
    one = alarms[0]
    assert (await client.get(f"/vnffm/v1/alarms/{one['id']}")).json()["id"] == one["id"]


async def test_acknowledge_then_conflict(api: tuple[httpx.AsyncClient, AlarmManager]) -> None:
    client, _ = api
    alarm_id = (await client.get("/vnffm/v1/alarms")).json()[0]["id"]
    body = json.dumps({"ackState": "ACKNOWLEDGED"})
    r = await client.patch(f"/vnffm/v1/alarms/{alarm_id}", content=body, headers=MERGE)
    assert r.status_code == 200 and r.json() == {"ackState": "ACKNOWLEDGED"}
    assert r.headers["content-type"].startswith("application/merge-patch+json")
    got = (await client.get(f"/vnffm/v1/alarms/{alarm_id}")).json()
    assert got["ackState"] == "ACKNOWLEDGED" and "alarmAcknowledgedTime" in got
    r = await client.patch(f"/vnffm/v1/alarms/{alarm_id}", content=body, headers=MERGE)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 409 and "already" in r.json()["detail"]


async def test_subscriptions_create_read_delete(
        api: tuple[httpx.AsyncClient, AlarmManager]) -> None:
    client, _ = api
    body = {"callbackUri": "http://127.0.0.1:9/cb",
            "filter": {"perceivedSeverities": ["CRITICAL"],
                       "notificationTypes": ["AlarmNotification"]},
            "authentication": {"secret": "0123456789abcdef"}}
    r = await client.post("/vnffm/v1/subscriptions", json=body)
    assert r.status_code == 201, r.text
    sub = r.json()
    assert r.headers["location"] == sub["_links"]["self"]["href"]
    assert "authentication" not in sub  # the secret is never echoed
    assert (await client.get(f"/vnffm/v1/subscriptions/{sub['id']}")).json() == sub
    assert [s["id"] for s in (await client.get("/vnffm/v1/subscriptions")).json()] == [sub["id"]]
    assert (await client.delete(f"/vnffm/v1/subscriptions/{sub['id']}")).status_code == 204
    r = await client.get(f"/vnffm/v1/subscriptions/{sub['id']}")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("body", [
    {"callbackUri": "ftp://127.0.0.1/x"},
    {"callbackUri": "not a uri"},
    {"callbackUri": "http://127.0.0.1/x", "filter": {"perceivedSeverities": ["LOUD"]}},
    {"callbackUri": "http://127.0.0.1/x", "authentication": {"secret": "short"}},
    {"filter": {}},
    {"callbackUri": "http://127.0.0.1/x", "extra": 1},
])
async def test_bad_subscriptions_are_refused_with_a_reason(
        api: tuple[httpx.AsyncClient, AlarmManager], body: dict[str, object]) -> None:
    client, _ = api
    r = await client.post("/vnffm/v1/subscriptions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["detail"]
    assert (await client.get("/vnffm/v1/subscriptions")).json() == []


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "/vnffm/v1/alarms/nope", {}, 404),
    ("GET", "/vnffm/v1/alarms?filter=(eq,bogus,1)", {}, 400),
    ("GET", "/vnffm/v1/alarms?filter=(like,ackState,X)", {}, 400),
    ("GET", "/vnffm/v1/alarms?filter=garbage", {}, 400),
    ("POST", "/vnffm/v1/alarms", {"json": {}}, 405),
    ("DELETE", "/vnffm/v1/alarms/x", {}, 405),
    ("PUT", "/vnffm/v1/alarms/x", {"json": {}}, 405),
    ("PATCH", "/vnffm/v1/alarms/x", {"json": {"ackState": "ACKNOWLEDGED"}}, 415),
    ("PUT", "/vnffm/v1/subscriptions/x", {"json": {}}, 405),
    ("PATCH", "/vnffm/v1/subscriptions/x", {"json": {}}, 405),
    ("DELETE", "/vnffm/v1/subscriptions", {}, 405),
])
async def test_errors_are_problem_details(api: tuple[httpx.AsyncClient, AlarmManager],
                                          method: str, path: str, kwargs: dict[str, object],
                                          status: int) -> None:
    client, _ = api
    r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status and r.json()["detail"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(max_size=64),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                     max_size=3),
                 max_leaves=6).map(lambda v: json.dumps(v).encode()),
))
async def test_malformed_ack_never_500_never_partial(
        api: tuple[httpx.AsyncClient, AlarmManager], body: bytes) -> None:
    client, mgr = api
    alarm_id = mgr.all_alarms()[2].id
    before = mgr.get(alarm_id).ackState
    r = await client.patch(f"/vnffm/v1/alarms/{alarm_id}", content=body, headers=MERGE)
    valid = body in (b'{"ackState": "ACKNOWLEDGED"}', b'{"ackState": "UNACKNOWLEDGED"}')
    if not valid:
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert mgr.get(alarm_id).ackState == before
