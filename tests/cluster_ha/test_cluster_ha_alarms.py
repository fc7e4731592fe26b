"""The control plane's alarms decided from the watch's looks, and the shared token
check, without processes (controlplane.py, store/tokens.py)."""

from __future__ import annotations

from typing import Any

import pytest

from nfvha.controller.cluster import Watched
from nfvha.controller.controlplane import ControlPlaneAlarms
from nfvha.model.auth import Role, TokenEntry, token_hash
from nfvha.model.events import Event, Kind
from nfvha.store.base import StoreUnavailable
from nfvha.store.tokens import MemoryTokenStore, TokenCheck
from nfvha.util.clock import ManualClock


class FakeAlarms:
    """Active alarms by entity, as the alarm manager keeps them from the events."""

    def __init__(self) -> None:
        self.active: set[str] = set()

    def active_for(self, entity: str, type_name: str | None = None) -> list[Any]:
        return [entity] if entity in self.active else []


class Bus:
    def __init__(self, alarms: FakeAlarms) -> None:
        self.alarms = alarms
        self.down = False
        self.stored: list[Event] = []

    async def publish(self, events: list[Event]) -> None:
        if self.down:
            raise StoreUnavailable("PostgreSQL: connection refused")
        for ev in events:
            self.stored.append(ev)
            (self.alarms.active.discard if ev.clears else self.alarms.active.add)(ev.entity)


def look(n: int, *, c2: str = "up", pg: str = "up") -> Watched:
    return Watched(members={"c1": {"state": "up"}, "c2": {"state": c2}},
                   postgres={"state": pg}, at_ns=n)


def setup() -> tuple[ControlPlaneAlarms, Bus]:
    alarms = FakeAlarms()
    bus = Bus(alarms)
    cpa = ControlPlaneAlarms("c1", Watched, alarms, bus.publish,  # type: ignore[arg-type]
                             ManualClock(), lambda: True, confirm_looks=2)
    return cpa, bus


@pytest.mark.req("FM-2")
async def test_a_member_failed_in_two_looks_raises_once_and_clears_when_back() -> None:
    cpa, bus = setup()
    await cpa.look(look(1, c2="unreachable"))
    assert bus.stored == []  # one slow answer is not a failure
    await cpa.look(look(2, c2="unreachable"))
    await cpa.look(look(3, c2="unreachable"))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_FAILED, "control/controller:c2")]
    await cpa.look(look(4))
    assert [e.kind for e in bus.stored][1:] == [Kind.CONTROL_SERVICE_RESTORED]
    assert bus.alarms.active == set()


@pytest.mark.req("FM-2")
async def test_postgresql_outage_is_stored_once_it_is_back() -> None:
    """Its alarm cannot be stored while it is down: raised with its detection time,
    then cleared, once it answers."""
    cpa, bus = setup()
    bus.down = True
    for n in (1, 2, 3):
        await cpa.look(look(n, pg="unavailable"))
    assert bus.stored == []
    bus.down = False
    await cpa.look(look(4))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_FAILED, "control/postgresql"),
        (Kind.CONTROL_SERVICE_RESTORED, "control/postgresql")]
    assert bus.alarms.active == set()


@pytest.mark.req("FM-2")
async def test_a_new_leader_clears_an_earlier_terms_alarm_and_raises_none_twice() -> None:
    cpa, bus = setup()
    bus.alarms.active = {"control/controller:c2", "control/postgresql"}
    await cpa.look(look(1, c2="unreachable"))
    await cpa.look(look(2, c2="unreachable"))
    assert [(e.kind, e.entity) for e in bus.stored] == [
        (Kind.CONTROL_SERVICE_RESTORED, "control/postgresql")]


@pytest.mark.req("VNFHA-12")
async def test_token_check_reads_the_store_and_falls_back_to_the_configured_ones() -> None:
    configured = TokenEntry(sha256=token_hash("cfg"), role="admin")
    store = MemoryTokenStore([configured])
    clock = ManualClock()
    check = TokenCheck(store, [configured], clock, cache_s=2.0)
    assert await check.role_of("new") is None
    store.put(TokenEntry(sha256=token_hash("new"), role="reader"))
    assert await check.role_of("new") == Role.READER  # at once: misses are not cached
    store.delete(token_hash("new"))
    assert await check.role_of("new") == Role.READER  # cached for cache_s
    clock.advance(2.5)
    assert await check.role_of("new") is None
    store.delete(configured.sha256)
    assert await check.role_of("cfg") is None  # the store decides while it answers

    def down(_: str) -> TokenEntry | None:
        raise StoreUnavailable("down")

    store.get = down  # type: ignore[method-assign]
    assert await check.role_of("cfg") == Role.ADMIN
    assert await check.role_of("other") is None
