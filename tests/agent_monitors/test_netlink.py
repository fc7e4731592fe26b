"""LinkMonitor: netlink parsing (unit) and link events inside a throwaway namespace."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from nfvha.agent.netlink import (
    IFF_LOWER_UP,
    IFF_UP,
    IFLA_IFNAME,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_NEWLINK,
    IfInfo,
    LinkMonitor,
    NetlinkError,
    build_getlink_dump,
    link_state,
    parse_errno,
    parse_ifinfo,
    parse_messages,
)
from nfvha.util.runpaths import RunPaths, new_run_id

PROBE = Path(__file__).with_name("netlink_probe.py")
DEADLINE_S = 10.0

# -- unit: message parsing -------------------------------------------------------------


def _nlmsg(mtype: int, payload: bytes, *, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, pid) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _ifinfo(index: int, flags: int, name: str | None, family: int = 0) -> bytes:
    body = struct.pack("=BxHiII", family, 1, index, flags, 0xFFFFFFFF)
    if name is not None:
        value = name.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(value), IFLA_IFNAME) + value
        body += attr + b"\0" * (-len(attr) % 4)
    # an unrelated attribute after the name (IFLA_MTU = 4)
    return body + struct.pack("=HHI", 8, 4, 1500)


def test_parse_multi_message_datagram() -> None:
    datagram = (
        _nlmsg(RTM_NEWLINK, _ifinfo(2, IFF_UP | IFF_LOWER_UP, "veth0"), flags=NLM_F_MULTI, seq=7)
        + _nlmsg(RTM_NEWLINK, _ifinfo(3, IFF_UP, "eth12345"), flags=NLM_F_MULTI, seq=7)
        + _nlmsg(NLMSG_DONE, struct.pack("=i", 0), flags=NLM_F_MULTI, seq=7)
    )
    msgs = list(parse_messages(datagram))
    assert [m.type for m in msgs] == [RTM_NEWLINK, RTM_NEWLINK, NLMSG_DONE]
    assert all(m.seq == 7 for m in msgs)
    first, second = (parse_ifinfo(m.payload) for m in msgs[:2])
    assert first == IfInfo(family=0, index=2, flags=IFF_UP | IFF_LOWER_UP, ifname="veth0")
    assert second.ifname == "eth12345"
    assert link_state(first, "veth0").oper_up
    carrierless = link_state(second, "eth12345")
    assert carrierless.admin_up and not carrierless.oper_up
    # IFF_LOWER_UP without IFF_UP is not "oper up" (the kernel clears it anyway)
    assert not link_state(IfInfo(0, 5, IFF_LOWER_UP, "x"), "x").oper_up
    assert parse_errno(msgs[2].payload) == 0


def test_parse_error_message_and_truncation() -> None:
    err = _nlmsg(NLMSG_ERROR, struct.pack("=i", -16) + _nlmsg(18, b"\0" * 16)[:16])
    (msg,) = parse_messages(err)
    assert msg.type == NLMSG_ERROR and parse_errno(msg.payload) == -16
    with pytest.raises(NetlinkError):
        list(parse_messages(err[:-4]))  # nlmsg_len claims 4 bytes more than there are
    bad_len = struct.pack("=IHHII", 999, RTM_NEWLINK, 0, 0, 0)
    with pytest.raises(NetlinkError):
        list(parse_messages(bad_len))
    with pytest.raises(NetlinkError):
        parse_ifinfo(b"\0" * 8)
    broken_attr = struct.pack("=BxHiII", 0, 1, 2, 0, 0) + struct.pack("=HH", 40, IFLA_IFNAME)
    with pytest.raises(NetlinkError):
        parse_ifinfo(broken_attr)
    assert parse_ifinfo(struct.pack("=BxHiII", 0, 1, 2, 0, 0)).ifname is None


def test_getlink_dump_request_layout() -> None:
    req = build_getlink_dump(42)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, mtype, seq, pid) == (len(req), 18, 42, 0)
    assert flags & 0x1 and flags & 0x300 == 0x300


# -- testbed: real netlink in a throwaway namespace --------------------------------------


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {err.decode().strip()}")


class Probe:
    """The netlink_probe.py process and its JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[dict[str, Any]] = []
        self._matched: set[int] = set()  # lines already returned by wait_for

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], within_s: float = DEADLINE_S
    ) -> dict[str, Any]:
        """The first line not returned before that matches ``pred`` (lines that arrived
        while waiting for something else count: the kernel does not order notifications
        of different links)."""
        assert self.proc.stdout is not None
        for i, earlier in enumerate(self.seen):
            if i not in self._matched and pred(earlier):
                self._matched.add(i)
                return earlier
        deadline = time.monotonic() + within_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {within_s} s; saw {self.seen}")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not raw:
                err = b""
                if self.proc.stderr is not None:
                    err = await self.proc.stderr.read()
                raise AssertionError(f"probe exited; saw {self.seen}; stderr: {err.decode()}")
            msg: dict[str, Any] = json.loads(raw)
            self.seen.append(msg)
            if pred(msg):
                self._matched.add(len(self.seen) - 1)
                return msg

    async def state(self) -> dict[str, Any]:
        await self.send("state")
        return await self.wait_for(lambda m: "state" in m)


