"""The Masakari v1 intake over HTTP: notifications become nfvha events, the answers
have Masakari's shape, and every bad request is a 4xx with the bad field named."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from intake_testutil import DEDUP_WINDOW_S, Recorder

from nfvha.api.masakari import host_uuid, segment_uuid, vm_uuid
from nfvha.model.events import EventType, Kind, Severity
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import ManualClock

GENERATED = "2027-01-15T08:00:00.123456"  # naive: UTC, as oslo's utcnow() prints it


def body(type_: str, hostname: str, payload: dict[str, Any],
         generated_time: str = GENERATED) -> dict[str, Any]:
    return {"notification": {"type": type_, "hostname": hostname,
                             "generated_time": generated_time, "payload": payload}}


HOST_STOPPED = {"event": "STOPPED", "host_status": "UNKNOWN", "cluster_status": "OFFLINE"}
HOST_STARTED = {"event": "STARTED", "host_status": "NORMAL", "cluster_status": "ONLINE"}


async def post(client: httpx.AsyncClient, data: Any) -> httpx.Response:
    return await client.post("/v1/notifications", json=data)


def fault(r: httpx.Response, name: str) -> str:
    data = r.json()
    assert list(data) == [name], data
    assert data[name]["code"] == r.status_code
    message: str = data[name]["message"]
    return message


# -- notifications become events -----------------------------------------------------


async def test_compute_host_stopped_is_host_down(client: httpx.AsyncClient,
                                                 recorder: Recorder) -> None:
    r = await post(client, body("COMPUTE_HOST", "h2", HOST_STOPPED))
    assert r.status_code == 202, r.text
    n = r.json()["notification"]
    assert n["status"] == "new" and n["type"] == "COMPUTE_HOST"
    assert n["source_host_uuid"] == host_uuid("h2")
    assert n["payload"] == HOST_STOPPED
    assert n["generated_time"] == GENERATED
    assert uuid.UUID(n["notification_uuid"]) and n["id"] == 1
    assert {"created_at", "updated_at", "deleted", "deleted_at"} <= set(n)
    [ev] = recorder.events
    assert (ev.host, ev.seq, ev.origin, ev.kind, ev.entity) == (
        "h2", 0, "masakari", Kind.HOST_DOWN, "host/h2")
    assert ev.severity == Severity.CRITICAL and ev.event_type == EventType.EQUIPMENT_ALARM
    assert not ev.clears
    utc = datetime(2027, 1, 15, 8, 0, 0, 123456, tzinfo=UTC)
    assert ev.event_time == pytest.approx(utc.timestamp())  # GENERATED read as UTC
    assert ev.details["notification_uuid"] == n["notification_uuid"]
    assert r.headers["OpenStack-API-Version"] == "instance-ha 1.0"


async def test_compute_host_started_clears(client: httpx.AsyncClient, recorder: Recorder
                                           ) -> None:
    assert (await post(client, body("COMPUTE_HOST", "h1", HOST_STARTED))).status_code == 202
    [ev] = recorder.events
    assert (ev.kind, ev.entity, ev.clears, ev.severity) == (
        Kind.HOST_UP, "host/h1", True, Severity.CLEARED)


@pytest.mark.parametrize(("event", "kind", "clears"), [
    ("STOPPED", Kind.HOST_PROCESS_FAILED, False),
    ("STARTED", Kind.HOST_PROCESS_RESTARTED, True),
])
async def test_process_events(client: httpx.AsyncClient, recorder: Recorder, event: str,
                              kind: Kind, clears: bool) -> None:
    r = await post(client, body("PROCESS", "h3", {"event": event,
                                                  "process_name": "nova-compute"}))
    assert r.status_code == 202, r.text
    [ev] = recorder.events
    assert (ev.kind, ev.entity, ev.clears) == (kind, "host/h3", clears)
    assert ev.details["process"] == "nova-compute"  # the alarm's part


@pytest.mark.parametrize(("event", "vir", "kind"), [
    ("LIFECYCLE", "STOPPED_FAILED", Kind.VM_CRASHED),
    ("IO_ERROR", "IO_ERROR_REPORT", Kind.VM_CRASHED),
    ("QEMU_GUEST_AGENT_ERROR", "STOPPED_FAILED", Kind.VM_HUNG),
])
async def test_vm_failures_name_the_topology_vm(client: httpx.AsyncClient, recorder: Recorder,
                                                event: str, vir: str, kind: Kind) -> None:
    payload = {"event": event, "instance_uuid": vm_uuid("vm1"), "vir_domain_event": vir}
    r = await post(client, body("VM", "h1", payload))
    assert r.status_code == 202 and r.json()["notification"]["status"] == "new"
    [ev] = recorder.events
    assert (ev.kind, ev.entity, ev.host, ev.severity) == (kind, "vm/vm1", "h1",
                                                          Severity.CRITICAL)
    assert ev.details["instance_uuid"] == vm_uuid("vm1")


async def test_vm_not_in_topology_is_named_by_uuid(client: httpx.AsyncClient,
                                                   recorder: Recorder) -> None:
    other = "96AB1C42-668C-4F2D-8689-AFA3301D4EE9"  # any spelling uuid.UUID reads
    payload = {"event": "LIFECYCLE", "instance_uuid": other, "vir_domain_event": "STOPPED_FAILED"}
    assert (await post(client, body("VM", "h2", payload))).status_code == 202
    assert recorder.events[0].entity == f"vm/{other.lower()}"


@pytest.mark.parametrize(("event", "vir"), [
    ("LIFECYCLE", "STOPPED_SHUTDOWN"), ("LIFECYCLE", "STOPPED_DESTROYED"), ("REBOOT", "UNKNOWN"),
])
async def test_vm_events_that_are_no_fault_are_ignored(
        client: httpx.AsyncClient, recorder: Recorder, event: str, vir: str) -> None:
    payload = {"event": event, "instance_uuid": vm_uuid("vm1"), "vir_domain_event": vir}
    r = await post(client, body("VM", "h1", payload))
    assert r.status_code == 202 and r.json()["notification"]["status"] == "ignored"
    assert recorder.events == []
    # Recorded all the same, as Masakari does, and not a duplicate of itself.
    assert (await post(client, body("VM", "h1", payload))).status_code == 202
    listed = (await client.get("/v1/notifications", params={"status": "ignored"})).json()
    assert len(listed["notifications"]) == 2


async def test_masakari_sample_time_format_is_taken(client: httpx.AsyncClient,
                                                    recorder: Recorder) -> None:
    # doc/api_samples/notifications/host-notification-create-req.json
    r = await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED, "2017-04-24 08:34:46"))
    assert r.status_code == 202, r.text
    assert r.json()["notification"]["generated_time"] == "2017-04-24T08:34:46.000000"
    r = await post(client, body("COMPUTE_HOST", "h2", HOST_STOPPED, "2017-04-24T10:34:46+02:00"))
    assert r.json()["notification"]["generated_time"] == "2017-04-24T08:34:46.000000"
    assert recorder.events[0].event_time == recorder.events[1].event_time


# -- refusals --------------------------------------------------------------------------


async def test_unknown_host_is_400_and_nothing_is_taken(client: httpx.AsyncClient,
                                                        recorder: Recorder) -> None:
    r = await post(client, body("COMPUTE_HOST", "h9", HOST_STOPPED))
    assert r.status_code == 400
    assert fault(r, "badRequest") == "Host with name h9 could not be found."
    assert recorder.events == []
    assert (await client.get("/v1/notifications")).json() == {"notifications": []}


@pytest.mark.parametrize(("data", "path"), [
    (body("COMPUTE_HOST", "h1", {"event": "CRASHED"}), "notification/payload/event"),
    (body("COMPUTE_HOST", "h1", {"event": "STOPPED", "host_status": "ERROR"}),
     "notification/payload/host_status"),
    (body("COMPUTE_HOST", "h1", {"host_status": "NORMAL"}), "notification/payload/event"),
    (body("PROCESS", "h1", {"event": "STOPPED"}), "notification/payload/process_name"),
    (body("PROCESS", "h1", {"event": "STOPPED", "process_name": ""}),
     "notification/payload/process_name"),
    (body("VM", "h1", {"event": "LIFECYCLE", "instance_uuid": "vm1",
                       "vir_domain_event": "STOPPED_FAILED"}),
     "notification/payload/instance_uuid"),
    (body("VM", "h1", {"event": "LIFECYCLE", "instance_uuid": vm_uuid("vm1")}),
     "notification/payload/vir_domain_event"),
    (body("COMPUTE_HOST", "h1", {"event": "STOPPED", "extra": "x"}),
     "notification/payload/extra"),
    (body("COMPUTE_HOST", "h1", {"event": 1}), "notification/payload/event"),
    (body("HOST", "h1", HOST_STOPPED), "notification/type"),
    (body("COMPUTE_HOST", "h 1", HOST_STOPPED), "notification/hostname"),
    (body("COMPUTE_HOST", "", HOST_STOPPED), "notification/hostname"),
    (body("COMPUTE_HOST", "h1", HOST_STOPPED, "yesterday"), "notification/generated_time"),
    (body("COMPUTE_HOST", "h1", HOST_STOPPED, "1700000000"), "notification/generated_time"),
    ({"notification": {"type": "COMPUTE_HOST", "hostname": "h1", "generated_time": GENERATED,
                       "payload": HOST_STOPPED, "severity": "high"}}, "notification/severity"),
    ({"notification": {"type": "COMPUTE_HOST", "hostname": "h1", "payload": HOST_STOPPED}},
     "notification/generated_time"),
    ({"notifications": []}, "notification"),
    ([], "(body)"),
])
async def test_schema_errors_are_400_naming_the_field(
        client: httpx.AsyncClient, recorder: Recorder, data: Any, path: str) -> None:
    r = await post(client, data)
    assert r.status_code == 400, r.text
    assert f"Invalid input for field/attribute {path}." in fault(r, "badRequest")
    assert recorder.events == []


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b'{"notification": '])
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/v1/notifications", content=raw,
                          headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert fault(r, "badRequest").startswith("Malformed request body")


async def test_duplicate_within_window_is_409_then_taken_after(
        client: httpx.AsyncClient, recorder: Recorder, clock: ManualClock) -> None:
    assert (await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED))).status_code == 202
    clock.advance(DEDUP_WINDOW_S - 1)
    # A monitor's retry carries a new generated_time; it is the same notification.
    r = await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED, "2027-01-15T08:02:59"))
    assert r.status_code == 409
    assert fault(r, "conflictingRequest") == (
        "Notification received from host h1 of type 'COMPUTE_HOST' is duplicate.")
    # Another host, another type or another payload is not a duplicate.
    assert (await post(client, body("COMPUTE_HOST", "h2", HOST_STOPPED))).status_code == 202
    assert (await post(client, body("COMPUTE_HOST", "h1", HOST_STARTED))).status_code == 202
    assert (await post(client, body("PROCESS", "h1", {"event": "STOPPED",
                                                      "process_name": "x"}))).status_code == 202
    clock.advance(1.5)
    assert (await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED))).status_code == 202
    assert [e.kind for e in recorder.events] == [
        Kind.HOST_DOWN, Kind.HOST_DOWN, Kind.HOST_UP, Kind.HOST_PROCESS_FAILED, Kind.HOST_DOWN]


async def test_identical_notifications_at_once_are_taken_once(
        client: httpx.AsyncClient, recorder: Recorder) -> None:
    """The duplicate check and the record are one step: while the first one's event is
    being stored, the second waits, then is refused."""
    async def let_the_other_run() -> None:
        # Yield to the loop (no timed wait): the second request goes as far as it can
        # before the first one's event is stored.
        for _ in range(100):
            await asyncio.sleep(0)

    recorder.before = let_the_other_run
    one, two = await asyncio.gather(post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED)),
                                    post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED)))
    assert sorted([one.status_code, two.status_code]) == [202, 409]
    assert recorder.calls == 1 and len(recorder.events) == 1


async def test_store_failure_is_503_and_the_retry_is_taken(
        client: httpx.AsyncClient, recorder: Recorder) -> None:
    recorder.fail_with = StoreUnavailable("disk full")
    r = await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED))
    assert r.status_code == 503
    assert "disk full" in fault(r, "serviceUnavailable")
    assert (await client.get("/v1/notifications")).json() == {"notifications": []}
    recorder.fail_with = None
    assert (await post(client, body("COMPUTE_HOST", "h1", HOST_STOPPED))).status_code == 202
    assert len(recorder.events) == 1


# -- reading notifications ---------------------------------------------------------------


async def _post_three(client: httpx.AsyncClient, clock: ManualClock) -> list[dict[str, Any]]:
    made = []
    for host in ("h1", "h2", "h3"):
        r = await post(client, body("COMPUTE_HOST", host, HOST_STOPPED))
        made.append(r.json()["notification"])
        clock.advance(1)
    return made


async def test_list_is_newest_first_and_pages_by_either_id(
        client: httpx.AsyncClient, clock: ManualClock) -> None:
    made = await _post_three(client, clock)
    listed = (await client.get("/v1/notifications")).json()["notifications"]
    assert [n["id"] for n in listed] == [3, 2, 1]
    assert listed[0] == made[2]
    page = (await client.get("/v1/notifications", params={"limit": 2})).json()["notifications"]
    assert [n["id"] for n in page] == [3, 2]
    for marker in (page[-1]["notification_uuid"], str(page[-1]["id"])):
        rest = (await client.get("/v1/notifications",
                                 params={"limit": 2, "marker": marker})).json()
        assert [n["id"] for n in rest["notifications"]] == [1]
    asc = (await client.get("/v1/notifications", params={"sort_dir": "asc"})).json()
    assert [n["id"] for n in asc["notifications"]] == [1, 2, 3]
    only = (await client.get("/v1/notifications",
                             params={"source_host_uuid": host_uuid("h2")})).json()
    assert [n["id"] for n in only["notifications"]] == [2]
    assert (await client.get("/v1/notifications",
                             params={"type": "VM"})).json() == {"notifications": []}
    since = (await client.get("/v1/notifications",
                              params={"generated-since": "2027-01-15T08:00:01"})).json()
    assert since == {"notifications": []}


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": "many"}, "limit param must be an integer"),
    ({"limit": "-1"}, "limit param must be positive"),
    ({"marker": "nope"}, "Marker nope could not be found."),
    ({"sort_key": "payload"}, "Sort key supplied was not valid."),
    ({"sort_dir": "up"}, "Sort direction supplied was not valid."),
    ({"generated-since": "soon"}, "Invalid generated-since value"),
])
async def test_bad_list_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str],
                                           message: str) -> None:
    r = await client.get("/v1/notifications", params=params)
    assert r.status_code == 400
    assert fault(r, "badRequest") == message


async def test_show_by_uuid_or_id(client: httpx.AsyncClient, clock: ManualClock) -> None:
    made = await _post_three(client, clock)
    for key in (made[1]["notification_uuid"], "2"):
        got = (await client.get(f"/v1/notifications/{key}")).json()["notification"]
        assert got == made[1]
    detail = await client.get(f"/v1/notifications/{made[1]['notification_uuid']}",
                              headers={"OpenStack-API-Version": "instance-ha 1.1"})
    assert detail.json()["notification"]["recovery_workflow_details"] == []
    assert detail.headers["OpenStack-API-Version"] == "instance-ha 1.1"
    r = await client.get(f"/v1/notifications/{uuid.uuid4()}")
    assert r.status_code == 404 and fault(r, "itemNotFound").startswith("No notification")


# -- segments and hosts ------------------------------------------------------------------


async def test_one_segment_per_site(client: httpx.AsyncClient) -> None:
    segs = (await client.get("/v1/segments")).json()["segments"]
    assert [(s["name"], s["uuid"]) for s in segs] == [
        ("s1", segment_uuid("s1")), ("s2", segment_uuid("s2"))]
    for s in segs:
        assert (s["service_type"], s["recovery_method"], s["enabled"]) == ("COMPUTE", "auto",
                                                                           True)
        for key in (s["uuid"], str(s["id"])):
            assert (await client.get(f"/v1/segments/{key}")).json() == {"segment": s}
    assert (await client.get("/v1/segments", params={"limit": 1})).json()["segments"] == segs[:1]
    assert (await client.get("/v1/segments", params={"enabled": "false"})).json() == {
        "segments": []}
    r = await client.get("/v1/segments/nope")
    assert r.status_code == 404
    assert fault(r, "itemNotFound") == "No failover segment with id nope."


async def test_hosts_of_a_segment(client: httpx.AsyncClient) -> None:
    seg = segment_uuid("s1")
    hosts = (await client.get(f"/v1/segments/{seg}/hosts")).json()["hosts"]
    assert [(h["name"], h["uuid"]) for h in hosts] == [("h1", host_uuid("h1")),
                                                       ("h2", host_uuid("h2"))]
    h = hosts[1]
    assert (h["type"], h["control_attributes"], h["reserved"], h["on_maintenance"],
            h["failover_segment_id"]) == ("COMPUTE", "SSH", False, False, seg)
    for key in (h["uuid"], str(h["id"])):
        assert (await client.get(f"/v1/segments/{seg}/hosts/{key}")).json() == {"host": h}
    # h3 is in the other segment.
    r = await client.get(f"/v1/segments/{seg}/hosts/{host_uuid('h3')}")
    assert r.status_code == 404 and fault(r, "itemNotFound").startswith("No host with id")
    assert (await client.get(f"/v1/segments/{seg}/hosts",
                             params={"reserved": "true"})).json() == {"hosts": []}
    r = await client.get(f"/v1/segments/{seg}/hosts", params={"reserved": "maybe"})
    assert r.status_code == 400


# -- versions ---------------------------------------------------------------------------


async def test_version_document(client: httpx.AsyncClient) -> None:
    for path in ("/v1", "/v1/"):
        r = await client.get(path)
        assert r.status_code == 200
        v = r.json()["version"]
        assert (v["id"], v["status"], v["version"], v["min_version"]) == (
            "v1", "CURRENT", "1.2", "1.0")
        assert v["links"][0] == {"rel": "self", "href": "http://intake/v1/"}


@pytest.mark.parametrize(("header", "status", "echo"), [
    ("instance-ha 1.2", 200, "instance-ha 1.2"),
    ("instance-ha latest", 200, "instance-ha 1.2"),
    ("compute 2.1, instance-ha 1.1", 200, "instance-ha 1.1"),
    ("compute 2.1", 200, "instance-ha 1.0"),
    ("instance-ha 1.3", 406, None),
    ("instance-ha 2.0", 406, None),
    ("instance-ha one", 400, None),
])
async def test_microversion_header(client: httpx.AsyncClient, header: str, status: int,
                                   echo: str | None) -> None:
    r = await client.get("/v1/segments", headers={"OpenStack-API-Version": header})
    assert r.status_code == status, r.text
    if echo is not None:
        assert r.headers["OpenStack-API-Version"] == echo
        assert r.headers["Vary"] == "OpenStack-API-Version"
