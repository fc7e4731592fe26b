"""IF-2: a load balancer's reports about its members (``member_failed``).

The active LB of a VNF excluded one of its members: a failure report from an outside
observer. The member is suspect at once (it may still serve others); its recovery
waits up to ``confirm_s`` for the VIM's word: a crash or a hung VM is recovered by
that path and counted there, once (VNFHA-10). Without it, a member that has not
answered the manager either since the report is alive but hung: it is killed and
restarted, counted by the escalation tracker like any component failure. One that
answered was only stalled (a loaded CPU): the LB re-includes it at its next
health-check answer, and a restart would do harm.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from nfvha.amf.manager.readiness import Life, ReadinessTracker
from nfvha.amf.manager.repair import Repairs
from nfvha.amf.manager.roster import Roster
from nfvha.util.clock import Clock
from nfvha.wire.amf import MemberFailed

log = logging.getLogger(__name__)


@dataclass
class _MemberReport:
    """The failure of one life (incarnation) of an LB member, and who recovers it: the
    VIM's path once it confirmed it (``timer`` None), else the timer's own."""

    life: str | None
    timer: asyncio.TimerHandle | None
    reported_ns: int = 0


class MemberReports:
    def __init__(self, roster: Roster, readiness: ReadinessTracker, repairs: Repairs,
                 clock: Clock, *, confirm_s: float) -> None:
        self._roster = roster
        self._readiness = readiness
        self._repairs = repairs
        self._clock = clock
        self.confirm_s = confirm_s
        self._reports: dict[str, _MemberReport] = {}

    def on_member_failed(self, reporter: str, msg: MemberFailed) -> None:
        """``reporter`` (an SU of a load-balancer VNF) excluded ``msg.member``."""
        lb = self._roster.group_of[reporter]
        member = msg.member
        balanced = self._roster.balancers.get(lb)
        if balanced is None or self._roster.group_of.get(member) != balanced:
            log.warning("SU %s reported member %r failed: not one of its members",
                        reporter, member)
            return
        if not any(r is not None and reporter in r.active
                   for r in self._roster.records(lb).values()):
            log.info("ignoring member_failed %s from %s: not the active load balancer",
                     member, reporter)
            return
        life = self._readiness.incarnation(member)
        seen = self._reports.get(member)
        if life is None or (seen is not None and seen.life == life):
            return  # never registered (still starting), or this life's failure is known
        self._readiness.suspect(member, f"load balancer {reporter}: {msg.reason}")
        timer = asyncio.get_running_loop().call_later(
            self.confirm_s, self._unconfirmed, member, life)
        self._reports[member] = _MemberReport(life, timer, self._clock.mono_ns())

    def _unconfirmed(self, member: str, life: str) -> None:
        report = self._reports.get(member)
        if report is None or report.life != life or report.timer is None:
            return
        report.timer = None
        vm = self._roster.endpoint[member].vm
        if self._readiness.incarnation(member) != life or self._repairs.under_way(member) \
                or self._repairs.under_way(f"vm/{vm}"):
            return  # restarted meanwhile, or already being repaired
        if self._readiness.last_answer_ns(member) > report.reported_ns:
            log.info("SU %s answered after its load balancer reported it failed: stalled,"
                     " not hung; not restarted", member)
            del self._reports[member]  # a later exclusion is a new report
            return
        log.warning("SU %s: its load balancer's failure report was not confirmed by the"
                    " VIM within %.0f ms: restarting it", member, self.confirm_s * 1e3)
        self._repairs.component_failed(member, alive=True)

    def settle(self, failed: Mapping[str, Life | None]) -> None:
        """The VIM (or an agent's notice) confirmed a failure of these SUs (``failed``:
        the life that failed, where known): its path recovers them, so a load
        balancer's report about the same life, before or after this, starts nothing
        more. A failure of a life that is no longer the registered one settles
        nothing: a report may be about the new one."""
        for su, life in failed.items():
            current = self._readiness.incarnation(su)
            if life is not None and current is not None and life.incarnation != current:
                continue
            report = self._reports.get(su)
            if report is not None and report.timer is not None:
                report.timer.cancel()
            self._reports[su] = _MemberReport(current, None)
