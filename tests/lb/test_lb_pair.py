"""The LB as a redundant pair under an availability manager (a fake one): only the
active forwards, the standby checks members warm, and the active asks the AM to
recover a member it excluded (the SDK's ``member_failed``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from lb_testutil import (
    LOOPBACK,
    AmConn,
    FakeAM,
    Members,
    Start,
    Stats,
    UdpClient,
    free_port,
    lb_argv,
)

from nfvha.amf.sdk import ComponentClient, NotConnected

ALL = ["w1", "w2", "w3"]
SI = "lb"


async def no_answer(port: int, request: str, within_s: float = 0.2) -> bool:
    """True if nothing answers ``request`` for ``within_s`` (the standby stays silent)."""
    client = await UdpClient.open(LOOPBACK, port)
    try:
        with contextlib.suppress(AssertionError):
            await client.ask(request, within_s=within_s, retry_s=within_s)
            return False
        return True
    finally:
        client.close()


async def answer(port: int, request: str) -> str:
    client = await UdpClient.open(LOOPBACK, port)
    try:
        return await client.ask(request, retry_s=1.0)  # assigned active = forwarding
    finally:
        client.close()


def drained(conn: AmConn) -> list[dict[str, object]]:
    out = []
    while not conn.inbox.empty():
        out.append(conn.inbox.get_nowait())
    return out


@pytest.mark.req("IF-2")
async def test_only_the_active_lb_forwards_and_reports_failed_members(
        start: Start, members: Members, am: FakeAM) -> None:
    pa, pb = free_port(), free_port()
    await start(lb_argv("lb-a", pa, members.ports, "--am", am.endpoint, "--component", "lb-a"))
    await start(lb_argv("lb-b", pb, members.ports, "--am", am.endpoint, "--component", "lb-b"))
    conns = {c.register["component"]: c for c in [await am.accept(), await am.accept()]}
    stats_a, stats_b = await Stats.open(pa), await Stats.open(pb)
    try:
        for stats in (stats_a, stats_b):  # both check members, roles or not
            await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        assert await no_answer(pa, "INC x")  # unassigned: silent

        assert (await conns["lb-a"].order(SI, "standby", 1))["op"] == "assigned"
        assert (await conns["lb-b"].order(SI, "active", 1))["op"] == "assigned"
        assert (await answer(pb, "INC x")).startswith("OK x 1 ")
        assert await no_answer(pa, "INC y")
        s = await stats_a.get()
        assert s["role"] == "standby" and s["forwarded"] == 0 and s["dropped"] == 2

        # Switch-over: the old active quiesced first, then the standby promoted.
        assert (await conns["lb-b"].order(SI, "quiesced", 2))["op"] == "assigned"
        assert await no_answer(pb, "INC z")
        ordered_ns = time.monotonic_ns()
        assert (await conns["lb-a"].order(SI, "active", 2))["op"] == "assigned"
        assert (await answer(pa, "INC z")).startswith("OK z 1 ")
        assert (await stats_a.get())["role"] == "active"
        # When it took the role (what the scenario runner reads; no VIP here).
        times = json.loads((await answer(pa, "TIMES")).removeprefix("TIMES "))[SI]
        assert times["epoch"] == 2 and times["vip_mono_ns"] is None
        assert ordered_ns <= times["order_mono_ns"] <= times["serving_mono_ns"], times

        # A member crashes: both exclude it (the standby stays warm), only the active
        # asks for recovery.
        leases_b = conns["lb-b"].leases
        await members.procs["w2"].kill()
        report = await conns["lb-a"].recv_until(lambda m: m.get("op") == "member_failed")
        assert report["member"] == "w2" and "health checks missed" in str(report["reason"])
        await stats_b.member_state("w2", "excluded")
        # A lease request sent after lb-b's exclusion follows any report on the same
        # connection.
        await conns["lb-b"].wait_leases(leases_b + 2)
        assert [m for m in drained(conns["lb-b"]) if m.get("op") == "member_failed"] == []
        assert (await answer(pa, "INC w")).split()[3] in ("w1", "w3")
    finally:
        stats_a.close()
        stats_b.close()


async def test_member_failed_op_on_the_wire(am: FakeAM) -> None:
    client = ComponentClient("lb-x", am.endpoint)
    with pytest.raises(NotConnected):
        await client.member_failed("w9", "before any session")
    async with client:
        conn = await am.accept()
        await client.wait_connected()
        await client.member_failed("w9", "3 health checks missed")
        assert await conn.recv_until(lambda m: m.get("op") == "member_failed") == {
            "op": "member_failed", "member": "w9", "reason": "3 health checks missed"}
    await asyncio.wait_for(conn.closed.wait(), 2.0)
