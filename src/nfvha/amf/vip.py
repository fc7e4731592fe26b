"""Claiming and releasing a virtual IP address (IF-1) from inside a VNFC.

``await claim("198.18.1.200/24", "eth0")`` adds the address to the interface and
announces it with gratuitous ARP; ``await release(...)`` deletes it.  The address is
changed over rtnetlink directly rather than by running ``ip``: a claim is on the
failover path, and a netlink round trip takes tens of microseconds where forking
``ip`` takes milliseconds (and a minimal guest image may have no ``ip`` at all).

Gratuitous ARP: an ARP request and an ARP reply, both broadcast, with sender and
target protocol address = the VIP, sent ``garp_count`` times ``garp_interval_s``
apart.  The reply's target hardware address is our own MAC too: Linux treats a
reply as gratuitous (and lets it override a fresh neighbour entry) only then.  The
first pair goes out before ``claim`` returns; the repeats are scheduled on the event
loop so a claim costs well under a millisecond.

The packet socket that sends them lives only as long as its announcements: closing a
packet socket waits for an RCU grace period (8-30 ms measured), and a process that
holds one pays that wait when it dies - a crashed active would then take that much
longer to be seen dead by its parent, and the failover with it.  So each claim opens
its own (protocol 0: no receive hook, about 50 us) and closes it, after its last
announcement, in a thread of its own, off the event loop.

IPv4 only.  Needs CAP_NET_ADMIN (address) and CAP_NET_RAW (ARP): without them
``VipPermissionError``.  Standard library only: this runs inside VNFC processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable

ETH_P_ARP = 0x0806
_RTM_NEWADDR, _RTM_DELADDR = 20, 21
_NLMSG_ERROR = 2
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_REPLACE, _NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_BROADCAST_MAC = b"\xff" * 6

# Repeats still to be sent, per (ifname, address): a release cancels them, so an
# address we no longer hold is not announced any more.
_pending: dict[tuple[str, str], _Announcer] = {}


class VipError(OSError):
    """The VIP could not be claimed or released."""


class VipPermissionError(VipError):
    """Not permitted: the process lacks CAP_NET_ADMIN / CAP_NET_RAW."""


def parse_vip(vip_cidr: str) -> ipaddress.IPv4Interface:
    """``"198.18.1.200/24"`` (a bare address means /32)."""
    iface = ipaddress.ip_interface(vip_cidr)
    if not isinstance(iface, ipaddress.IPv4Interface):
        raise ValueError(f"VIP {vip_cidr!r}: only IPv4 is supported (gratuitous ARP)")
    return iface


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise VipError(errno.ENODEV, f"no interface {ifname!r} in this network namespace") from exc


def _netlink_addr(msg_type: int, flags: int, vip: ipaddress.IPv4Interface, index: int) -> None:
    """One RTM_NEWADDR/RTM_DELADDR request, waiting for the kernel's ack."""
    addr = vip.ip.packed
    attrs = b"".join(struct.pack("=HH", 4 + len(addr), kind) + addr
                     for kind in (_IFA_LOCAL, _IFA_ADDRESS))
    body = struct.pack("=BBBBI", socket.AF_INET, vip.network.prefixlen, 0, 0, index) + attrs
    seq = 1
    header = struct.pack("=IHHII", 16 + len(body), msg_type, flags | _NLM_F_REQUEST | _NLM_F_ACK,
                         seq, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as nl:
        nl.settimeout(1.0)
        nl.bind((0, 0))
        nl.send(header + body)
        while True:
            data = nl.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, reply_seq, _ = struct.unpack_from("=IHHII", data, offset)
                if kind == _NLMSG_ERROR and reply_seq == seq:
                    (err,) = struct.unpack_from("=i", data, offset + 16)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return
                offset += max((length + 3) & ~3, 16)


def _arp_frame(mac: bytes, ip: bytes, op: int) -> bytes:
    target_mac = b"\x00" * 6 if op == 1 else mac
    eth = _BROADCAST_MAC + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + ip + target_mac + ip
    return eth + arp


def _packet_socket(ifname: str) -> socket.socket:
    """A send-only packet socket on ``ifname`` for one claim's announcements.

    Protocol 0 means the kernel delivers nothing to it, and binding it registers no
    receive hook, so making it waits for nothing (binding to a protocol would wait for
    an RCU grace period).  Closed by ``_close_off_loop``.
    """
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as exc:
        raise VipPermissionError(
            errno.EPERM, "gratuitous ARP needs CAP_NET_RAW (an AF_PACKET socket)") from exc
    try:
        sock.bind((ifname, 0))
    except OSError as exc:
        _close_off_loop(sock)
        raise VipError(exc.errno, f"packet socket on {ifname}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _close_off_loop(sock: socket.socket) -> None:
    """Close a packet socket without waiting for it: the close waits for an RCU grace
    period, which a thread may spend (``close(2)`` runs without the GIL) but the event
    loop must not."""
    threading.Thread(target=sock.close, name="close-packet-socket", daemon=True).start()


async def claim(
    vip_cidr: str,
    ifname: str = "eth0",
    *,
    garp_count: int = 3,
    garp_interval_s: float = 0.010,
) -> asyncio.Future[None]:
    """Add ``vip_cidr`` to ``ifname`` (replacing it if present) and announce it.

    Returns once the address is configured and the first gratuitous ARP pair is sent;
    the other ``garp_count - 1`` go out in the background on the running loop.  The
    future returned is done when the last has been sent (or a release cancelled them);
    awaiting it is optional.
    """
    vip = parse_vip(vip_cidr)
    if garp_count < 1:
        raise ValueError("garp_count must be at least 1")
    index = _ifindex(ifname)
    try:
        _netlink_addr(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_REPLACE, vip, index)
    except PermissionError as exc:
        raise VipPermissionError(
            errno.EPERM, f"adding {vip} to {ifname} needs CAP_NET_ADMIN") from exc
    except OSError as exc:
        raise VipError(exc.errno, f"adding {vip} to {ifname}: {exc.strerror}") from exc
    key = (ifname, str(vip.ip))
    _cancel_pending(key)
    sock = _packet_socket(ifname)
    loop = asyncio.get_running_loop()
    announcer = _Announcer(sock, vip.ip.packed, garp_count, garp_interval_s, loop.create_future())
    try:
        announcer.send()
    except OSError as exc:
        announcer.stop()
        raise VipError(exc.errno, f"gratuitous ARP for {vip.ip} on {ifname}: {exc}") from exc
    if announcer.left > 0:
        _pending[key] = announcer
        announcer.schedule(loop, lambda: _pending.pop(key, None))
    else:
        announcer.stop()
    return announcer.done


class _Announcer:
    """The gratuitous ARP announcements of one claim, on a packet socket of its own
    that ``stop`` closes (off the loop)."""

    def __init__(self, sock: socket.socket, ip: bytes, count: int, interval_s: float,
                 done: asyncio.Future[None]) -> None:
        self.sock = sock
        self.done = done
        self.ip = ip
        self.left = count
        self.interval_s = interval_s
        self.handle: asyncio.TimerHandle | None = None
        self.closed = False

    def send(self) -> None:
        self.left -= 1
        mac: bytes = self.sock.getsockname()[4]
        for op in (1, 2):  # request, then reply
            self.sock.send(_arp_frame(mac, self.ip, op))

    def schedule(self, loop: asyncio.AbstractEventLoop, done: Callable[[], object]) -> None:
        def fire() -> None:
            try:
                self.send()
            except OSError:
                self.left = 0  # the interface went away: nothing more to announce on it
            if self.left > 0:
                self.handle = loop.call_later(self.interval_s, fire)
            else:
                done()
                self.stop()

        self.handle = loop.call_later(self.interval_s, fire)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if not self.done.done():
            self.done.set_result(None)
        if not self.closed:
            self.closed = True
            _close_off_loop(self.sock)


def _cancel_pending(key: tuple[str, str]) -> None:
    announcer = _pending.pop(key, None)
    if announcer is not None:
        announcer.stop()


async def release(vip_cidr: str, ifname: str = "eth0") -> bool:
    """Delete ``vip_cidr`` from ``ifname``. False if it was not there (nothing to do)."""
    vip = parse_vip(vip_cidr)
    _cancel_pending((ifname, str(vip.ip)))
    index = _ifindex(ifname)
    try:
        _netlink_addr(_RTM_DELADDR, 0, vip, index)
    except PermissionError as exc:
        raise VipPermissionError(
            errno.EPERM, f"deleting {vip} from {ifname} needs CAP_NET_ADMIN") from exc
    except OSError as exc:
        if exc.errno in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
            return False
        raise VipError(exc.errno, f"deleting {vip} from {ifname}: {exc.strerror}") from exc
    return True


def holds(vip_cidr: str) -> bool:
    """Whether an interface in this network namespace has the VIP's address (bind test)."""
    ip = str(parse_vip(vip_cidr).ip)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


async def _cli(action: str, vip_cidr: str, ifname: str, garp_interval_s: float) -> None:
    if action == "claim":
        announced = await claim(vip_cidr, ifname, garp_interval_s=garp_interval_s)
        await announced  # let the repeats go out before the process exits
    else:
        await release(vip_cidr, ifname)


def main(argv: list[str] | None = None) -> int:
    """``python -m nfvha.amf.vip claim|release CIDR [--ifname IF]`` (ops and tests)."""
    import argparse  # here: a VNFC imports this module, and its claims need no argparse

    parser = argparse.ArgumentParser(prog="nfvha.amf.vip", description=main.__doc__)
    parser.add_argument("action", choices=("claim", "release"))
    parser.add_argument("vip")
    parser.add_argument("--ifname", default="eth0")
    parser.add_argument("--garp-interval-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    try:
        asyncio.run(_cli(args.action, args.vip, args.ifname, args.garp_interval_ms / 1e3))
    except (VipError, ValueError) as exc:
        print(f"nfvha.amf.vip: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
