"""JSON no parser of the API may take - nested too deep, a huge number - is a 400 with a
message on every route that takes JSON, never a 500 (ADR 0016). Before, the alarm
PATCH answered 500 to 1,000 levels of nesting (RecursionError in json's scanner) and
to a 5,000-digit integer (ValueError: int_max_str_digits). Validation reports the
first few problems, not thousands."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_limits_util import (
    MERGE_PATCH,
    Controller,
    controller_app,
    deep,
    doctor_event,
    huge_int,
)
from fastapi import FastAPI
from test_api_limits_body import refusal

from nfvha.api.doctor import MAX_EVENTS
from nfvha.api.problems import install_problem_handlers
from nfvha.api.vnffm import vnffm_router
from nfvha.faults.model import MAX_FILTER_VALUES
from nfvha.model.api import ApiLimits
from nfvha.util.jsonguard import (
    JSON_MAX_CONTAINERS,
    JSON_MAX_DIGITS,
    json_problem,
    outside_strings,
)

JSON = {"Content-Type": "application/json"}
# Every route that takes a JSON body.
JSON_ROUTES = [
    ("PATCH", "/vnffm/v1/alarms/some-alarm", MERGE_PATCH),
    ("POST", "/vnffm/v1/subscriptions", JSON),
    ("POST", "/v1/tokens", JSON),
    ("POST", "/v1/notifications", JSON),
    ("PUT", "/doctor/events", JSON),
]
IDS = [f"{m} {p}" for m, p, _ in JSON_ROUTES]

BAD_JSON = {
    "1000 levels of arrays": (deep(1000), "more than 200 arrays and objects"),
    "1000 levels of objects": (b'{"a":' * 1000 + b"1" + b"}" * 1000,
                               "more than 200 arrays and objects"),
    "5000-digit integer": (huge_int(5000), f"more than {JSON_MAX_DIGITS} digits"),
    "5000-digit float": (b"[1" + b"0" * 5000 + b".5]", f"more than {JSON_MAX_DIGITS} digits"),
    "1e999": (b'{"ackState": 1e999}', "exponent of 100 or more"),
    "201 empty arrays": (b"[" + b",".join([b"[]"] * 200) + b"]",
                         "more than 200 arrays and objects"),
}


@pytest.mark.parametrize(("method", "path", "headers"), JSON_ROUTES, ids=IDS)
@pytest.mark.parametrize("case", list(BAD_JSON))
async def test_too_deep_or_huge_numbers_are_400_on_every_json_route(
        client: httpx.AsyncClient, controller: Controller, method: str, path: str,
        headers: dict[str, str], case: str) -> None:
    body, says = BAD_JSON[case]
    before = controller.bus.last_id
    r = await client.request(method, path, content=body, headers=headers)
    assert says in refusal(r, path, 400)
    assert controller.bus.last_id == before


@pytest.fixture
async def bare_vnffm(controller: Controller) -> AsyncIterator[httpx.AsyncClient]:
    """The FM routes without the API's guard: their own parsing must hold as well."""
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(vnffm_router(controller.alarms, controller.notifier, "/vnffm/v1"),
                       prefix="/vnffm/v1")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://fm") as c:
        yield c


@pytest.mark.parametrize("body", [deep(1000), huge_int(5000)], ids=["deep", "huge"])
async def test_alarm_patch_itself_parses_without_a_500(bare_vnffm: httpx.AsyncClient,
                                                       body: bytes) -> None:
    r = await bare_vnffm.patch("/vnffm/v1/alarms/x", content=body, headers=MERGE_PATCH)
    assert r.status_code == 400, r.text
    assert "Invalid JSON" in r.json()["detail"]


async def test_what_only_looks_deep_or_huge_inside_strings_is_taken(
        client: httpx.AsyncClient) -> None:
    # 203 brackets and a 41-digit run, all inside one string: not structure, not a number.
    name = "[" * 103 + "{" * 100 + "1" * 41 + 'e999 \\ " \\"'
    assert len(name) == 255  # the longest payload value Masakari takes
    n = {"notification": {"type": "PROCESS", "hostname": "host1",
                          "generated_time": "2027-01-15T08:00:00",
                          "payload": {"event": "STOPPED", "process_name": name}}}
    r = await client.post("/v1/notifications", json=n)
    assert r.status_code == 202, r.text
    assert r.json()["notification"]["payload"]["process_name"] == name