def _change(ifname: str, admin: bool, oper: bool) -> Callable[[dict[str, Any]], bool]:
    def pred(msg: dict[str, Any]) -> bool:
        ch = msg.get("change")
        if ch is None:
            return False
        new = ch["new"]
        return bool(new["ifname"] == ifname and (new["admin_up"], new["oper_up"]) == (admin, oper))

    return pred


def _flags(state: dict[str, Any]) -> tuple[bool, bool]:
    return state["admin_up"], state["oper_up"]


@pytest.fixture
async def netns() -> AsyncIterator[str]:
    """A namespace nfvha-<run>-nl with a veth pair va/vb, both up."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = f"{RunPaths(new_run_id()).tag}-nl"
    await _run("ip", "netns", "add", name)
    try:
        await _run("ip", "-n", name, "link", "add", "va", "type", "veth", "peer", "name", "vb")
        await _run("ip", "-n", name, "link", "set", "va", "up")
        await _run("ip", "-n", name, "link", "set", "vb", "up")
        yield name
    finally:
        await _run("ip", "netns", "del", name)


async def _start_probe(ns: str, *extra: str) -> Probe:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PROBE),
        ns,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return Probe(proc)


async def _stop_probe(probe: Probe) -> None:
    if probe.proc.returncode is None:
        probe.proc.kill()  # the pid we started
    await probe.proc.wait()


@pytest.fixture
async def probe_factory(netns: str) -> AsyncIterator[Callable[..., Any]]:
    probes: list[Probe] = []

    async def start(*extra: str) -> Probe:
        probe = await _start_probe(netns, *extra)
        probes.append(probe)
        return probe

    try:
        yield start
    finally:
        for probe in probes:
            await _stop_probe(probe)


async def _wait_carrier(ns: str, probe: Probe, names: tuple[str, ...]) -> dict[str, Any]:
    """The ready snapshot, once the veths' carrier (linkwatch) has settled to up."""
    ready = await probe.wait_for(lambda m: "ready" in m)
    snap: dict[str, Any] = ready["ready"]
    for name in names:
        if not snap[name]["oper_up"]:
            await probe.wait_for(_change(name, True, True))
    return snap


