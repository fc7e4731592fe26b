"""The controller's mirror of host liveness, which the HA director keeps (ADR 0014).

The director decides whether a host is up, suspect or down (ADR 0015) and tells the
controller every change (``host_state``), and all of them again after each
reconnection. The VIM's own work reads this mirror: the inventory, host health,
which hosts may take an evacuated VM, whether a broken agent stream is news. It is
never asked of the director on a request's path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nfvha.model.hosts import HostState
from nfvha.util.clock import Clock
from nfvha.wire.director import HostState as HostStateMsg

log = logging.getLogger(__name__)
HostListener = Callable[[str, HostState, HostState], None]  # (host, old, new)


@dataclass
class HostRecord:
    state: HostState = HostState.UNKNOWN
    reason: str = "not heard of yet"
    since_mono_ns: int = 0
    boot: int | None = None


class HostStates:
    def __init__(self, hosts: Iterable[str], clock: Clock) -> None:
        now = clock.mono_ns()
        self.hosts: dict[str, HostRecord] = {h: HostRecord(since_mono_ns=now) for h in hosts}
        self._listeners: list[HostListener] = []

    def state(self, host: str) -> HostRecord:
        return self.hosts[host]

    def up(self, host: str) -> bool:
        rec = self.hosts.get(host)
        return rec is not None and rec.state is HostState.UP

    def on_change(self, listener: HostListener) -> None:
        """``listener(host, old, new)`` on every change of a host's state or reason."""
        self._listeners.append(listener)

    def remove_listener(self, listener: HostListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def apply(self, msg: HostStateMsg) -> None:
        rec = self.hosts.get(msg.host)
        if rec is None:
            log.warning("director reports host %r, which is not in the topology", msg.host)
            return
        old = rec.state
        new = HostState(msg.state)
        if (old, rec.reason, rec.boot) == (new, msg.reason, msg.boot):
            return
        rec.state, rec.reason, rec.since_mono_ns, rec.boot = \
            new, msg.reason, msg.since_mono_ns, msg.boot
        for listener in list(self._listeners):
            try:
                listener(msg.host, old, new)
            except Exception:  # one consumer's bug must not stop the others hearing it
                log.exception("host state listener failed on %s %s -> %s", msg.host, old, new)