async def test_as_many_events_as_a_request_may_hold_are_taken(tmp_path: Path) -> None:
    events = [doctor_event(status="down" if i % 2 else "up") for i in range(MAX_EVENTS)]
    raw = json.dumps(events).encode()
    assert raw.count(b"{") + raw.count(b"[") <= JSON_MAX_CONTAINERS
    # The default intake limit holds fewer (a monitor sends one at a time); raised:
    async with controller_app(tmp_path, ApiLimits(intake_max_body_bytes=len(raw) + 1024)) as c:
        transport = httpx.ASGITransport(app=c.app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as client:
            before = c.bus.last_id
            r = await client.put("/doctor/events", content=raw)
            assert r.status_code == 200, r.text
            assert c.bus.last_id == before + MAX_EVENTS
            r = await client.put("/doctor/events", json=[*events, doctor_event()])
            assert f"at most {MAX_EVENTS} items" in refusal(r, "/doctor/events", 400)


async def test_numbers_within_bounds_reach_the_route(client: httpx.AsyncClient) -> None:
    r = await client.put("/doctor/events", json=[{
        **doctor_event(), "details": {"hostname": "host1", "status": "down",
                                      "big": int("9" * JSON_MAX_DIGITS), "small": 1e-99,
                                      "large": 1.5e99}}])
    assert r.status_code == 200, r.text


async def test_only_the_first_problems_are_reported(client: httpx.AsyncClient) -> None:
    r = await client.put("/doctor/events", json=[{"type": "x"}] * 40)
    message = refusal(r, "/doctor/events", 400)
    assert message.count(";") == 4 and "more)" in message and len(message) < 1000
    payload = {f"key{i}!": "v" for i in range(10)}
    r = await client.post("/v1/notifications", json={"notification": {
        "type": "COMPUTE_HOST", "hostname": "host1", "generated_time": "2027-01-15T08:00:00",
        "payload": payload}})
    message = refusal(r, "/v1/notifications", 400)
    assert message.count("Invalid input") == 5 and "(and 5 more)" in message
    many = {f"k{i}": "v" for i in range(100)}  # refused before its keys are checked
    r = await client.post("/v1/notifications", json={"notification": {
        "type": "COMPUTE_HOST", "hostname": "host1", "generated_time": "2027-01-15T08:00:00",
        "payload": many}})
    assert "at most 16 keys" in refusal(r, "/v1/notifications", 400)
    values = [f"vm/x{i}" for i in range(MAX_FILTER_VALUES + 1)]
    r = await client.post("/vnffm/v1/subscriptions", json={
        "callbackUri": "http://127.0.0.1:9/cb", "filter": {"resourceIds": values}})
    assert f"at most {MAX_FILTER_VALUES} items" in refusal(r, "/vnffm/v1/subscriptions", 400)


# -- the guard's rule, unit by unit ---------------------------------------------------------


def test_outside_strings_keeps_structure_and_drops_what_strings_hold() -> None:
    assert outside_strings(b'{"a[": "]{", "b": [1, "x"]}') == b'{: , : [1, ]}'
    # An escaped quote does not end a string; an escaped backslash before a quote does.
    assert outside_strings(rb'["a\"[", "b\\", [2]]') == b"[, , [2]]"
    assert outside_strings(rb'["\\\"[["]') == b"[]"


@pytest.mark.parametrize(("body", "finding"), [
    (b'{"ackState": "ACKNOWLEDGED"}', None),
    (b"[" * JSON_MAX_CONTAINERS + b"]" * JSON_MAX_CONTAINERS, None),
    (b"[" * (JSON_MAX_CONTAINERS + 1) + b"]" * (JSON_MAX_CONTAINERS + 1), "arrays and objects"),
    (b'["' + b"[" * 500 + b'"]', None),
    (rb'["\\", ' + b"[" * 300 + b"]" * 300 + b"]", "arrays and objects"),
    (b"[" + b"9" * JSON_MAX_DIGITS + b"]", None),
    (b"[-" + b"9" * (JSON_MAX_DIGITS + 1) + b"]", "digits"),
    (b'["' + b"9" * 5000 + b'"]', None),
    (b"[1e99, 1E-99, 1.5e+99]", None),
    (b"[1e100]", "exponent"), (b"[1E-100]", "exponent"), (b"[2e+0100]", "exponent"),
    (b'["1e100", true, false]', None),
])
def test_json_problem(body: bytes, finding: str | None) -> None:
    problem = json_problem(body)
    if finding is None:
        assert problem is None
    else:
        assert problem is not None and finding in problem


async def test_a_request_without_a_token_is_refused_before_its_json_is_looked_at(
        controller: Controller) -> None:
    transport = httpx.ASGITransport(app=controller.app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha") as c:
        r = await c.post("/v1/tokens", content=deep(1000), headers=JSON)
        assert r.status_code == 401, r.text
        r = await c.post("/v1/tokens", content=b"x" * (1 << 20), headers=JSON)
        assert r.status_code == 413, r.text  # the size is checked before anything else