@pytest.mark.testbed
async def test_snapshot_and_link_down_up_events(
    netns: str, probe_factory: Callable[..., Any]
) -> None:
    probe: Probe = await probe_factory()
    snap = await _wait_carrier(netns, probe, ("va", "vb"))
    assert set(snap) == {"va", "vb"}  # lo is not watched by default
    assert snap["va"]["index"] != snap["vb"]["index"]

    before = time.monotonic_ns()
    await _run("ip", "-n", netns, "link", "set", "va", "down")
    down = await probe.wait_for(_change("va", False, False))
    assert _flags(down["change"]["old"]) == (True, True)
    assert down["change"]["mono_ns"] >= before  # one CLOCK_MONOTONIC for all processes
    # the peer stays admin up but loses its carrier
    await probe.wait_for(_change("vb", True, False))

    await _run("ip", "-n", netns, "link", "set", "va", "up")
    await probe.wait_for(_change("va", True, True))
    await probe.wait_for(_change("vb", True, True))
    state = await probe.state()
    assert {n: _flags(s) for n, s in state["state"].items()} == {
        "va": (True, True),
        "vb": (True, True),
    }
    # every reported change really changed admin/oper state
    for msg in probe.seen:
        ch = msg.get("change")
        if ch is not None and ch["old"] is not None:
            assert _flags(ch["old"]) != _flags(ch["new"])


@pytest.mark.testbed
async def test_new_and_deleted_links(netns: str, probe_factory: Callable[..., Any]) -> None:
    probe: Probe = await probe_factory()
    await _wait_carrier(netns, probe, ("va", "vb"))

    await _run("ip", "-n", netns, "link", "add", "vc", "type", "veth", "peer", "name", "vd")
    for name in ("vc", "vd"):
        created = await probe.wait_for(_change(name, False, False))
        assert created["change"]["old"] is None
        assert _flags(created["change"]["new"]) == (False, False)

    await _run("ip", "-n", netns, "link", "set", "vc", "up")
    await _run("ip", "-n", netns, "link", "set", "vd", "up")
    await probe.wait_for(_change("vc", True, True))
    await probe.wait_for(_change("vd", True, True))

    # deleting one end of a veth deletes both: two RTM_DELLINK
    await _run("ip", "-n", netns, "link", "del", "vc")
    for name in ("vc", "vd"):
        gone = await probe.wait_for(_change(name, False, False))
        assert gone["change"]["old"]["ifname"] == name
    state = await probe.state()
    assert set(state["state"]) == {"va", "vb"}


@pytest.mark.testbed
async def test_interface_filter(netns: str, probe_factory: Callable[..., Any]) -> None:
    probe: Probe = await probe_factory("--iface", "va")
    snap = await _wait_carrier(netns, probe, ("va",))
    assert set(snap) == {"va"}

    await _run("ip", "-n", netns, "link", "set", "vb", "down")
    await probe.wait_for(_change("va", True, False))  # carrier lost via the peer
    # a later event on the same socket proves the vb notifications were already handled
    await _run("ip", "-n", netns, "link", "set", "va", "down")
    await probe.wait_for(_change("va", False, False))
    names = {m["change"]["new"]["ifname"] for m in probe.seen if "change" in m}
    assert names == {"va"}


@pytest.mark.testbed
async def test_bridge_port_messages_are_not_link_deletions(
    netns: str, probe_factory: Callable[..., Any]
) -> None:
    # Leaving a bridge sends an AF_BRIDGE RTM_DELLINK for the port on the same group.
    probe: Probe = await probe_factory()
    await _wait_carrier(netns, probe, ("va", "vb"))
    await _run("ip", "-n", netns, "link", "add", "nfvhabr0", "type", "bridge")
    await probe.wait_for(_change("nfvhabr0", False, False))
    await _run("ip", "-n", netns, "link", "set", "vb", "master", "nfvhabr0")
    await _run("ip", "-n", netns, "link", "set", "vb", "nomaster")
    await _run("ip", "-n", netns, "link", "set", "va", "down")  # a later sentinel event
    await probe.wait_for(_change("va", False, False))
    await probe.wait_for(_change("vb", True, False))
    vb_downs = [m for m in probe.seen if _change("vb", False, False)(m)]
    assert vb_downs == []
    assert _flags((await probe.state())["state"]["vb"]) == (True, False)


