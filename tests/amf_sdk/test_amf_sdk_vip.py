"""VIP takeover (IF-1) between network namespaces: two VNFC namespaces and a client
namespace on one bridge, in 198.18.0.0/15, no default route, removed afterwards.

The client namespace also hosts the fake AM and the probe; their sockets are made by
a short-lived thread that entered the namespace (setns acts on one thread only), then
used from the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from amf_sdk_testutil import (
    CounterProc,
    FakeAM,
    UdpClient,
    counter_argv,
    in_netns,
    ip,
    peer,
)

from nfvha.testbed.deploy import namespaces_available

pytestmark = pytest.mark.testbed
PORT, SYNC_PORT = 7000, 7001


@dataclass
class Lan:
    """Namespaces ``a`` and ``b`` (the VNFCs, eth0) and ``c`` (client, bridge br0)."""

    prefix: str
    net: str  # the first three octets

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def addr(self, role: str) -> str:
        return f"{self.net}.{ {'a': 1, 'b': 2, 'c': 3}[role]}"

    @property
    def vip(self) -> str:
        return f"{self.net}.200/24"

    @property
    def vip_ip(self) -> str:
        return f"{self.net}.200"

    def mac(self, role: str) -> str:
        dev = "br0" if role == "c" else "eth0"
        return str(json.loads(ip("-n", self.ns(role), "-j", "link", "show", dev))[0]["address"])

    def neigh_mac(self, addr: str) -> str | None:
        """The client's neighbour entry for ``addr``: its MAC, or None."""
        for entry in json.loads(ip("-n", self.ns("c"), "-j", "neigh", "show", addr)):
            if "lladdr" in entry:
                return str(entry["lladdr"])
        return None

    def exec_prefix(self, role: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns(role))


def _teardown(prefix: str) -> None:
    for role in ("a", "b", "c"):
        subprocess.run(["ip", "netns", "del", f"{prefix}-{role}"], capture_output=True,
                       timeout=10)


@pytest.fixture
def lan() -> Iterator[Lan]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    prefix = f"nfvha-{secrets.token_hex(3)}"
    net = f"198.18.{secrets.randbelow(254) + 1}"
    lan = Lan(prefix, net)
    try:
        for role in ("a", "b", "c"):
            ip("netns", "add", lan.ns(role))
            ip("-n", lan.ns(role), "link", "set", "lo", "up")
        c = lan.ns("c")
        ip("-n", c, "link", "add", "br0", "type", "bridge")
        ip("-n", c, "link", "set", "br0", "up")
        ip("-n", c, "addr", "add", f"{lan.addr('c')}/24", "dev", "br0")
        for role in ("a", "b"):
            ip("-n", c, "link", "add", f"v{role}", "type", "veth", "peer", "name", "eth0",
               "netns", lan.ns(role))
            ip("-n", c, "link", "set", f"v{role}", "master", "br0", "up")
            ip("-n", lan.ns(role), "link", "set", "eth0", "up")
            ip("-n", lan.ns(role), "addr", "add", f"{lan.addr(role)}/24", "dev", "eth0")
        yield lan
    finally:
        _teardown(prefix)
        left = [n for n in ip("netns", "list").split() if n.startswith(prefix)]
        assert not left, f"left behind: {left}"



def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(lan: Lan, dst: str, timeout_s: float = 1.0) -> bool:
    """One ICMP echo from the client namespace; True if ``dst`` answered."""

    def echo() -> bool:
        ident = secrets.randbelow(0xFFFF)
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
        payload = b"nfvha-vip"
        packet = struct.pack("!BBHHH", 8, 0, _icmp_checksum(header + payload), ident, 1)
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            s.settimeout(timeout_s)
            s.sendto(packet + payload, (dst, 0))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    data, (src, _) = s.recvfrom(2048)
                except TimeoutError:
                    return False
                icmp = data[(data[0] & 0x0F) * 4:]
                if src == dst and icmp[0] == 0 and struct.unpack("!H", icmp[4:6])[0] == ident:
                    return True
        return False

    return in_netns(lan.ns("c"), echo)


