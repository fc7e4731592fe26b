"""RFC 5424 syslog messages over UDP (RFC 5426): where the hypervisor reports its
own failures and recovery actions (HV-3). Standard library only: the host supervisor
uses it."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

# Facility "daemon" (3); severities of RFC 5424 section 6.2.1.
FACILITY_DAEMON = 3
SEVERITIES = {"emerg": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5,
              "info": 6, "debug": 7}
# The structured data's ID: name@<private enterprise number>; 32473 is reserved for
# documentation and examples (RFC 5612), as nfvha has no number of its own.
SD_ID = "nfvha@32473"
MAX_MESSAGE_BYTES = 2048  # RFC 5426: receivers must take 480, should take 2048
SCHEME = "syslog"


def parse_destination(text: str) -> tuple[str, int]:
    """``syslog://IPv4:PORT`` -> (ip, port); ValueError saying what is wrong."""
    parts = urlsplit(text)
    if parts.scheme != SCHEME:
        raise ValueError(f"{text!r}: a report destination is syslog://IP:PORT")
    try:
        ip = str(ipaddress.IPv4Address(parts.hostname or ""))
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{text!r}: {e}") from None
    if port is None or not 0 < port < 65536:
        raise ValueError(f"{text!r}: needs a port (1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{text!r}: only syslog://IP:PORT")
    return ip, port


def _sd_value(value: object) -> str:
    # RFC 5424 section 6.3.3: '"', '\' and ']' are escaped in PARAM-VALUE.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, '-' when empty."""
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def format_message(*, severity: str, hostname: str, app: str, procid: int | None,
                   msgid: str, fields: dict[str, object], text: str,
                   now: float | None = None) -> bytes:
    """One RFC 5424 message (facility daemon), at most MAX_MESSAGE_BYTES."""
    pri = FACILITY_DAEMON * 8 + SEVERITIES[severity]
    t = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
    params = "".join(f' {_token(k, 32)}="{_sd_value(v)}"' for k, v in fields.items())
    head = (f"<{pri}>1 {stamp} {_token(hostname, 255)} {_token(app, 48)} "
            f"{procid if procid is not None else '-'} {_token(msgid, 32)} [{SD_ID}{params}] ")
    # MSG is UTF-8 with a BOM (section 6.4); cut to the datagram limit.
    out = head.encode() + b"\xef\xbb\xbf" + text.encode()
    return out[:MAX_MESSAGE_BYTES]


class SyslogSender:
    """Sends to each destination from one unbound UDP socket; never blocks, never
    raises on a send: a report must not take its sender down."""

    def __init__(self, destinations: list[tuple[str, int]]) -> None:
        self.destinations = destinations
        self.failed = 0
        self._sock: socket.socket | None = None
        if destinations:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    def send(self, message: bytes) -> None:
        if self._sock is None:
            return
        for dest in self.destinations:
            try:
                self._sock.sendto(message, dest)
            except OSError:
                self.failed += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
