"""Link up/down detection from kernel netlink events (RTMGRP_LINK), not polling.

A small raw AF_NETLINK/NETLINK_ROUTE reader keeps the agent free of third-party
dependencies on its detection hot path.  The kernel pushes an RTM_NEWLINK for every
flag or carrier change and an RTM_DELLINK when a link disappears; we keep the last
known state per interface index and report only changes of admin/oper state.

Consistency: notifications and dump replies arrive on the *same* socket, so they are
queued by the kernel in the order the states were observed.  Applying every message
in arrival order therefore always converges to the current state.  When the socket
overflows (ENOBUFS) notifications were lost: we re-dump and report the differences.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from types import TracebackType

from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

# <linux/netlink.h>
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10  # the dump was inconsistent: links changed while it ran
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER
# <linux/rtnetlink.h>
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTMGRP_LINK = 0x1
# <linux/if_link.h>
IFLA_IFNAME = 3
# <linux/if.h>
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, pad, type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type
_ERRNO = struct.Struct("=i")  # NLMSG_ERROR / NLMSG_DONE payload: 0 or -errno

# The kernel sizes dump chunks after the largest receive buffer seen, capped at 32 KiB;
# 64 KiB always holds one datagram (truncation is detected anyway, see _read_one).
RECV_BUFSIZE = 64 * 1024
DEFAULT_RCVBUF = 1 << 20
DUMP_TIMEOUT_S = 10.0
DUMP_RETRY_S = 0.5
# Datagrams handled per wake-up, so that a flood of link events cannot starve the loop.
MAX_DATAGRAMS_PER_WAKEUP = 64


class NetlinkError(Exception):
    """A malformed netlink message."""


@dataclass(frozen=True, slots=True)
class NetlinkMessage:
    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class IfInfo:
    """The parts of an ifinfomsg (+ IFLA_IFNAME) that link state needs."""

    family: int
    index: int
    flags: int
    ifname: str | None  # None if the message carried no IFLA_IFNAME


@dataclass(frozen=True)
class LinkState:
    ifname: str
    index: int
    admin_up: bool  # IFF_UP: configured up ("ip link set X up")
    oper_up: bool  # IFF_UP and IFF_LOWER_UP: carrier present, frames can flow


LinkChange = tuple[LinkState | None, LinkState, int]
"""(old state or None for a new link, new state, CLOCK_MONOTONIC ns at receipt)."""


def _align4(n: int) -> int:
    return (n + 3) & ~3


def parse_messages(data: bytes) -> Iterator[NetlinkMessage]:
    """The netlink messages of one datagram (a datagram may hold many)."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError(f"bad nlmsg_len {length} at offset {offset} of {len(data)}")
        yield NetlinkMessage(
            mtype, flags, seq, pid, data[offset + _NLMSGHDR.size : offset + length]
        )
        offset += _align4(length)


