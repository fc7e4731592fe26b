"""What a benchmark reads about processes from /proc: CPU time, peak memory, and the
receive drops of a UDP socket.

CPU time is utime + stime of the whole process (every thread) in clock ticks; peak
memory is VmHWM (the kernel's own high-water mark of the resident set, so nothing is
missed between samples). UDP drops are the ``drops`` column of /proc/net/udp for the
socket's inode - the datagrams the kernel threw away for that one socket because its
receive buffer was full - found through /proc/<pid>/fd.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (all its threads), or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def _status_kb(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the largest resident set ``pid`` has had, in MiB."""
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024


def rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmRSS")
    return None if kb is None else kb / 1024


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets ``pid`` has open."""
    found: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


@dataclass(frozen=True, slots=True)
class UdpSocket:
    local_ip: str
    local_port: int
    inode: int
    drops: int
    rx_queue: int


def _ipv4(hex_le: str) -> str:
    """/proc/net/udp's address: the 32-bit word in host (little-endian) order."""
    b = bytes.fromhex(hex_le)[::-1]
    return ".".join(str(x) for x in b)


def parse_proc_net_udp(text: str) -> list[UdpSocket]:
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 13:
            continue
        ip_hex, port_hex = f[1].split(":")
        _, rx_hex = f[4].split(":")
        out.append(UdpSocket(_ipv4(ip_hex), int(port_hex, 16), int(f[9]), int(f[12]),
                             int(rx_hex, 16)))
    return out


def udp_sockets(pid: int | None = None) -> list[UdpSocket]:
    """The IPv4 UDP sockets of this network namespace (of ``pid``'s, if given)."""
    path = f"/proc/{pid}/net/udp" if pid is not None else "/proc/net/udp"
    try:
        return parse_proc_net_udp(Path(path).read_text())
    except OSError:
        return []


def udp_drops(pid: int, local: tuple[str, int]) -> int | None:
    """Receive drops of ``pid``'s UDP socket bound to ``local``; None when it has none
    (yet)."""
    inodes = socket_inodes(pid)
    for s in udp_sockets(pid):
        if s.inode in inodes and (s.local_ip, s.local_port) == local:
            return s.drops
    return None


def udp_rcvbuf_errors() -> int | None:
    """The machine's (network namespace's) UDP RcvbufErrors counter (/proc/net/snmp):
    every socket's, not one's."""
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return None
    for head, values in itertools.pairwise(lines):
        if head.startswith("Udp:") and values.startswith("Udp:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=False))
            value = table.get("RcvbufErrors")
            return int(value) if value is not None else None
    return None
