"""The LB pair with a VIP (IF-1 + IF-2) in one network namespace (root): the active LB
claims the VIP and forwards on it; once quiesced it has released it, and the newly
promoted one serves the VIP. Namespace ``nfvha-<run>-lb``, a veth pair in
198.18.0.0/15, no default route, removed afterwards."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from lb_testutil import FakeAM, Start, UdpClient, in_netns, ip, lb_argv

from nfvha.testbed.deploy import namespaces_available

pytestmark = pytest.mark.testbed
PORT = 7000


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """(namespace, first three octets of its /24 on interface d0)."""
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    ns = f"nfvha-{secrets.token_hex(3)}-lb"
    net = f"198.18.{secrets.randbelow(254) + 1}"
    try:
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
        # A veth pair (no dummy module in every container): d0 carries the addresses.
        ip("-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        ip("-n", ns, "link", "set", "d1", "up")
        ip("-n", ns, "link", "set", "d0", "up")
        ip("-n", ns, "addr", "add", f"{net}.1/24", "dev", "d0")
        yield ns, net
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        assert ns not in ip("netns", "list")


@pytest.mark.req("IF-2")
async def test_lb_pair_moves_the_vip(netns: tuple[str, str], start: Start) -> None:
    ns, net = netns
    vip, vip_ip = f"{net}.200/24", f"{net}.200"
    prefix = ["ip", "netns", "exec", ns]

    def listener() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((f"{net}.1", 0))
        return s

    am = await FakeAM(ping_interval_ms=100).start(sock=in_netns(ns, listener))
    try:
        member = await start([*prefix, sys.executable, "-m", "nfvha.samples.counter",
                                          "--name", "w1", "--port", "7101", "--bind", "127.0.0.1"])
        lbs = {}
        for name, bind in (("lb-a", "127.0.0.1"), ("lb-b", "127.0.0.2")):
            # One front port, for the VIP; the two LBs' own addresses differ (their VMs).
            lbs[name] = await start([*prefix, *lb_argv(
                name, PORT, {"w1": 7101}, "--bind", bind, "--am", am.endpoint,
                "--component", name, "--ifname", "d0")])
        conns = {}
        for _ in range(2):
            conn = await am.accept(within_s=10)
            conns[conn.register["component"]] = conn
        await member.wait_line("serving")

        client_sock = in_netns(ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        client = await UdpClient.open(vip_ip, PORT, sock=client_sock)
        try:
            assert (await conns["lb-b"].order("lb", "standby", 1, vip=vip))["op"] == "assigned"
            assert (await conns["lb-a"].order("lb", "active", 1, vip=vip))["op"] == "assigned"
            assert f"inet {vip}" in ip("-n", ns, "addr", "show", "d0")
            # The member may still be unknown to a fresh LB: ask until it is included.
            assert (await client.ask("INC s", within_s=3.0, retry_s=0.05)).startswith("OK s ")

            assert (await conns["lb-a"].order("lb", "quiesced", 2))["op"] == "assigned"
            assert f"inet {vip}" not in ip("-n", ns, "addr", "show", "d0")
            assert (await conns["lb-b"].order("lb", "active", 2, vip=vip))["op"] == "assigned"
            assert f"inet {vip}" in ip("-n", ns, "addr", "show", "d0")
            assert (await client.ask("GET s", retry_s=1.0)).startswith("VAL s ")
            await lbs["lb-b"].wait_line("lb active epoch 2")
        finally:
            client.close()
    finally:
        await am.stop()