def parse_rtattrs(buf: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """(type, value) of each route attribute in ``buf[offset:]``."""
    while offset + _RTATTR.size <= len(buf):
        alen, atype = _RTATTR.unpack_from(buf, offset)
        if alen < _RTATTR.size or offset + alen > len(buf):
            raise NetlinkError(f"bad rta_len {alen} at offset {offset} of {len(buf)}")
        yield atype & NLA_TYPE_MASK, buf[offset + _RTATTR.size : offset + alen]
        offset += _align4(alen)


def parse_ifinfo(payload: bytes) -> IfInfo:
    """The payload of RTM_NEWLINK / RTM_DELLINK."""
    if len(payload) < _IFINFOMSG.size:
        raise NetlinkError(f"ifinfomsg too short: {len(payload)} bytes")
    family, _dev_type, index, flags, _change = _IFINFOMSG.unpack_from(payload, 0)
    ifname: str | None = None
    for atype, value in parse_rtattrs(payload, _IFINFOMSG.size):
        if atype == IFLA_IFNAME:
            ifname = value.split(b"\0", 1)[0].decode(errors="replace")
    return IfInfo(family=family, index=index, flags=flags, ifname=ifname)


def parse_errno(payload: bytes) -> int:
    """The error of NLMSG_ERROR / NLMSG_DONE: 0 (ack / success) or a negative errno."""
    if len(payload) < _ERRNO.size:
        return 0  # an old kernel's NLMSG_DONE may carry no payload
    (err,) = _ERRNO.unpack_from(payload, 0)
    return int(err)


def build_getlink_dump(seq: int) -> bytes:
    """An RTM_GETLINK dump request for all links (AF_UNSPEC)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + body


def link_state(info: IfInfo, ifname: str) -> LinkState:
    admin_up = bool(info.flags & IFF_UP)
    # IFF_LOWER_UP is the carrier bit; it is updated together with IFF_RUNNING by the
    # kernel's linkwatch and is already set on the "admin up" notification when the
    # carrier is there, so "up" is seen one notification earlier than with RUNNING.
    oper_up = admin_up and bool(info.flags & IFF_LOWER_UP)
    return LinkState(ifname=ifname, index=info.index, admin_up=admin_up, oper_up=oper_up)


class LinkMonitor:
    """Subscribes to RTMGRP_LINK on an AF_NETLINK/NETLINK_ROUTE socket in the *current*
    network namespace (the agent runs inside its host's namespace).

    ``interfaces``: names to watch; None watches every link except loopback.
    ``changes()`` is one stream: every change since ``start()`` is delivered once, to
    whichever iterator takes it (use a single consumer).  A deleted link is always
    reported, with both flags False, even if it was already down, so a consumer that
    tracks links learns that it is gone.
    """

    def __init__(
        self,
        interfaces: set[str] | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        rcvbuf: int = DEFAULT_RCVBUF,
    ) -> None:
        self._interfaces = frozenset(interfaces) if interfaces is not None else None
        self._clock = clock
        self._rcvbuf = rcvbuf
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port_id = 0
        self._links: dict[int, LinkState] = {}  # by ifindex: a rename keeps the index
        self._queue: asyncio.Queue[LinkChange | None] = asyncio.Queue()
        self._emitting = False  # False during the initial dump: it builds the snapshot
        self._seq = 0
        self._dump_seq: int | None = None  # seq of the dump in progress
        self._dump_seen: set[int] = set()  # indices reported while that dump ran
        self._dump_again = False
        self._initial_dump: asyncio.Future[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self.overruns = 0  # ENOBUFS seen (notifications lost, repaired by a re-dump)
        self.dumps = 0  # RTM_GETLINK dumps requested

    # -- public API -------------------------------------------------------------------

    def snapshot(self) -> dict[str, LinkState]:
        """The current state of every watched link, by name."""
        return {s.ifname: s for s in self._links.values()}

    async def start(self) -> None:
        """Open the socket, join RTMGRP_LINK, and return once the initial dump is in."""
        if self._sock is not None or self._closed:
            raise RuntimeError("LinkMonitor.start() called twice")
        loop = asyncio.get_running_loop()
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
            socket.NETLINK_ROUTE,
        )
        try:
            self._set_rcvbuf(sock)
            # Join the group before dumping: every change after the dump is then
            # guaranteed to be notified (no gap between dump and subscription).
            sock.bind((0, RTMGRP_LINK))
            self._port_id = int(sock.getsockname()[0])
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = loop
        self._initial_dump = loop.create_future()
        loop.add_reader(sock.fileno(), self._on_readable)
        try:
            self._request_dump()
            await asyncio.wait_for(self._initial_dump, DUMP_TIMEOUT_S)
        except BaseException:
            await self.close()
            raise

    def changes(self) -> AsyncIterator[LinkChange]:
        """(old, new, mono_ns at receipt), only when admin_up/oper_up changed; ends at close()."""
        return self._iterate_changes()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._initial_dump is not None and not self._initial_dump.done():
            self._initial_dump.cancel()
        self._queue.put_nowait(None)

    async def __aenter__(self) -> LinkMonitor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- socket -----------------------------------------------------------------------

    def _set_rcvbuf(self, sock: socket.socket) -> None:
        # A large buffer makes overruns rare during bursts (a host going down drops
        # many veths at once); FORCE (root) may exceed net.core.rmem_max.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)

    async def _iterate_changes(self) -> AsyncIterator[LinkChange]:
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let any other iterator end as well
                return
            yield item

    def _on_readable(self) -> None:
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            if self._sock is None or not self._read_one(self._sock):
                return

    def _read_one(self, sock: socket.socket) -> bool:
        """Handle one datagram; False when the socket has nothing more to read."""
        try:
            data, _ancdata, msg_flags, _addr = sock.recvmsg(RECV_BUFSIZE)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno == errno.ENOBUFS:
                self.overruns += 1
                log.warning("netlink receive buffer overrun: link events lost, re-dumping")
                self._request_dump()
                return True
            log.error("netlink recv failed: %s", e)
            return False
        mono_ns = self._clock.mono_ns()
        if msg_flags & socket.MSG_TRUNC:
            log.warning("netlink datagram truncated (%d bytes read): re-dumping", len(data))
            self._request_dump()
            return True
        try:
            messages = list(parse_messages(data))
        except NetlinkError as e:
            log.warning("malformed netlink datagram (%s): re-dumping", e)
            self._request_dump()
            return True
        for msg in messages:
            self._handle_message(msg, mono_ns)
        return True

    # -- dumps ------------------------------------------------------------------------

    def _request_dump(self) -> None:
        if self._closed or self._sock is None:
            return
        if self._dump_seq is not None:
            self._dump_again = True  # the kernel runs one dump per socket at a time
            return
        self._seq += 1
        try:
            self._sock.send(build_getlink_dump(self._seq))
        except OSError as e:
            log.warning("netlink dump request failed (%s): retrying", e)
            self._schedule_retry()
            return
        self._dump_seq = self._seq
        self._dump_seen = set()
        self._dump_again = False
        self.dumps += 1

    def _schedule_retry(self) -> None:
        if self._loop is not None and self._retry is None and not self._closed:

            def retry() -> None:
                self._retry = None
                self._request_dump()

            self._retry = self._loop.call_later(DUMP_RETRY_S, retry)

    def _finish_dump(self, msg: NetlinkMessage, mono_ns: int) -> None:
        self._dump_seq = None
        err = parse_errno(msg.payload)
        if err < 0:
            self._fail_dump(err)
            return
        if msg.flags & NLM_F_DUMP_INTR:
            self._dump_again = True
        # Links the dump did not report (and no event re-created meanwhile) are gone.
        for index in [i for i in self._links if i not in self._dump_seen]:
            self._apply_del(index, mono_ns)
        if self._initial_dump is not None and not self._initial_dump.done():
            self._emitting = True  # set here, not after the await: the next datagram counts
            self._initial_dump.set_result(None)
        if self._dump_again:
            self._request_dump()

    def _fail_dump(self, err: int) -> None:
        self._dump_seq = None
        exc = OSError(-err, f"RTM_GETLINK dump failed: {os.strerror(-err)}")
        if self._initial_dump is not None and not self._initial_dump.done():
            self._initial_dump.set_exception(exc)
            return
        log.warning("%s: retrying", exc)
        self._schedule_retry()

    # -- messages ---------------------------------------------------------------------

    def _handle_message(self, msg: NetlinkMessage, mono_ns: int) -> None:
        # Notifications caused by a request carry the requester's port id and sequence
        # number, so a dump reply is recognised by *our* port id and the dump's seq.
        is_dump_reply = (
            self._dump_seq is not None and msg.seq == self._dump_seq and msg.pid == self._port_id
        )
        if msg.type == NLMSG_DONE:
            if is_dump_reply:
                self._finish_dump(msg, mono_ns)
            return
        if msg.type == NLMSG_ERROR:
            err = parse_errno(msg.payload)
            if is_dump_reply and err < 0:
                self._fail_dump(err)
            return
        if msg.type == NLMSG_OVERRUN:
            self._request_dump()
            return
        if msg.type not in (RTM_NEWLINK, RTM_DELLINK):
            return
        if is_dump_reply and msg.flags & NLM_F_DUMP_INTR:
            self._dump_again = True
        try:
            info = parse_ifinfo(msg.payload)
        except NetlinkError as e:
            log.warning("malformed link message (%s): re-dumping", e)
            self._request_dump()
            return
        # AF_BRIDGE messages on the same group describe bridge *ports*: an RTM_DELLINK
        # there means "left the bridge", not "link deleted".
        if info.family != socket.AF_UNSPEC:
            return
        if msg.type == RTM_NEWLINK:
            if self._dump_seq is not None:
                self._dump_seen.add(info.index)
            self._apply_new(info, mono_ns)
        else:
            self._dump_seen.discard(info.index)
            self._apply_del(info.index, mono_ns)

    def _watched(self, ifname: str, flags: int) -> bool:
        if self._interfaces is None:
            return not flags & IFF_LOOPBACK
        return ifname in self._interfaces

    def _apply_new(self, info: IfInfo, mono_ns: int) -> None:
        old = self._links.get(info.index)
        ifname = info.ifname if info.ifname is not None else (old.ifname if old else None)
        if ifname is None:
            return
        if not self._watched(ifname, info.flags):
            if old is not None:  # renamed out of the watched set: gone as far as we know
                self._apply_del(info.index, mono_ns)
            return
        new = link_state(info, ifname)
        self._links[info.index] = new
        if old is None or (old.admin_up, old.oper_up) != (new.admin_up, new.oper_up):
            self._emit(old, new, mono_ns)

    def _apply_del(self, index: int, mono_ns: int) -> None:
        old = self._links.pop(index, None)
        if old is None:
            return
        self._emit(old, LinkState(old.ifname, index, admin_up=False, oper_up=False), mono_ns)

    def _emit(self, old: LinkState | None, new: LinkState, mono_ns: int) -> None:
        if self._emitting:
            self._queue.put_nowait((old, new, mono_ns))
