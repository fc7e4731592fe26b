"""The counter sample as an AM-managed component (real processes, fake AM, loopback):
only an active serves; the lease; state kept across a failover by direct sync (IF-3)
and by checkpoints."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest
from amf_sdk_testutil import (
    LOOPBACK,
    FakeAM,
    StartCounter,
    counter_argv,
    free_port,
    peer,
    udp_ask,
)


async def test_only_the_active_serves(am: FakeAM, start_counter: StartCounter) -> None:
    port = free_port()
    await start_counter(counter_argv("gw-a", port, am.endpoint))
    conn = await am.accept()
    assert conn.register["component"] == "gw-a"
    assert await udp_ask(LOOPBACK, port, "PING") == "PONG gw-a"
    assert await udp_ask(LOOPBACK, port, "INC s") == "ERR not-active unassigned"

    assert (await conn.order("gw", "active", 1))["op"] == "assigned"
    # "assigned active" means serving: no retry needed.
    assert await udp_ask(LOOPBACK, port, "INC s", retry_s=1.0) == "OK s 1 gw-a"
    assert await udp_ask(LOOPBACK, port, "INC s") == "OK s 2 gw-a"

    assert (await conn.order("gw", "standby", 2))["op"] == "assigned"
    assert await udp_ask(LOOPBACK, port, "GET s") == "ERR not-active standby"
    assert (await conn.order("gw", "active", 1))["op"] == "refused"
    assert await udp_ask(LOOPBACK, port, "GET s") == "ERR not-active standby"
    assert (await conn.order("gw", "quiesced", 3))["op"] == "assigned"
    assert await udp_ask(LOOPBACK, port, "GET s") == "ERR not-active quiesced"
    assert await udp_ask(LOOPBACK, port, "PING") == "PONG gw-a"


async def test_tcp_is_gated_the_same_way(am: FakeAM, start_counter: StartCounter) -> None:
    port = free_port()
    await start_counter(counter_argv("gw-a", port, am.endpoint))
    conn = await am.accept()
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(b"INC t\n")
        assert await reader.readline() == b"ERR not-active unassigned\n"
        await conn.order("gw", "active", 1)
        writer.write(b"INC t\nGET t\n")
        assert await reader.readline() == b"OK t 1 gw-a\n"
        assert await reader.readline() == b"VAL t 1 gw-a\n"
    finally:
        writer.close()


async def test_lease_expiry_stops_serving(start_counter: StartCounter) -> None:
    am = await FakeAM(lease_ms=300, ping_interval_ms=50).start()
    try:
        port = free_port()
        await start_counter(counter_argv("gw-a", port, am.endpoint))
        conn = await am.accept()
        await conn.order("gw", "active", 4)
        assert await udp_ask(LOOPBACK, port, "INC s") == "OK s 1 gw-a"
        am.grant_leases = False  # the AM goes silent
        sent = time.monotonic()  # the last grant answered a request sent before this
        while (reply := await udp_ask(LOOPBACK, port, "GET s")) == "VAL s 1 gw-a":
            assert time.monotonic() - sent < 2.0, "still serving long after the lease"
            await asyncio.sleep(0.01)
        stopped = time.monotonic() - sent
        assert reply == "ERR not-active quiesced"
        # Never later than a lease after the last grant (plus scheduling slack); the
        # earliest it can stop is a lease after that grant's request was sent.
        assert stopped < 2.0, stopped
    finally:
        await am.stop()


async def test_grants_word_reports_how_late_the_lease_grants_came(
        am: FakeAM, start_counter: StartCounter) -> None:
    port = free_port()
    await start_counter(counter_argv("gw-a", port, am.endpoint))
    conn = await am.accept()
    await conn.wait_leases(2)
    word, late_ms, grants, name = (await udp_ask(LOOPBACK, port, "GRANTS RESET")).split()
    assert (word, name) == ("GRANTS", "gw-a") and float(late_ms) >= 0 and int(grants) >= 1
    conn.silent = True  # the AM answers no lease request for a while
    silent_since = time.monotonic()
    await conn.wait_leases(conn.leases + 3)  # 3 ping intervals of 200 ms unanswered
    granted_before = int((await udp_ask(LOOPBACK, port, "GRANTS")).split()[2])
    unanswered_s = time.monotonic() - silent_since
    conn.silent = False
    deadline = time.monotonic() + 5.0
    while int((reply := await udp_ask(LOOPBACK, port, "GRANTS")).split()[2]) == granted_before:
        assert time.monotonic() < deadline, "no grant after the AM answered again"
        await asyncio.sleep(0.02)
    # From the first unanswered request (sent within one interval of going silent).
    assert float(reply.split()[1]) >= (unanswered_s - 0.2) * 1000, (reply, unanswered_s)
    assert await udp_ask(LOOPBACK, port, "GRANTS now") == "ERR usage: GRANTS [RESET]"


@pytest.mark.req("IF-3")
async def test_sync_standby_has_every_acknowledged_change_after_a_crash(
        am: FakeAM, start_counter: StartCounter) -> None:
    pa, pb, sa, sb = free_port(), free_port(), free_port(), free_port()
    a = await start_counter(counter_argv("gw-a", pa, am.endpoint, state="sync", sync_port=sa))
    conn_a = await am.accept()
    await start_counter(counter_argv("gw-b", pb, am.endpoint, state="sync", sync_port=sb))
    conn_b = await am.accept()
    assert (await conn_b.order("gw", "standby", 1, peer=peer("gw-a", sa)))["op"] == "assigned"
    assert (await conn_a.order("gw", "active", 1, peer=peer("gw-b", sb)))["op"] == "assigned"
    for n in range(1, 6):
        assert await udp_ask(LOOPBACK, pa, "INC alice") == f"OK alice {n} gw-a"
    assert await udp_ask(LOOPBACK, pa, "INC bob") == "OK bob 1 gw-a"
    await a.wait_line("sync gw to gw-b up")
    assert await udp_ask(LOOPBACK, pa, "SYNC") == "SYNC up"  # what the scenarios wait for
    assert await udp_ask(LOOPBACK, pb, "SYNC") == "SYNC none"  # a standby syncs nothing

    await a.kill()  # no goodbye: what the standby has is all there is
    assert (await conn_b.order("gw", "active", 2))["op"] == "assigned"
    assert await udp_ask(LOOPBACK, pb, "GET alice") == "VAL alice 5 gw-b"
    assert await udp_ask(LOOPBACK, pb, "GET bob") == "VAL bob 1 gw-b"
    assert await udp_ask(LOOPBACK, pb, "INC alice") == "OK alice 6 gw-b"


@pytest.mark.req("IF-3")
async def test_sync_switchover_and_back(am: FakeAM, start_counter: StartCounter) -> None:
    """A planned switchover: the old active becomes the standby and gets the state back."""
    pa, pb, sa, sb = free_port(), free_port(), free_port(), free_port()
    await start_counter(counter_argv("gw-a", pa, am.endpoint, state="sync", sync_port=sa))
    conn_a = await am.accept()
    await start_counter(counter_argv("gw-b", pb, am.endpoint, state="sync", sync_port=sb))
    conn_b = await am.accept()
    await conn_b.order("gw", "standby", 1, peer=peer("gw-a", sa))
    await conn_a.order("gw", "active", 1, peer=peer("gw-b", sb))
    assert await udp_ask(LOOPBACK, pa, "INC s") == "OK s 1 gw-a"
    await conn_a.order("gw", "quiesced", 2)
    await conn_b.order("gw", "active", 3, peer=peer("gw-a", sa))
    await conn_a.order("gw", "standby", 3, peer=peer("gw-b", sb))
    assert await udp_ask(LOOPBACK, pb, "INC s") == "OK s 2 gw-b"
    await conn_b.order("gw", "quiesced", 4)
    await conn_a.order("gw", "active", 5)
    assert await udp_ask(LOOPBACK, pa, "GET s") == "VAL s 2 gw-a"


@pytest.mark.req("IF-3")
async def test_sync_goes_on_degraded_and_resyncs_a_returning_standby(
        am: FakeAM, start_counter: StartCounter) -> None:
    pa, pb, sa, sb = free_port(), free_port(), free_port(), free_port()
    a = await start_counter(counter_argv("gw-a", pa, am.endpoint, state="sync", sync_port=sa))
    conn_a = await am.accept()
    # The standby named in the order is not running: serve anyway.
    await conn_a.order("gw", "active", 1, peer=peer("gw-b", sb))
    for n in range(1, 4):
        assert await udp_ask(LOOPBACK, pa, "INC s") == f"OK s {n} gw-a"
    await a.wait_line("degraded")

    await start_counter(counter_argv("gw-b", pb, am.endpoint, state="sync", sync_port=sb))
    conn_b = await am.accept()
    await conn_b.order("gw", "standby", 1, peer=peer("gw-a", sa))
    await a.wait_line("sync gw to gw-b up (1 sessions)")  # the full snapshot
    assert await udp_ask(LOOPBACK, pa, "INC s") == "OK s 4 gw-a"

    await a.kill()
    await conn_b.order("gw", "active", 2)
    assert await udp_ask(LOOPBACK, pb, "GET s") == "VAL s 4 gw-b"


class SlowStandby:
    """A standby's sync port that acknowledges the first message (the snapshot) only
    when told to, then everything at once; it keeps what it was sent."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.release = asyncio.Event()
        self.snapshot_seen = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()  # hello
            while line := await reader.readline():
                message = json.loads(line)
                if message["op"] == "snapshot":
                    self.counters = dict(message["counters"])
                    self.snapshot_seen.set()
                    await self.release.wait()
                elif message["op"] == "set":
                    self.counters[message["session"]] = message["value"]
                writer.write(json.dumps({"op": "ack", "seq": message["seq"]}).encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.req("IF-3")
async def test_a_joining_standby_does_not_hold_the_answers_and_gets_what_changed_meanwhile(
        am: FakeAM, start_counter: StartCounter) -> None:
    """A standby that has just started may take a while to take the snapshot: the
    active answers meanwhile (the standby protects nothing yet), then sends it the
    sessions changed since; only then is the pair in sync."""
    standby = SlowStandby()
    sb = await standby.start()
    try:
        pa, sa = free_port(), free_port()
        a = await start_counter(counter_argv("gw-a", pa, am.endpoint, state="sync",
                                             sync_port=sa))
        conn_a = await am.accept()
        assert (await conn_a.order("gw", "active", 1))["op"] == "assigned"
        assert await udp_ask(LOOPBACK, pa, "INC s") == "OK s 1 gw-a"
        await conn_a.order("gw", "active", 2, peer=peer("gw-b", sb))
        await asyncio.wait_for(standby.snapshot_seen.wait(), 5)
        # The snapshot is not acknowledged: the answers go on regardless.
        for n in range(2, 5):
            assert await udp_ask(LOOPBACK, pa, "INC s", retry_s=10) == f"OK s {n} gw-a"
        assert await udp_ask(LOOPBACK, pa, "INC t", retry_s=10) == "OK t 1 gw-a"
        assert await udp_ask(LOOPBACK, pa, "SYNC") == "SYNC degraded"
        assert standby.counters == {"s": 1}
        standby.release.set()
        await a.wait_line("sync gw to gw-b up")
        assert standby.counters == {"s": 4, "t": 1}
        assert await udp_ask(LOOPBACK, pa, "SYNC") == "SYNC up"
        assert await udp_ask(LOOPBACK, pa, "INC s", retry_s=10) == "OK s 5 gw-a"
        assert standby.counters == {"s": 5, "t": 1}  # in sync: acknowledged first
    finally:
        standby.close()


async def test_sync_standby_refuses_an_active_with_an_older_epoch(
        am: FakeAM, start_counter: StartCounter) -> None:
    pb, sb = free_port(), free_port()
    await start_counter(counter_argv("gw-b", pb, am.endpoint, state="sync", sync_port=sb))
    conn_b = await am.accept()
    await conn_b.order("gw", "standby", 5)
    reader, writer = await asyncio.open_connection(LOOPBACK, sb)
    try:
        writer.write(b'{"op":"hello","component":"gw-old","si":"gw","epoch":4}\n')
        assert b"reject" in await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def test_checkpoint_state_survives_into_a_new_process(
        am: FakeAM, start_counter: StartCounter) -> None:
    pa, pc = free_port(), free_port()
    a = await start_counter(counter_argv("gw-a", pa, am.endpoint, state="checkpoint"))
    conn_a = await am.accept()
    await conn_a.order("gw", "active", 1)
    for n in range(1, 4):
        assert await udp_ask(LOOPBACK, pa, "INC s") == f"OK s {n} gw-a"
    assert am.checkpoints == {"counters": {"s": 3}}

    await a.kill()
    await start_counter(counter_argv("gw-c", pc, am.endpoint, state="checkpoint"))
    conn_c = await am.accept()
    assert (await conn_c.order("gw", "active", 2))["op"] == "assigned"
    assert await udp_ask(LOOPBACK, pc, "GET s") == "VAL s 3 gw-c"


async def test_checkpoint_failure_is_an_error_not_a_count(
        am: FakeAM, start_counter: StartCounter) -> None:
    pa = free_port()
    await start_counter(counter_argv("gw-a", pa, am.endpoint, state="checkpoint"))
    conn_a = await am.accept()
    await conn_a.order("gw", "active", 1)
    assert await udp_ask(LOOPBACK, pa, "INC s") == "OK s 1 gw-a"
    am.checkpoint_error = "store unavailable"
    reply = await udp_ask(LOOPBACK, pa, "INC s", retry_s=3)
    assert reply == "ERR checkpoint-failed CheckpointError"
    assert await udp_ask(LOOPBACK, pa, "GET s") == "VAL s 1 gw-a"
    assert am.checkpoints == {"counters": {"s": 1}}


@pytest.mark.parametrize(("extra", "error"), [
    (["--am", "127.0.0.1:1", "--state", "sync"], "--state sync needs --sync-port"),
    (["--state", "checkpoint"], "need --am"),
])
async def test_bad_ha_flags_are_usage_errors(extra: list[str], error: str) -> None:
    argv = [sys.executable, "-m", "nfvha.samples.counter", "--name", "x", "--port", "1", *extra]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 2 and error in err.decode()
