"""The guest channel: heartbeat, state, events with acknowledgement, VNFC orders."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

import pytest
from guest_testutil import (
    GuestChannel,
    GuestLauncher,
    Message,
    read_json,
    udp_request,
    wait_until,
)

from nfvha.util.procs import read_stat


def _is_exit_of(name: str) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        return bool(message.get("kind") == "vnfc-exited" and message.get("vnfc") == name)

    return match


async def test_boot_starts_every_vnfc_as_a_child_of_the_guest(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    state = guest.vnfcs()
    assert set(state) == {"gw-a", "gw-b"}
    for name, record in state.items():
        assert record["state"] == "running"
        assert record["exit_status"] is None and record["exit_desc"] is None
        stat = read_stat(record["pid"])
        assert stat is not None
        assert stat.ppid == guest.proc.pid
        assert stat.start_ticks == record["start_ticks"]
        port = guest.ports[name]
        assert udp_request(port, b"PING") == f"PONG {name}".encode()


async def test_ping_is_answered_with_pong(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        for n in (1, 2, 3):
            await channel.send({"op": "ping", "n": n})
            assert await channel.recv() == {"op": "pong", "n": n}
    finally:
        await channel.close()


async def test_hello_returns_state_then_the_unacked_start_events(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        state, events = await channel.hello()
        assert state == {"op": "state", "vm": "vm1", "vnfcs": guest.vnfcs(), "booted": True}
        assert [e["seq"] for e in events] == [1, 2]
        for event in events:
            record = state["vnfcs"][event["vnfc"]]
            assert event["kind"] == "vnfc-started"
            assert event["pid"] == record["pid"]
            assert event["start_ticks"] == record["start_ticks"]
            assert isinstance(event["mono_ns"], int)
            assert event["mono_ns"] <= time.monotonic_ns()
    finally:
        await channel.close()


@pytest.mark.req("HV-2")
async def test_vnfc_crash_is_reported_within_100ms(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        state, events = await channel.hello()
        await channel.ack(events[-1]["seq"])
        pid = state["vnfcs"]["gw-a"]["pid"]

        killed_ns = time.monotonic_ns()
        os.kill(pid, signal.SIGKILL)
        event = await channel.recv(within_s=1.0)
        arrived_ns = time.monotonic_ns()

        assert event["op"] == "event" and event["kind"] == "vnfc-exited"
        assert event["vnfc"] == "gw-a" and event["pid"] == pid
        assert event["exit_desc"] == "killed by SIGKILL"
        assert os.WIFSIGNALED(event["exit_status"])
        assert os.WTERMSIG(event["exit_status"]) == signal.SIGKILL
        assert event["expected"] is False
        assert event["seq"] == events[-1]["seq"] + 1
        detected_ms = (event["mono_ns"] - killed_ns) / 1e6
        arrived_ms = (arrived_ns - killed_ns) / 1e6
        assert 0 <= detected_ms < 100, f"detected {detected_ms:.1f} ms after the kill"
        assert arrived_ms < 100, f"event arrived {arrived_ms:.1f} ms after the kill"

        record = guest.wait_vnfc_state("gw-a", "exited")
        assert record["pid"] == pid
        assert record["exit_status"] == event["exit_status"]
        assert record["exit_desc"] == "killed by SIGKILL"
    finally:
        await channel.close()


async def test_events_are_kept_while_no_client_and_resent_until_acked(
    guests: GuestLauncher,
) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    channel = await GuestChannel.connect(guest.socket_path)
    _, events = await channel.hello()
    await channel.ack(events[-1]["seq"])
    await channel.close()

    pid = guest.vnfcs()["gw-b"]["pid"]
    os.kill(pid, signal.SIGKILL)
    guest.wait_vnfc_state("gw-b", "exited")  # happened while nobody was connected

    for _attempt in range(2):  # re-sent on every new connection until acked
        channel = await GuestChannel.connect(guest.socket_path)
        state, events = await channel.hello()
        assert state["vnfcs"]["gw-b"]["state"] == "exited"
        assert len(events) == 1
        assert events[0]["kind"] == "vnfc-exited" and events[0]["pid"] == pid
        assert events[0]["seq"] == 3
        await channel.close()

    channel = await GuestChannel.connect(guest.socket_path)
    try:
        await channel.ack(3)
    finally:
        await channel.close()
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        _, events = await channel.hello()
        assert events == []
    finally:
        await channel.close()


async def test_a_new_connection_replaces_the_previous_one(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a"])
    first = await GuestChannel.connect(guest.socket_path)
    second = await GuestChannel.connect(guest.socket_path)
    try:
        await second.send({"op": "ping", "n": 9})
        assert await second.recv() == {"op": "pong", "n": 9}
        with pytest.raises((EOFError, ConnectionError)):
            await first.recv()
        # Events now go to the new client only.
        os.kill(guest.vnfcs()["gw-a"]["pid"], signal.SIGKILL)
        event = await second.recv_until(_is_exit_of("gw-a"))
        assert event["exit_desc"] == "killed by SIGKILL"
    finally:
        await first.close()
        await second.close()


async def test_vnfc_start_restarts_an_exited_vnfc_with_fresh_state(
    guests: GuestLauncher,
) -> None:
    guest = guests.start(["gw-a"])
    port = guest.ports["gw-a"]
    assert udp_request(port, b"INC s") == b"OK s 1 gw-a"
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        await channel.hello()
        old_pid = guest.vnfcs()["gw-a"]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        await channel.recv_until(_is_exit_of("gw-a"))

        await channel.send({"op": "vnfc-start", "name": "gw-a"})
        started = await channel.recv_until(lambda m: m.get("kind") == "vnfc-started")
        assert started["vnfc"] == "gw-a" and started["pid"] != old_pid
        record = guest.wait_vnfc_state("gw-a", "running")
        assert record["pid"] == started["pid"]
        assert record["start_ticks"] == started["start_ticks"]
        assert record["exit_status"] is None
        assert udp_request(port, b"GET s") == b"VAL s 0 gw-a"  # a restart loses state

        # Starting a running VNFC is a no-op: no event, no error.
        await channel.send({"op": "vnfc-start", "name": "gw-a"})
        await channel.send({"op": "ping", "n": 5})
        assert await channel.recv() == {"op": "pong", "n": 5}
        assert guest.vnfcs()["gw-a"]["pid"] == started["pid"]
    finally:
        await channel.close()


@pytest.mark.parametrize(
    ("signal_name", "desc"), [("TERM", "exit 0"), ("KILL", "killed by SIGKILL")]
)
async def test_vnfc_stop_is_reported_as_expected(
    guests: GuestLauncher, signal_name: str, desc: str
) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        await channel.hello()
        pid = guest.vnfcs()["gw-a"]["pid"]
        # Serving means its SIGTERM handler is installed (before that, TERM kills it).
        assert udp_request(guest.ports["gw-a"], b"PING") == b"PONG gw-a"
        await channel.send({"op": "vnfc-stop", "name": "gw-a", "signal": signal_name})
        event = await channel.recv_until(_is_exit_of("gw-a"))
        assert event["pid"] == pid
        assert event["expected"] is True
        assert event["exit_desc"] == desc  # the counter exits 0 on SIGTERM
        record = guest.wait_vnfc_state("gw-a", "stopped")
        assert record["exit_desc"] == desc
        assert guest.vnfcs()["gw-b"]["state"] == "running"
        # Stopping a stopped VNFC is a no-op.
        await channel.send({"op": "vnfc-stop", "name": "gw-a"})
        await channel.send({"op": "ping", "n": 1})
        assert await channel.recv() == {"op": "pong", "n": 1}
    finally:
        await channel.close()


async def test_bad_requests_get_an_error_and_the_channel_keeps_working(
    guests: GuestLauncher,
) -> None:
    guest = guests.start(["gw-a"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        for request in (
            b'{"op": "reboot"}\n',
            b"not json\n",
            b"[1, 2]\n",
            b'{"op": "vnfc-start", "name": "nope"}\n',
            b'{"op": "vnfc-stop", "name": "gw-a", "signal": "HUP"}\n',
            b'{"op": "ack", "seq": "x"}\n',
        ):
            await channel.send_raw(request)
            reply = await channel.recv()
            assert reply["op"] == "error", request
            assert isinstance(reply["reason"], str) and reply["reason"], request
        await channel.send({"op": "ping", "n": 2})
        assert await channel.recv() == {"op": "pong", "n": 2}
        assert guest.vnfcs()["gw-a"]["state"] == "running"
    finally:
        await channel.close()


async def test_a_vnfc_that_cannot_start_is_reported_exited(guests: GuestLauncher) -> None:
    missing = str(guests.workdir / "no-such-program")
    guest = guests.start(["gw-a"], extra=[{"name": "broken", "argv": [missing], "env": None}])
    record = guest.wait_vnfc_state("broken", "exited")
    assert record["pid"] is None
    assert record["exit_desc"].startswith("start failed:")
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        _, events = await channel.hello()
        failed = [e for e in events if e["vnfc"] == "broken"]
        assert len(failed) == 1
        assert failed[0]["kind"] == "vnfc-exited" and failed[0]["expected"] is False
        assert failed[0]["exit_status"] == 255 << 8
        # The guest and its other VNFCs are unaffected.
        assert guest.vnfcs()["gw-a"]["state"] == "running"
    finally:
        await channel.close()


async def test_vnfc_env_is_laid_over_the_guest_environment(guests: GuestLauncher) -> None:
    out = guests.workdir / "env.out"
    script = (
        "import os, sys, time\n"
        f"open({str(out)!r}, 'w').write(os.environ['NFVHA_TEST_VAR'] + ' ' + "
        "str('PATH' in os.environ) + ' ' + os.getcwd())\n"
        "time.sleep(60)\n"
    )
    guest = guests.start(
        [],
        extra=[
            {
                "name": "envy",
                "argv": [sys.executable, "-c", script],
                "env": {"NFVHA_TEST_VAR": "hello"},
            }
        ],
    )
    guest.wait_vnfc_state("envy", "running")
    wait_until(lambda: out.exists() and bool(out.read_text()), 5.0, "the VNFC's output")
    assert out.read_text() == f"hello True {guest.vm_dir}"


async def test_state_file_matches_the_state_message(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a"])
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        state, _ = await channel.hello()
        assert state["vnfcs"] == read_json(guest.vm_dir / "vnfcs.json")
    finally:
        await channel.close()
