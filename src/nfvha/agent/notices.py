"""The agent's failure notices to the HA director (ADR 0014).

The moment the agent detects a VNFC crash, a VM crash or a VM hang it sends one small
UDP datagram (``nfvha.wire.director.Notice``) to the director(s), before the event
is spooled and streamed: the director takes the failed components out of their roles
without waiting for the VIM process to store anything. It is best effort by design
- the durable event follows - so a send never waits and never fails the agent.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

from nfvha.model.events import Event, Kind
from nfvha.wire.director import NOTICE_MAX_BYTES, Notice, NoticeKind

NOTICE_KINDS: dict[Kind, NoticeKind] = {Kind.VNFC_CRASHED: "vnfc.crashed",
                                        Kind.VM_CRASHED: "vm.crashed", Kind.VM_HUNG: "vm.hung"}


class NoticeSender:
    def __init__(self, addresses: Sequence[tuple[str, int]], host: str,
                 incarnation: str) -> None:
        self._addresses = list(addresses)
        self._host = host
        self._incarnation = incarnation
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def maybe_send(self, ev: Event) -> None:
        kind = NOTICE_KINDS.get(ev.kind)
        if kind is None or ev.details.get("cause_entity"):
            return  # not a role-moving failure, or a VNFC lost with its VM (that notice)
        pid = ev.details.get("pid")
        data = Notice(host=self._host, incarnation=self._incarnation, seq=ev.seq, kind=kind,
                      entity=ev.entity, pid=pid if isinstance(pid, int) else None,
                      detected_mono_ns=ev.detected_mono_ns).model_dump_json().encode()
        if len(data) > NOTICE_MAX_BYTES:
            return
        for addr in self._addresses:
            # A full socket buffer or an unreachable director: the stored event follows.
            with contextlib.suppress(OSError):
                self._sock.sendto(data, addr)

    def close(self) -> None:
        self._sock.close()
