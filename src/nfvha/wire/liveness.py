"""Host liveness datagrams (ADR 0015): heartbeats and SWIM-style indirect probes.

Every datagram is exactly ``DATAGRAM_BYTES`` long, binary, big-endian, so the
director reads a heartbeat with one ``struct.unpack_from`` and no JSON: at 1,000
hosts x 10 heartbeats a second that is the difference between a few per cent of a
core and most of one. Nothing in a datagram grows with the deployment (the old
heartbeat listed every peer).

Layout (64 bytes)::

    0  2  magic  b"NV"
    2  1  version (1)
    3  1  kind   (Kind)
    4  8  boot   random per host-supervisor start (HEARTBEAT); 0 otherwise
    12 4  seq    heartbeat counter (HEARTBEAT); 0 otherwise
    16 8  nonce  one probe's id (PROBE_REQUEST .. PROBE_RESULT)
    24 4  ip     PROBE_REQUEST: the target's IPv4 address to ping
    28 2  port   PROBE_REQUEST: the target's UDP port
    30 1  result PROBE_RESULT: 1 the target answered, 0 it did not
    31 1  name length
    32 32 name   HEARTBEAT: the sender host; every other kind: the target host

Flow: each host supervisor sends HEARTBEAT to the director(s). A director that
suspects a silent host asks a few *witness* hosts (PROBE_REQUEST); each witness
PINGs the target on another network path (the data network), the target answers
ACK to the witness, and the witness tells the director PROBE_RESULT. Only the
witnesses' word confirms a host down when it has no fence device (HV-1).

Standard library only: the host supervisor is a light process.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"NV"
VERSION = 1
DATAGRAM_BYTES = 64
NAME_BYTES = 32
_FORMAT = struct.Struct("!2sBBQIQ4sHBB32s")
assert _FORMAT.size == DATAGRAM_BYTES
# Where a witness may be told to send pings: the test bed's fabric and loopback. A
# director never asks for anything else; a witness checks anyway (a forged request
# must not make a host send anywhere else).
PROBE_NETWORKS = (ipaddress.IPv4Network("198.18.0.0/15"), ipaddress.IPv4Network("127.0.0.0/8"))


class Kind(IntEnum):
    HEARTBEAT = 1
    PROBE_REQUEST = 2
    PING = 3
    ACK = 4
    PROBE_RESULT = 5


class BadDatagram(ValueError):
    """Not a liveness datagram of this version."""


@dataclass(frozen=True, slots=True)
class Datagram:
    kind: Kind
    name: str  # HEARTBEAT: the sender; otherwise the target host
    boot: int = 0
    seq: int = 0
    nonce: int = 0
    ip: str = "0.0.0.0"
    port: int = 0
    reached: bool = False

    def encode(self) -> bytes:
        raw = self.name.encode()
        if len(raw) > NAME_BYTES:
            raise ValueError(f"host name {self.name!r} longer than {NAME_BYTES} bytes")
        return _FORMAT.pack(MAGIC, VERSION, int(self.kind), self.boot & 0xFFFF_FFFF_FFFF_FFFF,
                            self.seq & 0xFFFF_FFFF, self.nonce & 0xFFFF_FFFF_FFFF_FFFF,
                            ipaddress.IPv4Address(self.ip).packed, self.port,
                            1 if self.reached else 0, len(raw), raw)


def is_liveness(data: bytes) -> bool:
    """Cheap check before ``decode``: other datagrams (agent notices, JSON) share the
    director's socket."""
    return len(data) == DATAGRAM_BYTES and data[:2] == MAGIC


def decode(data: bytes) -> Datagram:
    if len(data) != DATAGRAM_BYTES:
        raise BadDatagram(f"{len(data)} bytes, not {DATAGRAM_BYTES}")
    magic, version, kind, boot, seq, nonce, ip, port, result, n, name = _FORMAT.unpack(data)
    if magic != MAGIC or version != VERSION:
        raise BadDatagram("not a version-1 liveness datagram")
    if n > NAME_BYTES:
        raise BadDatagram("name length out of range")
    try:
        k = Kind(kind)
        text = name[:n].decode()
    except (ValueError, UnicodeDecodeError) as e:
        raise BadDatagram(str(e)) from None
    return Datagram(k, text, boot, seq, nonce, str(ipaddress.IPv4Address(ip)), port,
                    result == 1)


def heartbeat_fields(data: bytes) -> tuple[str, int, int] | None:
    """(host, boot, seq) of a heartbeat, or None: the director's hot path, without
    building a ``Datagram``."""
    if len(data) != DATAGRAM_BYTES or data[:2] != MAGIC or data[2] != VERSION \
            or data[3] != Kind.HEARTBEAT:
        return None
    _, _, _, boot, seq, _, _, _, _, n, name = _FORMAT.unpack(data)
    if n > NAME_BYTES:
        return None
    try:
        return name[:n].decode(), boot, seq
    except UnicodeDecodeError:
        return None


def probe_target_allowed(ip: str) -> bool:
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return False
    return any(addr in net for net in PROBE_NETWORKS)
