"""Property: whatever a client sends to the intake APIs, the answer is never a 5xx.
A malformed body is a 4xx and no event is taken from it."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from intake_testutil import Recorder

from nfvha.api.masakari import vm_uuid

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
    max_leaves=10,
)

VALID_NOTIFICATIONS: list[dict[str, Any]] = [
    {"notification": {"type": "COMPUTE_HOST", "hostname": "h1",
                      "generated_time": "2027-01-15T08:00:00",
                      "payload": {"event": "STOPPED", "host_status": "NORMAL",
                                  "cluster_status": "OFFLINE"}}},
    {"notification": {"type": "PROCESS", "hostname": "h2", "generated_time": "2027-01-15T08:00:00",
                      "payload": {"event": "STOPPED", "process_name": "nova-compute"}}},
    {"notification": {"type": "VM", "hostname": "h1", "generated_time": "2027-01-15T08:00:00",
                      "payload": {"event": "LIFECYCLE", "instance_uuid": vm_uuid("vm1"),
                                  "vir_domain_event": "STOPPED_FAILED"}}},
]

VALID_DOCTOR: list[dict[str, Any]] = [
    {"id": "m1", "time": "2027-01-15T09:00:00", "type": "compute.host.down",
     "details": {"hostname": "h1", "status": "down", "monitor": "m",
                 "monitor_event_id": "e1"}},
]


# Keys that may be left out (Masakari's host_status/cluster_status, Doctor's others).
OPTIONAL = {"host_status", "cluster_status", "id", "monitor", "monitor_event_id"}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON document (dict keys and list indexes)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, valid: list[Any]) -> tuple[Any, bool]:
    """A valid document with one thing changed: a value replaced, a key dropped or an
    unknown key added.  Returns it and whether it is certainly malformed."""
    doc = copy.deepcopy(draw(st.sampled_from(valid)))
    path = draw(st.sampled_from(paths(doc)[1:]))
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    how = draw(st.sampled_from(["replace", "drop", "add"]))
    if how == "replace":
        new = draw(json_values)
        parent[path[-1]] = new
        # Every leaf here is a string; Doctor's optional keys may also be null.
        return doc, not isinstance(new, str) and not (new is None and path[-1] in OPTIONAL)
    if how == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
        return doc, path[-1] not in OPTIONAL
    if isinstance(parent, dict) and not (len(path) >= 2 and path[-2] == "details"):
        parent["x_" + draw(st.text(max_size=6))] = draw(json_values)
        return doc, True
    return doc, False


def assert_4xx(r: httpx.Response, sent: Any) -> None:
    assert 400 <= r.status_code < 500, (sent, r.status_code, r.text)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
async def test_masakari_any_body_never_500(client: httpx.AsyncClient, recorder: Recorder,
                                           raw: bytes) -> None:
    before = recorder.calls
    r = await client.post("/v1/notifications", content=raw,
                          headers={"Content-Type": "application/json"})
    assert_4xx(r, raw)
    assert recorder.calls == before


@FUZZ
@given(case=mutated(VALID_NOTIFICATIONS))
async def test_masakari_mutated_body_never_500(client: httpx.AsyncClient, recorder: Recorder,
                                               case: tuple[Any, bool]) -> None:
    doc, malformed = case
    before = recorder.calls
    r = await client.post("/v1/notifications", json=doc)
    assert r.status_code < 500, (doc, r.status_code, r.text)
    if malformed:
        assert_4xx(r, doc)
        assert recorder.calls == before


@FUZZ
@given(params=st.dictionaries(
    st.sampled_from(["limit", "marker", "sort_key", "sort_dir", "generated-since", "status",
                     "type", "source_host_uuid"]),
    st.text(max_size=30), max_size=4),
    version=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
async def test_masakari_any_query_or_version_never_500(
        client: httpx.AsyncClient, params: dict[str, str], version: str) -> None:
    for path in ("/v1/notifications", "/v1/segments"):
        r = await client.get(path, params=params,
                             headers={"OpenStack-API-Version": f"instance-ha {version}"})
        assert r.status_code < 500, (path, params, version, r.text)


@FUZZ
@given(key=st.text(max_size=40))
async def test_masakari_any_resource_id_never_500(client: httpx.AsyncClient, key: str) -> None:
    key = quote(key, safe="")
    for path in (f"/v1/notifications/{key}", f"/v1/segments/{key}",
                 f"/v1/segments/{key}/hosts", f"/v1/segments/1/hosts/{key}"):
        r = await client.get(path)
        assert r.status_code < 500, (path, r.text)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())))
async def test_doctor_any_body_never_500(client: httpx.AsyncClient, recorder: Recorder,
                                         raw: bytes) -> None:
    before = recorder.calls
    r = await client.put("/doctor/events", content=raw,
                         headers={"Content-Type": "application/json"})
    if raw.strip() == b"[]":
        assert r.status_code == 200
    else:
        assert_4xx(r, raw)
    assert recorder.calls == before


@FUZZ
@given(case=mutated([VALID_DOCTOR]))
async def test_doctor_mutated_body_never_500(client: httpx.AsyncClient, recorder: Recorder,
                                             case: tuple[Any, bool]) -> None:
    doc, malformed = case
    before = recorder.calls
    r = await client.put("/doctor/events", content=json.dumps(doc),
                         headers={"Content-Type": "application/json"})
    assert r.status_code < 500, (doc, r.status_code, r.text)
    if malformed:
        assert_4xx(r, doc)
        assert recorder.calls == before
