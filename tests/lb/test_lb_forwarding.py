"""The LB in front of three counters on loopback: spreading, relaying, STATS, TCP."""

from __future__ import annotations

import asyncio
import collections
import json
import signal

from lb_testutil import (
    LOOPBACK,
    FakeAM,
    Members,
    Start,
    Stats,
    UdpClient,
    counter_argv,
    free_port,
    lb_argv,
    run_load,
)

ALL = ["w1", "w2", "w3"]


async def test_udp_requests_are_spread_and_answered_from_the_front(
        start: Start, members: Members) -> None:
    port = free_port()
    lb = await start(lb_argv("lb1", port, members.ports))
    stats = await Stats.open(port)
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        # A connected socket: only answers from the LB's front address reach it.
        client = await UdpClient.open(LOOPBACK, port)
        answers = [await client.ask(f"INC s{i % 2}", retry_s=1.0) for i in range(30)]
        client.close()
        by_member = collections.Counter(a.split()[3] for a in answers)
        assert set(by_member) == set(ALL)
        assert min(by_member.values()) >= 5, by_member
        # Each member counted exactly the INCs it answered: none lost, none doubled.
        values: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
        for a in answers:
            _, session, value, member = a.split()
            values[member, session].append(int(value))
        assert all(v == list(range(1, len(v) + 1)) for v in values.values()), values
        s = await stats.get()
        assert s["forwarded"] == 30 and s["replied"] == 30
        assert s["failed"] == 0 and s["retried"] == 0 and s["excluded_count"] == 0
        assert {m: s["members"][m]["forwarded"] for m in ALL} == dict(by_member)

        lb.proc.send_signal(signal.SIGUSR1)
        line = await lb.wait_line('"forwarded": 30')
        assert json.loads(line)["members"]["w1"]["address"] == f"{LOOPBACK}:{members.ports['w1']}"
    finally:
        stats.close()


async def test_tcp_connections_are_spread_and_spliced(start: Start, members: Members) -> None:
    port = free_port()
    await start(lb_argv("lb1", port, members.ports))
    stats = await Stats.open(port)
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        seen = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"INC t\nGET t\n")
            inc = (await asyncio.wait_for(reader.readline(), 2.0)).decode().split()
            get = (await asyncio.wait_for(reader.readline(), 2.0)).decode().split()
            assert inc[:3] == ["OK", "t", "1"] and get[:3] == ["VAL", "t", "1"]
            assert inc[3] == get[3]  # one connection, one member
            seen.append(inc[3])
            writer.write_eof()  # half-close: the member closes, and so does the LB
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
        assert sorted(seen) == ALL
        assert (await stats.get())["tcp_connections"] == 3
    finally:
        stats.close()


async def test_no_healthy_member_is_answered_at_once(start: Start, members: Members) -> None:
    port = free_port()
    lb = await start(lb_argv("lb1", port, {"gone": free_port()}))
    stats = await Stats.open(port)
    try:
        s = await stats.wait("excluded", lambda s: s["members"]["gone"]["state"] == "excluded")
        assert s["healthy"] == [] and s["excluded_count"] == 1
        await lb.wait_line("member gone excluded")
        client = await UdpClient.open(LOOPBACK, port)
        assert await client.ask("INC x", retry_s=1.0) == "ERR no-healthy-member"
        client.close()
        assert (await stats.get())["failed"] == 1
    finally:
        stats.close()


async def test_not_active_member_is_skipped_and_the_request_retried(
        start: Start, members: Members, am: FakeAM) -> None:
    # h1 is an AM-managed counter without a role: it answers PING, but INC with
    # "ERR not-active unassigned". It did not execute it, so the LB sends it elsewhere.
    h1_port = free_port()
    h1 = await start(counter_argv("h1", h1_port, am.endpoint))
    await am.accept()
    await h1.wait_line("serving")
    port = free_port()
    await start(lb_argv("lb1", port, {"w1": members.ports["w1"], "h1": h1_port}))
    stats = await Stats.open(port)
    try:
        await stats.wait("both healthy", lambda s: s["healthy"] == ["w1", "h1"])
        client = await UdpClient.open(LOOPBACK, port)
        answers = [await client.ask(f"INC n{i}", retry_s=1.0) for i in range(10)]
        client.close()
        assert all(a.startswith(f"OK n{i} 1 w1") for i, a in enumerate(answers)), answers
        s = await stats.get()
        assert s["retried"] >= 1 and s["failed"] == 0
        assert s["members"]["h1"]["excluded_count"] == 0  # not a failure: not reported
    finally:
        stats.close()


async def test_a_gated_check_request_keeps_not_active_members_out(
        start: Start, members: Members, am: FakeAM) -> None:
    h1_port = free_port()
    h1 = await start(counter_argv("h1", h1_port, am.endpoint))
    conn = await am.accept()
    await h1.wait_line("serving")
    port = free_port()
    await start(lb_argv("lb1", port, {"w1": members.ports["w1"], "h1": h1_port},
                        "--check-request", "GET lb-check"))
    stats = await Stats.open(port)
    try:
        await stats.wait("h1 ineligible", lambda s: s["members"]["h1"]["state"] == "ineligible"
                         and s["healthy"] == ["w1"])
        await conn.order("vnf", "active", 1)
        await stats.member_state("h1", "healthy")
        load = await run_load(port, duration_s=0.1)
        assert load.unanswered == [] and load.members_after(0) == {"w1", "h1"}
        assert (await stats.get())["retried"] == 0
    finally:
        stats.close()