async def vip_cli(lan: Lan, role: str, action: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *lan.exec_prefix(role), sys.executable, "-m", "nfvha.amf.vip", action, lan.vip,
        "--ifname", "eth0", stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


def packet_sockets(pid: int) -> set[str]:
    """The inodes of the AF_PACKET sockets ``pid`` holds (in its network namespace)."""
    with open(f"/proc/{pid}/net/packet") as f:
        packet = {line.split()[-1] for line in f.readlines()[1:] if line.strip()}
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                held.add(link[len("socket:["):-1])
    return held & packet


async def wait_no_packet_socket(pid: int, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while held := packet_sockets(pid):
        assert time.monotonic() < deadline, f"pid {pid} still holds packet sockets {held}"
        await asyncio.sleep(0.01)


async def wait_neigh(lan: Lan, mac: str, within_s: float) -> float:
    """Seconds until the client's ARP entry for the VIP is ``mac``."""
    started = time.monotonic()
    while lan.neigh_mac(lan.vip_ip) != mac:
        if time.monotonic() - started > within_s:
            raise AssertionError(f"VIP still at {lan.neigh_mac(lan.vip_ip)}, not {mac}")
        await asyncio.sleep(0.005)
    return time.monotonic() - started


@pytest.mark.req("IF-1")
async def test_vip_moves_between_namespaces_with_gratuitous_arp(lan: Lan) -> None:
    mac_a, mac_b = lan.mac("a"), lan.mac("b")
    assert not ping(lan, lan.vip_ip, timeout_s=0.3)

    await vip_cli(lan, "a", "claim")
    assert ping(lan, lan.vip_ip)
    assert lan.neigh_mac(lan.vip_ip) == mac_a

    await vip_cli(lan, "a", "release")
    await vip_cli(lan, "b", "claim")
    # The client's entry is fresh (REACHABLE): only a gratuitous ARP can move it this soon.
    await wait_neigh(lan, mac_b, within_s=0.1)
    assert ping(lan, lan.vip_ip)
    assert "inet " + lan.vip not in ip("-n", lan.ns("a"), "addr", "show", "eth0")
    assert "inet " + lan.vip in ip("-n", lan.ns("b"), "addr", "show", "eth0")


@pytest.fixture
async def am_in_c(lan: Lan) -> AsyncIterator[FakeAM]:
    def listener() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((lan.addr("c"), 0))
        return s

    am = await FakeAM(ping_interval_ms=50, lease_ms=300).start(sock=in_netns(lan.ns("c"),
                                                                             listener))
    try:
        yield am
    finally:
        await am.stop()


@pytest.mark.req("IF-1")
@pytest.mark.req("IF-3")
async def test_counter_failover_keeps_the_vip_and_the_state(lan: Lan, am_in_c: FakeAM) -> None:
    am = am_in_c
    procs: dict[str, CounterProc] = {}
    try:
        for role in ("a", "b"):
            procs[role] = await CounterProc.start(counter_argv(
                f"gw-{role}", PORT, am.endpoint, state="sync", sync_port=SYNC_PORT,
                bind="0.0.0.0", ifname="eth0", prefix=lan.exec_prefix(role)))
        conns = {}
        for _ in range(2):
            conn = await am.accept(within_s=10)
            conns[conn.register["component"]] = conn
        assert (await conns["gw-b"].order("gw", "standby", 1, peer=peer(
            "gw-a", SYNC_PORT, lan.addr("a"))))["op"] == "assigned"
        assert (await conns["gw-a"].order("gw", "active", 1, vip=lan.vip, peer=peer(
            "gw-b", SYNC_PORT, lan.addr("b"))))["op"] == "assigned"

        # One connected UDP socket for the whole test: replies count only if they come
        # from the VIP, and the client's 5-tuple never changes across the failover.
        sock = in_netns(lan.ns("c"), lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        probe = await UdpClient.open(lan.vip_ip, PORT, sock=sock)
        ask = probe.ask
        try:
            for n in range(1, 4):
                assert await ask("INC s") == f"OK s {n} gw-a"
            assert lan.neigh_mac(lan.vip_ip) == lan.mac("a")
            # Its announcements sent, the active holds no packet socket: closing one
            # waits for an RCU grace period, and its death (the failover) would too.
            await wait_no_packet_socket(procs["a"].proc.pid)

            await procs["a"].kill()  # the address stays on a's eth0: see the ADR
            ordered = time.monotonic()
            ordered_ns = time.monotonic_ns()
            assert (await conns["gw-b"].order("gw", "active", 2, vip=lan.vip))["op"] == "assigned"
            assert await ask("GET s") == "VAL s 3 gw-b"
            took = time.monotonic() - ordered
            assert lan.neigh_mac(lan.vip_ip) == lan.mac("b")
            assert took < 0.5, took
            assert await ask("INC s") == "OK s 4 gw-b"
            # When it took the role, stage by stage (what the scenario runner reads).
            times = json.loads((await ask("TIMES")).removeprefix("TIMES "))["gw"]
            assert times["epoch"] == 2
            assert ordered_ns <= times["order_mono_ns"] <= times["vip_mono_ns"] \
                <= times["serving_mono_ns"] <= time.monotonic_ns(), times
        finally:
            probe.close()
    finally:
        for proc in procs.values():
            await proc.kill()
