"""Member failures behind the LB (IF-2): a crashed member and a hung one are excluded
within the detection time, their requests retried elsewhere, and they are included
again when they answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import pytest
from lb_testutil import LOOPBACK, Members, Start, Stats, free_port, lb_argv, run_load

ALL = ["w1", "w2", "w3"]
EXCLUSION_BOUND_S = 0.200  # detection is 3 x 10 ms; the rest is margin for a busy host


@pytest.mark.req("IF-2")
async def test_member_crash_under_load_loses_under_one_percent(
        start: Start, members: Members) -> None:
    port = free_port()
    lb = await start(lb_argv("lb1", port, members.ports))
    stats = await Stats.open(port)
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        victim = members.procs["w2"].proc
        killed_at: list[float] = []

        def crash() -> None:
            os.kill(victim.pid, signal.SIGKILL)  # a member we started, by its pid
            killed_at.append(time.monotonic())

        load = await run_load(port, period_s=0.002, duration_s=2.0, events={0.5: crash})
        assert len(load.sent) > 700  # about 1000 at 2 ms
        lost = load.unanswered
        assert len(lost) < 0.01 * len(load.sent), (len(lost), len(load.sent))
        assert load.other == []
        # Spread before the crash; nothing reached w2 once it was excluded.
        assert load.members_after(0) == set(ALL)
        assert load.members_after(killed_at[0] + EXCLUSION_BOUND_S) == {"w1", "w3"}
        s = await stats.get()
        assert s["members"]["w2"]["state"] == "excluded"
        assert s["excluded_count"] == 1
        await lb.wait_line("member w2 excluded")
    finally:
        stats.close()


@pytest.mark.req("IF-2")
async def test_crashed_member_excluded_within_bound_and_included_after_restart(
        start: Start, members: Members) -> None:
    port = free_port()
    await start(lb_argv("lb1", port, members.ports, "--check-interval-ms", "10",
                        "--check-misses", "3"))
    stats = await Stats.open(port)
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        await members.procs["w2"].kill()  # SIGKILL by pid, and reaped
        killed = time.monotonic()
        # No traffic: only the health checks can notice.
        s = await stats.member_state("w2", "excluded", within_s=2.0)
        excluded_after = time.monotonic() - killed
        assert excluded_after < EXCLUSION_BOUND_S, excluded_after
        assert s["healthy"] == ["w1", "w3"]

        await members.run("w2")  # the same port
        restarted = time.monotonic()
        s = await stats.member_state("w2", "healthy", within_s=2.0)
        assert time.monotonic() - restarted < EXCLUSION_BOUND_S
        assert s["members"]["w2"]["excluded_count"] == 1
        load = await run_load(port, duration_s=0.1)
        assert load.unanswered == [] and "w2" in load.members_after(0)
    finally:
        stats.close()


@pytest.mark.req("IF-2")
async def test_hung_member_times_out_and_its_requests_are_retried(
        start: Start, members: Members) -> None:
    # SIGSTOP: no ICMP, no closed socket - only silence, as with a hung VM.
    port = free_port()
    await start(lb_argv("lb1", port, members.ports))
    stats = await Stats.open(port)
    victim = members.procs["w2"].proc
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        stopped_at: list[float] = []

        def hang() -> None:
            os.kill(victim.pid, signal.SIGSTOP)
            stopped_at.append(time.monotonic())

        load = await run_load(port, duration_s=1.0, events={0.3: hang})
        lost = load.unanswered
        assert len(lost) < 0.01 * len(load.sent), (len(lost), len(load.sent))
        assert load.members_after(stopped_at[0] + EXCLUSION_BOUND_S) == {"w1", "w3"}
        s = await stats.get()
        assert s["members"]["w2"]["state"] == "excluded"
        assert s["retried"] >= 1  # what w2 held when it hung was answered by others

        os.kill(victim.pid, signal.SIGCONT)
        await stats.member_state("w2", "healthy", within_s=2.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGCONT)
        stats.close()


async def test_retry_idempotent_does_not_resend_inc(start: Start, members: Members) -> None:
    port = free_port()
    await start(lb_argv("lb1", port, members.ports, "--retry", "idempotent"))
    stats = await Stats.open(port)
    victim = members.procs["w2"].proc
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        load = await run_load(port, duration_s=0.6,
                              events={0.2: lambda: os.kill(victim.pid, signal.SIGSTOP)})
        s = await stats.get()
        assert s["members"]["w2"]["state"] == "excluded"
        # The INCs w2 held when it hung may have been counted: not sent again.
        assert s["retried"] == 0
        assert len(load.unanswered) == s["failed"] >= 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim.pid, signal.SIGCONT)
        stats.close()


async def test_tcp_connections_to_an_excluded_member_are_closed(
        start: Start, members: Members) -> None:
    port = free_port()
    await start(lb_argv("lb1", port, members.ports))
    stats = await Stats.open(port)
    reader, writer = None, None
    victim = None
    try:
        await stats.wait("all healthy", lambda s: s["healthy"] == ALL)
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"PING\n")
        name = (await asyncio.wait_for(reader.readline(), 2.0)).decode().split()[1]
        victim = members.procs[name].proc
        os.kill(victim.pid, signal.SIGSTOP)  # hung: its TCP stays open, only the LB acts
        stopped = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 2.0) == b""
        assert time.monotonic() - stopped < EXCLUSION_BOUND_S
        assert (await stats.get())["members"][name]["state"] == "excluded"
    finally:
        if victim is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim.pid, signal.SIGCONT)
        if writer is not None:
            writer.close()
        stats.close()
