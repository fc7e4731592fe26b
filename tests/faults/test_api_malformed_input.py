"""Schema-driven: every endpoint of the committed OpenAPI document answers malformed
input with a 4xx and a message - never a 5xx, never a partial write."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nfvha.api.app import create_app
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.view import InventoryView
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.auth import AuthConfig, TokenEntry, token_hash
from nfvha.model.topology import default_topology_path, load_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import SYSTEM_CLOCK

DOC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
TOKEN = "an-admin-token-for-the-schema-test"
# (method, path) pairs; streams never end, so they are left out.
OPERATIONS = sorted((m.upper(), p) for p, ops in DOC["paths"].items() for m in ops
                    if not p.endswith("/stream"))

junk = st.one_of(
    st.text(max_size=20), st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["", "-1", "1e999", "NaN", "null", "[]", "{}", "%00", "../..", "é" * 40]))
bodies = st.one_of(
    st.binary(max_size=40),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                     max_size=3),
                 max_leaves=5).map(lambda v: json.dumps(v).encode()))


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    topology = load_topology(default_topology_path())
    db = tmp_path / "events.db"
    store, alarm_store = SqliteEventStore(db), SqliteAlarmStore(db)
    outbox = Outbox(tmp_path / "notifications.db")
    notifier = Notifier(outbox, SYSTEM_CLOCK)
    await notifier.start()
    bus = EventBus(store, SYSTEM_CLOCK)
    liveness = HostStates(topology.host_names(), SYSTEM_CLOCK)
    agents = AgentServer(("127.0.0.1", 0), bus, liveness, SYSTEM_CLOCK)
    auth = AuthConfig(tokens=[TokenEntry(sha256=token_hash(TOKEN), role="admin")],
                      intake_trusted_networks=[])
    app = create_app("abcde", topology, InventoryView(topology, agents, liveness, SYSTEM_CLOCK),
                     bus, agents, AlarmManager(topology, alarm_store, SYSTEM_CLOCK,
                                               topology.settings),
                     notifier, AlarmStream(), "/vnffm/v1", auth)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c
    await notifier.close()
    outbox.close()
    alarm_store.close()
    store.close()


def fill(path: str, value: str) -> str:
    out = path
    while "{" in out:
        a, b = out.index("{"), out.index("}")
        out = out[:a] + quote(value, safe="") + out[b + 1:]
    return out


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(OPERATIONS), value=junk, body=bodies,
       params=st.dictionaries(st.sampled_from(
           ["after", "limit", "wait", "kind", "filter", "entity", "host", "x"]), junk,
           max_size=3))
async def test_no_endpoint_answers_malformed_input_with_a_5xx(
        client: httpx.AsyncClient, op: tuple[str, str], value: str, body: bytes,
        params: dict[str, str]) -> None:
    method, path = op
    if path == "/v1/events":
        params = {**params, "wait": "0"}  # a long poll would only make the test slow
    kwargs: dict[str, Any] = {"params": params}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["content"] = body
        kwargs["headers"] = {"Content-Type": "application/json"}
    r = await client.request(method, fill(path, value or "x"), **kwargs)
    # 503: a VM/VNFC operation on a real name whose agent is not connected here.
    assert r.status_code < 500 or r.status_code == 503, (method, path, value, body,
                                                         r.status_code, r.text)
    if r.status_code >= 400:
        assert r.content, "an error without a message"
