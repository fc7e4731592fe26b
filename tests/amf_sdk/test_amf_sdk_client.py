"""ComponentClient against a fake AM on loopback: registration, orders and fencing by
epoch, the active lease, reconnection, health reports and checkpoints."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from amf_sdk_testutil import FakeAM

from nfvha.amf.sdk import (
    Assignment,
    CheckpointError,
    ComponentClient,
    NotConnected,
    Peer,
    parse_endpoint,
)
from nfvha.util.clock import ManualClock


@dataclass
class Roles:
    """Role callbacks that record what they were called with."""

    calls: list[tuple[object, ...]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event | None = None  # on_active waits for it when set
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    fail_active: bool = False

    def _record(self, *call: object) -> None:
        self.calls.append(call)
        self.changed.set()

    async def on_active(self, si: str, epoch: int, vip: str | None, peer: Peer | None) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_active:
            raise RuntimeError("cannot claim the VIP")
        self._record("active", si, epoch, vip, peer)

    async def on_standby(self, si: str, epoch: int, peer: Peer | None) -> None:
        self._record("standby", si, epoch, peer)

    async def on_quiesced(self, si: str, epoch: int) -> None:
        self._record("quiesced", si, epoch)

    async def on_removed(self, si: str, epoch: int) -> None:
        self._record("removed", si, epoch)

    async def wait_for(self, call: tuple[object, ...], within_s: float = 5.0) -> None:
        async def seen() -> None:
            while call not in self.calls:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(seen(), within_s)


async def _until(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def make_client(am: FakeAM, roles: Roles, **kwargs: object) -> ComponentClient:
    return ComponentClient("gw-a", am.endpoint, on_active=roles.on_active,
                           on_standby=roles.on_standby, on_quiesced=roles.on_quiesced,
                           on_removed=roles.on_removed, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def roles() -> Roles:
    return Roles()


@pytest.fixture
async def client(am: FakeAM, roles: Roles) -> AsyncIterator[ComponentClient]:
    c = make_client(am, roles)
    await c.start()
    try:
        yield c
    finally:
        await c.close()


async def test_register_carries_identity_and_welcome_connects(
        am: FakeAM, client: ComponentClient) -> None:
    conn = await am.accept()
    reg = conn.register
    assert reg["op"] == "register" and reg["component"] == "gw-a"
    assert reg["pid"] == os.getpid()
    assert uuid.UUID(reg["incarnation"]).version == 4
    assert reg["incarnation"] == client.incarnation
    assert reg["assignments"] == []
    await client.wait_connected()
    assert client.lease_ms == am.lease_ms


async def test_incarnation_is_new_per_client(am: FakeAM, roles: Roles) -> None:
    a, b = make_client(am, roles), make_client(am, roles)
    assert a.incarnation != b.incarnation


async def test_assigned_is_sent_only_after_the_callback_returned(
        am: FakeAM, client: ComponentClient, roles: Roles) -> None:
    roles.gate = asyncio.Event()
    conn = await am.accept()
    await conn.send({"op": "assign", "si": "gw", "ha_state": "active", "epoch": 7,
                     "vip": "198.18.1.200/24",
                     "peer": {"component": "gw-b", "address": "198.18.1.61", "port": 7001}})
    await asyncio.wait_for(roles.entered.wait(), 5)
    # While the callback runs, leases are still asked for and nothing else is sent.
    await conn.wait_leases(conn.leases + 2)
    assert conn.inbox.empty()
    assert client.ha_state("gw") is None
    roles.gate.set()
    answer = await conn.recv()
    assert answer == {"op": "assigned", "si": "gw", "ha_state": "active", "epoch": 7}
    assert roles.calls == [("active", "gw", 7, "198.18.1.200/24",
                            Peer("gw-b", "198.18.1.61", 7001))]
    assert client.assignments["gw"] == Assignment("gw", "active", 7, "198.18.1.200/24",
                                                  Peer("gw-b", "198.18.1.61", 7001))


async def test_order_with_an_older_epoch_is_refused(
        am: FakeAM, client: ComponentClient, roles: Roles) -> None:
    conn = await am.accept()
    assert (await conn.order("gw", "active", 7))["op"] == "assigned"
    refused = await conn.order("gw", "standby", 6)
    assert refused == {"op": "refused", "si": "gw", "epoch": 6, "reason": "stale epoch 6 < 7"}
    assert client.ha_state("gw") == "active"
    # A re-sent order (same epoch, same state) is answered without running it again.
    assert (await conn.order("gw", "active", 7))["op"] == "assigned"
    assert [c[0] for c in roles.calls] == ["active"]
    # Newer epochs go through; the highest seen is what fences.
    assert (await conn.order("gw", "standby", 9))["op"] == "assigned"
    assert (await conn.order("gw", "active", 8))["op"] == "refused"
    assert client.highest_epoch("gw") == 9
    assert [c[0] for c in roles.calls] == ["active", "standby"]


async def test_epochs_are_per_si(am: FakeAM, client: ComponentClient) -> None:
    conn = await am.accept()
    assert (await conn.order("gw-1", "active", 9))["op"] == "assigned"
    assert (await conn.order("gw-2", "standby", 2))["op"] == "assigned"
    assert client.ha_state("gw-1") == "active" and client.ha_state("gw-2") == "standby"


async def test_unknown_ha_state_is_refused(am: FakeAM, client: ComponentClient) -> None:
    conn = await am.accept()
    answer = await conn.order("gw", "quiescing", 3)
    assert answer["op"] == "refused" and "quiescing" in answer["reason"]


async def test_remove_drops_the_assignment_and_fences_older_orders(
        am: FakeAM, client: ComponentClient, roles: Roles) -> None:
    conn = await am.accept()
    await conn.order("gw", "active", 3)
    await conn.send({"op": "remove", "si": "gw", "epoch": 4})
    assert await conn.recv() == {"op": "removed", "si": "gw", "epoch": 4}
    assert roles.calls[-1] == ("removed", "gw", 4)
    assert client.assignments == {}
    assert (await conn.order("gw", "active", 3))["op"] == "refused"


async def test_a_failing_callback_is_reported_and_not_assigned(
        am: FakeAM, client: ComponentClient, roles: Roles) -> None:
    roles.fail_active = True
    conn = await am.accept()
    await conn.send({"op": "assign", "si": "gw", "ha_state": "active", "epoch": 1})
    report = await conn.recv()
    assert report["op"] == "report" and report["healthy"] is False
    assert "cannot claim the VIP" in report["reason"]
    assert client.ha_state("gw") is None
    # Grants keep stating the order; it is not tried again (the AM has the report).
    await conn.wait_leases(conn.leases + 2)
    assert conn.inbox.empty()  # no "assigned" after the report


async def test_health_report(am: FakeAM, client: ComponentClient) -> None:
    conn = await am.accept()
    await client.wait_connected()
    await client.report(False, "disk full")
    assert await conn.recv() == {"op": "report", "healthy": False, "reason": "disk full"}


async def test_lease_expiry_quiesces_an_active_by_itself(roles: Roles) -> None:
    am = await FakeAM(lease_ms=150, ping_interval_ms=30).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        assert (await conn.order("gw", "active", 5))["op"] == "assigned"
        conn.silent = True  # the AM stops granting
        last_ask = time.monotonic()
        await roles.wait_for(("quiesced", "gw", 5), within_s=2.0)
        elapsed = time.monotonic() - last_ask
        assert elapsed < 2.0, elapsed  # runs from the last granted request, sent before
        assert client.ha_state("gw") == "quiesced"
        assert client.assignments["gw"].epoch == 5
    finally:
        await client.close()
        await am.stop()


async def test_grants_keep_the_lease(roles: Roles) -> None:
    am = await FakeAM(lease_ms=400, ping_interval_ms=20).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        assert (await conn.order("gw", "active", 5))["op"] == "assigned"
        await conn.wait_leases(conn.leases + 60)  # 1.2 s: three leases
        assert client.ha_state("gw") == "active"
        assert [c[0] for c in roles.calls] == ["active"]
    finally:
        await client.close()
        await am.stop()


async def test_lease_with_a_manual_clock(roles: Roles) -> None:
    clock = ManualClock()
    am = await FakeAM(lease_ms=1000).start()
    client = make_client(am, roles, clock=clock)
    try:
        await client.start()
        conn = await am.accept()
        await conn.order("gw", "active", 2)
        clock.advance(0.9)
        client.check_lease()
        assert not client.lease_expired()
        grants = client.grants
        client._request_lease()  # sent now: its grant runs from here
        await _until(lambda: client.grants > grants)
        clock.advance(0.9)
        client.check_lease()
        assert not client.lease_expired()
        clock.advance(0.1)
        client.check_lease()
        await roles.wait_for(("quiesced", "gw", 2), within_s=2.0)
        assert client.ha_state("gw") == "quiesced"
    finally:
        await client.close()
        await am.stop()


async def test_a_standby_has_no_lease_to_lose(roles: Roles) -> None:
    clock = ManualClock()
    am = await FakeAM(lease_ms=100).start()
    client = make_client(am, roles, clock=clock)
    try:
        await client.start()
        conn = await am.accept()
        await conn.order("gw", "standby", 2)
        clock.advance(10)
        client.check_lease()
        await conn.order("gw", "standby", 3)  # the order queue has been drained
        assert client.ha_state("gw") == "standby"
        assert all(c[0] == "standby" for c in roles.calls)
    finally:
        await client.close()
        await am.stop()


async def test_reconnects_after_am_restart_and_reports_its_assignments(
        am: FakeAM, client: ComponentClient) -> None:
    conn = await am.accept()
    await conn.order("gw", "active", 3)
    await conn.order("gw-2", "standby", 8)
    await am.stop()
    await asyncio.wait_for(conn.closed.wait(), 5)
    restarted = await FakeAM(port=am.port).start()
    try:
        conn2 = await restarted.accept()
        assert conn2.register["incarnation"] == client.incarnation
        assert sorted(conn2.register["assignments"], key=lambda a: a["si"]) == [
            {"si": "gw", "ha_state": "active", "epoch": 3},
            {"si": "gw-2", "ha_state": "standby", "epoch": 8},
        ]
        await client.wait_connected()
        assert client.sessions == 2
        assert client.ha_state("gw") == "active"  # within the lease: still serving
        assert (await conn2.order("gw", "active", 2))["op"] == "refused"  # fencing survives
    finally:
        await restarted.stop()


async def test_keeps_retrying_while_the_am_is_down(roles: Roles) -> None:
    am = await FakeAM().start()
    port = am.port
    await am.stop()
    client = make_client(am, roles, reconnect_max_s=0.1)
    try:
        await client.start()
        with pytest.raises(TimeoutError):
            await client.wait_connected(timeout_s=0.3)
        late = await FakeAM(port=port).start()
        try:
            await late.accept(within_s=3)
            await client.wait_connected()
        finally:
            await late.stop()
    finally:
        await client.close()


async def test_checkpoint_round_trip(am: FakeAM, client: ComponentClient) -> None:
    await am.accept()
    await client.checkpoint_write("sessions", {"alice": 3})
    assert am.checkpoints == {"sessions": {"alice": 3}}
    assert await client.checkpoint_read("sessions") == {"alice": 3}
    assert await client.checkpoint_read("nothing-here") is None


async def test_checkpoint_requests_carry_distinct_ids(am: FakeAM, client: ComponentClient
                                                      ) -> None:
    conn = await am.accept()
    await asyncio.gather(*(client.checkpoint_write(f"k{i}", i) for i in range(5)))
    ids = [(await conn.recv())["id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert am.checkpoints == {f"k{i}": i for i in range(5)}


async def test_checkpoint_refused_by_the_am(am: FakeAM, client: ComponentClient) -> None:
    await am.accept()
    am.checkpoint_error = "store unavailable"
    with pytest.raises(CheckpointError, match="store unavailable"):
        await client.checkpoint_write("k", 1)


async def test_checkpoint_times_out_when_the_am_does_not_answer(
        am: FakeAM, client: ComponentClient) -> None:
    await am.accept()
    am.answer_checkpoints = False
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.checkpoint_read("k", timeout_s=0.2)
    assert time.monotonic() - started < 1.0


async def test_checkpoint_fails_when_the_session_is_lost(am: FakeAM, client: ComponentClient
                                                         ) -> None:
    conn = await am.accept()
    am.answer_checkpoints = False
    pending = asyncio.ensure_future(client.checkpoint_write("k", 1, timeout_s=5))
    await conn.recv()  # the AM got the request, then crashes without answering
    await am.stop()
    with pytest.raises(NotConnected):
        await pending


def test_endpoint_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_endpoint("198.18.0.2:7000") == ("198.18.0.2", 7000)
    assert parse_endpoint("[::1]:7000") == ("::1", 7000)
    with pytest.raises(ValueError):
        parse_endpoint("198.18.0.2")
    monkeypatch.setenv("NFVHA_AM", "198.18.0.9:7100")
    monkeypatch.setenv("NFVHA_COMPONENT", "gw-b")
    client = ComponentClient()
    assert (client.component, client.am) == ("gw-b", ("198.18.0.9", 7100))
    monkeypatch.delenv("NFVHA_AM")
    with pytest.raises(ValueError, match="NFVHA_AM"):
        ComponentClient()


# -- the lease rules of ADR 0008 (component-requested, runs from the request's send) --


@pytest.mark.req("UC-1")
async def test_no_active_without_a_lease_and_the_next_grant_brings_the_role(
        roles: Roles) -> None:
    am = await FakeAM(lease_ms=200, ping_interval_ms=20, grant_leases=False).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        refused = await conn.order("gw", "active", 1)
        assert refused["op"] == "refused" and refused["reason"] == "no valid active lease"
        assert roles.calls == []
        am.grant_leases = True  # the AM answers again; its grants state active@1
        await roles.wait_for(("active", "gw", 1, None, None))
        assert client.ha_state("gw") == "active" and client.lease_valid()
    finally:
        await client.close()
        await am.stop()


async def test_a_late_active_order_is_overruled_by_the_grant(roles: Roles) -> None:
    """The case the property test found: the order to be active arrives after the AM
    moved the SI on (epoch 2). The component, without a lease, asks for one; the grant
    states epoch 2, so the late order is refused and the component never serves."""
    am = await FakeAM(lease_ms=200, ping_interval_ms=20, grant_leases=False).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        conn.assignments["gw"] = {"si": "gw", "ha_state": "standby", "epoch": 2,
                                  "vip": None, "peer": None}
        am.grant_leases = True
        await conn.send({"op": "assign", "si": "gw", "ha_state": "active", "epoch": 1,
                         "vip": None, "peer": None}, track=False)
        refused = await conn.recv_until(lambda m: m.get("epoch") == 1)
        assert refused["op"] == "refused" and "epoch 2" in refused["reason"]
        await roles.wait_for(("standby", "gw", 2, None))
        assert [c[0] for c in roles.calls] == ["standby"]
    finally:
        await client.close()
        await am.stop()


async def test_a_denied_lease_quiesces_the_active_at_once(roles: Roles) -> None:
    am = await FakeAM(lease_ms=5000, ping_interval_ms=20).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        assert (await conn.order("gw", "active", 3))["op"] == "assigned"
        conn.deny = True  # the AM has counted it out of service
        started = time.monotonic()
        await roles.wait_for(("quiesced", "gw", 3), within_s=2.0)
        assert time.monotonic() - started < 2.0  # not the 5 s lease
        assert not client.lease_valid()
    finally:
        await client.close()
        await am.stop()


async def test_a_self_quiesced_active_the_am_still_counts_on_is_active_again(
        roles: Roles) -> None:
    am = await FakeAM(lease_ms=150, ping_interval_ms=20).start()
    client = make_client(am, roles)
    try:
        await client.start()
        conn = await am.accept()
        assert (await conn.order("gw", "active", 5))["op"] == "assigned"
        conn.silent = True
        await roles.wait_for(("quiesced", "gw", 5))
        conn.silent = False  # back within the AM's margin: its record still says active
        await _until(lambda: client.ha_state("gw") == "active")
        assert [c[0] for c in roles.calls] == ["active", "quiesced", "active"]
    finally:
        await client.close()
        await am.stop()


async def test_a_grant_runs_from_when_its_request_was_sent() -> None:
    """A grant delayed in transit does not extend the lease past request + lease."""
    clock = ManualClock()
    roles = Roles()
    am = await FakeAM(lease_ms=1000, ping_interval_ms=10_000).start()
    client = make_client(am, roles, clock=clock)
    try:
        await client.start()
        conn = await am.accept()
        assert (await conn.order("gw", "active", 2))["op"] == "assigned"
        conn.silent = True
        n = client._request_lease()  # sent at t
        clock.advance(0.9)  # ...and its grant is 0.9 s on the way
        grants = client.grants
        await conn.grant(n)
        await _until(lambda: client.grants > grants)
        assert client.lease_valid()
        clock.advance(0.1)  # t + lease: over, although the grant arrived 0.1 s ago
        assert client.lease_expired()
        client.check_lease()
        await roles.wait_for(("quiesced", "gw", 2))
    finally:
        await client.close()
        await am.stop()


async def test_grant_lateness_counts_from_the_oldest_unanswered_request() -> None:
    """How late grants come (``nfvha bench abuse`` reads it at the components): from the
    oldest request still unanswered, also when the AM answers only a later one and the
    first is older than the lease (forgotten for the lease itself)."""
    clock = ManualClock()
    am = await FakeAM(lease_ms=1000, ping_interval_ms=10_000).start()
    client = make_client(am, Roles(), clock=clock)
    try:
        await client.start()
        conn = await am.accept()
        await _until(lambda: client.grants >= 1)  # the request sent on welcome
        assert client.grant_rtt_max_ms() == 0.0
        conn.silent = True
        client._request_lease()  # at t, never answered
        clock.advance(1.5)  # longer than the lease
        n = client._request_lease()
        clock.advance(0.25)
        grants = client.grants
        await conn.grant(n)
        await _until(lambda: client.grants > grants)
        assert client.grant_rtt_max_ms(reset=True) == 1750.0
        assert client.grant_rtt_max_ms() == 0.0  # nothing answered since the reset
        n = client._request_lease()
        clock.advance(0.01)
        await conn.grant(n)
        await _until(lambda: client.grants > grants + 1)
        assert client.grant_rtt_max_ms() == 10.0
    finally:
        await client.close()
        await am.stop()


async def test_grant_lateness_spans_a_reconnect() -> None:
    """An AM that stalls past the lease costs the session too: the wait counts from the
    request the old session never had answered to the first grant of the new one."""
    clock = ManualClock()
    am = await FakeAM(lease_ms=1000, ping_interval_ms=10_000).start()
    client = make_client(am, Roles(), clock=clock)
    try:
        await client.start()
        conn = await am.accept()
        await _until(lambda: client.grants >= 1)
        conn.silent = True
        client._request_lease()  # at t, never answered
        await conn.wait_leases(2)
        clock.advance(2.0)
        grants = client.grants
        conn.close()  # the session is lost; the new one's first request is granted
        await am.accept()
        await _until(lambda: client.grants > grants)
        assert client.grant_rtt_max_ms() == 2000.0
    finally:
        await client.close()
        await am.stop()
