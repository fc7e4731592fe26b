"""Managing API tokens through the API (VNFHA-12): admin only, the secret shown once,
kept in the controller's token store (SQLite here), served by every replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

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
from nfvha.store.tokens import SqliteTokenStore, TokenCheck, seed_tokens
from nfvha.util.clock import ManualClock

pytestmark = pytest.mark.req("VNFHA-12")

ADMIN, OPERATOR, READER = "the-admin-secret", "the-operator-secret", "the-reader-secret"
CONFIGURED = [TokenEntry(sha256=token_hash(ADMIN), role="admin", name="configured admin"),
              TokenEntry(sha256=token_hash(OPERATOR), role="operator"),
              TokenEntry(sha256=token_hash(READER), role="reader")]
CACHE_S = 2.0

def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Controller:
    """One controller's API on its own token store (as ``controller.stores`` opens it:
    SQLite beside the other files, seeded from the configuration); several on one
    directory are replicas of one store."""

    def __init__(self, root: Path, clock: ManualClock) -> None:
        self.root, self.clock = root, clock
        self.topology = load_topology(default_topology_path())

    async def open(self, stack: AsyncExitStack) -> httpx.AsyncClient:
        sync = stack.enter_context(ExitStack())
        db = self.root / "events.db"
        events, alarm_store = SqliteEventStore(db), SqliteAlarmStore(db)
        outbox = Outbox(self.root / "notifications.db")
        tokens = SqliteTokenStore(self.root / "tokens.db")
        for s in (events, alarm_store, outbox, tokens):
            sync.callback(s.close)
        seed_tokens(tokens, CONFIGURED)
        auth = AuthConfig(tokens=CONFIGURED, intake_trusted_networks=[])
        t = self.topology
        bus = EventBus(events, self.clock)
        liveness = HostStates(t.host_names(), self.clock)
        agents = AgentServer(("127.0.0.1", 0), bus, liveness, self.clock)
        app: FastAPI = create_app(
            "abcde", t, InventoryView(t, agents, liveness, self.clock), bus, agents,
            AlarmManager(t, alarm_store, self.clock, t.settings), Notifier(outbox, self.clock),
            AlarmStream(), "/vnffm/v1", auth, self.clock,
            tokens=TokenCheck(tokens, auth.tokens, self.clock, cache_s=CACHE_S))
        return await stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def controller(tmp_path: Path, clock: ManualClock) -> Controller:
    return Controller(tmp_path, clock)


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


@pytest.fixture
async def api(controller: Controller, stack: AsyncExitStack) -> httpx.AsyncClient:
    return await controller.open(stack)


async def add(api: httpx.AsyncClient, role: str, name: str | None = None) -> dict[str, str]:
    body = {"role": role} if name is None else {"role": role, "name": name}
    r = await api.post("/v1/tokens", json=body, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    made: dict[str, str] = r.json()
    return made


async def test_added_token_works_at_once_with_its_role(api: httpx.AsyncClient) -> None:
    made = await add(api, "reader", "dashboard")
    assert made["role"] == "reader" and made["name"] == "dashboard"
    assert made["sha256"] == token_hash(made["token"]) and len(made["token"]) >= 40
    assert (await api.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 200
    r = await api.post("/v1/vms/nosuchvm/start", headers=bearer(made["token"]))
    assert r.status_code == 403 and "operator" in r.json()["detail"]
    op = await add(api, "operator")
    assert op["name"] == ""
    r = await api.post("/v1/vms/nosuchvm/start", headers=bearer(op["token"]))
    assert r.status_code == 404  # past the role check: the VM is unknown
    assert await add(api, "reader") != made  # a new secret every time


async def test_list_shows_hashes_roles_and_names_never_secrets(
        api: httpx.AsyncClient) -> None:
    made = await add(api, "operator", "nfvo")
    r = await api.get("/v1/tokens", headers=bearer(ADMIN))
    assert r.status_code == 200
    listed = r.json()
    expected = [{"sha256": e.sha256, "role": e.role, "name": e.name} for e in CONFIGURED]
    expected.append({"sha256": made["sha256"], "role": "operator", "name": "nfvo"})
    assert listed == sorted(expected, key=lambda t: t["sha256"])
    for secret in (ADMIN, OPERATOR, READER, made["token"]):
        assert secret not in r.text


async def test_delete_refuses_the_token_from_then_on(api: httpx.AsyncClient) -> None:
    made = await add(api, "operator")
    assert (await api.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 200
    r = await api.delete(f"/v1/tokens/{made['sha256']}", headers=bearer(ADMIN))
    assert r.status_code == 204 and r.content == b""
    # The replica that deleted it forgets it at once (no cache time here).
    r = await api.get("/v1/hosts", headers=bearer(made["token"]))
    assert r.status_code == 401
    listed = (await api.get("/v1/tokens", headers=bearer(ADMIN))).json()
    assert made["sha256"] not in [t["sha256"] for t in listed]
    r = await api.delete(f"/v1/tokens/{made['sha256']}", headers=bearer(ADMIN))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


async def test_the_last_admin_token_cannot_be_deleted(api: httpx.AsyncClient) -> None:
    only_admin = token_hash(ADMIN)
    r = await api.delete(f"/v1/tokens/{only_admin}", headers=bearer(ADMIN))
    assert r.status_code == 409 and "last admin" in r.json()["detail"]
    assert (await api.get("/v1/tokens", headers=bearer(ADMIN))).status_code == 200
    second = await add(api, "admin", "break-glass")
    r = await api.delete(f"/v1/tokens/{only_admin}", headers=bearer(second["token"]))
    assert r.status_code == 204
    assert (await api.get("/v1/tokens", headers=bearer(ADMIN))).status_code == 401
    r = await api.delete(f"/v1/tokens/{second['sha256']}", headers=bearer(second["token"]))
    assert r.status_code == 409


@pytest.mark.parametrize("token", [OPERATOR, READER])
async def test_only_admins_manage_tokens(api: httpx.AsyncClient, token: str) -> None:
    for method, path, body in (("GET", "/v1/tokens", None),
                               ("POST", "/v1/tokens", {"role": "admin"}),
                               ("DELETE", f"/v1/tokens/{token_hash(READER)}", None)):
        r = await api.request(method, path, json=body, headers=bearer(token))
        assert r.status_code == 403, (method, r.text)
        assert "admin" in r.json()["detail"]
    r = await api.post("/v1/tokens", json={"role": "admin"})
    assert r.status_code == 401
    listed = (await api.get("/v1/tokens", headers=bearer(ADMIN))).json()
    assert len(listed) == len(CONFIGURED)  # nothing was added or deleted


@pytest.mark.parametrize(("body", "why"), [
    ({"role": "root"}, "role"),
    ({}, "role"),
    ({"role": "reader", "name": "x" * 65}, "name"),
    ({"role": "reader", "name": "two\nlines"}, "name"),
    ({"role": "reader", "secret": "chosen"}, "secret"),
])
async def test_malformed_requests_are_400_problems(api: httpx.AsyncClient,
                                                   body: dict[str, str], why: str) -> None:
    r = await api.post("/v1/tokens", json=body, headers=bearer(ADMIN))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json" and why in r.json()["detail"]
    r = await api.delete("/v1/tokens/NOT-A-HASH", headers=bearer(ADMIN))
    assert r.status_code == 400 and "sha256" in r.json()["detail"]


async def test_added_tokens_survive_a_restart_and_deleted_ones_stay_deleted(
        controller: Controller) -> None:
    async with AsyncExitStack() as stack:
        api = await controller.open(stack)
        kept = await add(api, "operator", "kept")
        gone = await add(api, "reader", "gone")
        r = await api.delete(f"/v1/tokens/{gone['sha256']}", headers=bearer(ADMIN))
        assert r.status_code == 204
    async with AsyncExitStack() as stack:  # the controller restarted: the store reopened
        api = await controller.open(stack)
        assert (await api.get("/v1/hosts", headers=bearer(kept["token"]))).status_code == 200
        assert (await api.get("/v1/hosts", headers=bearer(gone["token"]))).status_code == 401
        names = {t["name"] for t in (await api.get("/v1/tokens", headers=bearer(ADMIN))).json()}
        assert "kept" in names and "gone" not in names


async def test_a_token_added_through_one_replica_works_on_another_at_once(
        controller: Controller, stack: AsyncExitStack, clock: ManualClock) -> None:
    a, b = await controller.open(stack), await controller.open(stack)
    made = await add(a, "operator")
    assert (await b.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 200
    # Deleted through a: a refuses it at once, b once its cache time is over.
    assert (await a.delete(f"/v1/tokens/{made['sha256']}",
                           headers=bearer(ADMIN))).status_code == 204
    assert (await a.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 401
    assert (await b.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 200
    clock.advance(CACHE_S + 0.1)
    assert (await b.get("/v1/hosts", headers=bearer(made["token"]))).status_code == 401