@pytest.mark.testbed
async def test_renamed_links(netns: str, probe_factory: Callable[..., Any]) -> None:
    watch_all: Probe = await probe_factory()
    only_vb: Probe = await probe_factory("--iface", "vb")
    await _wait_carrier(netns, watch_all, ("va", "vb"))
    await _wait_carrier(netns, only_vb, ("vb",))
    await _run("ip", "-n", netns, "link", "set", "vb", "down")  # a link is renamed down
    await watch_all.wait_for(_change("vb", False, False))
    await only_vb.wait_for(_change("vb", False, False))
    await _run("ip", "-n", netns, "link", "set", "vb", "name", "vbx")
    await _run("ip", "-n", netns, "link", "set", "vbx", "up")
    await watch_all.wait_for(_change("vbx", True, True))
    state = (await watch_all.state())["state"]
    assert set(state) == {"va", "vbx"}  # same index, new name
    # renamed out of the watched set: reported as gone (a second vb -> down/down) ...
    gone = await only_vb.wait_for(_change("vb", False, False))
    assert _flags(gone["change"]["old"]) == (False, False)
    # ... and renamed back into it: reported as new, which also proves that the vbx
    # events before it were seen and filtered out
    await _run("ip", "-n", netns, "link", "set", "vbx", "down")
    await _run("ip", "-n", netns, "link", "set", "vbx", "name", "vb")
    back = await only_vb.wait_for(lambda m: "change" in m and m["change"]["old"] is None)
    assert back["change"]["new"]["ifname"] == "vb"
    assert not any("vbx" in json.dumps(m) for m in only_vb.seen)


@pytest.mark.testbed
async def test_overrun_redumps_and_reports_differences(
    netns: str, probe_factory: Callable[..., Any]
) -> None:
    # the smallest receive buffer the kernel allows: a few notifications overflow it
    probe: Probe = await probe_factory("--rcvbuf", "1")
    await _wait_carrier(netns, probe, ("va", "vb"))
    dumps_before = (await probe.state())["dumps"]

    await probe.send("stall")
    await probe.wait_for(lambda m: "stalled" in m)
    for _ in range(10):
        await _run("ip", "-n", netns, "link", "set", "va", "down")
        await _run("ip", "-n", netns, "link", "set", "va", "up")
    await _run("ip", "-n", netns, "link", "set", "va", "down")
    await probe.send("resume")
    await probe.wait_for(lambda m: "resumed" in m)

    await probe.wait_for(_change("va", False, False))
    await probe.wait_for(_change("vb", True, False))
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the re-dump may still be running when the last change is printed
        state = await probe.state()
        flags = {n: _flags(s) for n, s in state["state"].items()}
        if state["overruns"] >= 1 and flags == {"va": (False, False), "vb": (True, False)}:
            break
        assert time.monotonic() < deadline, f"state did not converge: {state}"
        await probe.wait_for(lambda m: "change" in m, within_s=deadline - time.monotonic())
    assert state["dumps"] > dumps_before


async def test_monitor_in_current_namespace_starts_and_closes() -> None:
    """Read-only: the initial dump in this process's own namespace (needs no root)."""
    monitor = LinkMonitor()
    async with monitor:
        snap = monitor.snapshot()
        assert "lo" not in snap
        assert all(name == s.ifname and s.index > 0 for name, s in snap.items())
        assert monitor.dumps == 1
        changes = monitor.changes()
    # close() ends the change stream instead of leaving a consumer hanging
    assert [c async for c in changes] == []
    with pytest.raises(RuntimeError):
        await monitor.start()  # a monitor is not restartable


async def test_lo_is_watched_when_named() -> None:
    async with LinkMonitor({"lo"}) as monitor:
        assert set(monitor.snapshot()) == {"lo"}
        lo = monitor.snapshot()["lo"]
        assert lo.index == 1
