"""Each SU's readiness, its registered life, and its active lease (ADR 0008).

Rules (why two actives cannot happen):
- a dropped connection or missing lease requests make an SU ``suspect``, never more:
  a suspect may still be serving;
- ``out-of-service`` needs a confirmation: the host agent saw the process or VM die,
  the host is down (fenced), or the active lease plus a margin has passed since the
  manager last granted the SU its lease (a live component has quiesced itself by
  then: a grant runs from the request's send time);
- an SU counted out (the latch) gets no lease and no role until it is out of every
  record: its old life's roles go before it gets new ones.

A failure report may name the life that failed (``Life``: the pid and incarnation the
SU registered with). One about a life that is no longer the registered one changes
nothing: a report that arrives after the SU's next life registered must not take
that new life out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nfvha.amf.manager.roster import Roster
from nfvha.amf.model import AssignmentRecord, Readiness
from nfvha.model.settings import Settings
from nfvha.util.clock import Clock
from nfvha.wire.amf import Held

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Life:
    """One process of a component, as it registered (``Register.pid``/``incarnation``).
    An empty ``incarnation``: a process known only by its pid, which never registered
    as the SU's current life."""

    pid: int
    incarnation: str


class ReadinessTracker:
    """``on_out(su, why)``: an SU was just counted out of service (its session is
    written off, its group decided again). ``connected(su)``: whether it has a session.
    ``allowed()``: the leader gate (ADR 0013) - no grants while it is shut."""

    def __init__(self, roster: Roster, settings: Settings, clock: Clock, *,
                 on_out: Callable[[str, str], None], connected: Callable[[str], bool],
                 allowed: Callable[[], bool]) -> None:
        self._roster = roster
        self._settings = settings
        self._clock = clock
        self._on_out = on_out
        self._connected = connected
        self._allowed = allowed
        self._state: dict[str, Readiness] = dict.fromkeys(roster.group_of, Readiness.UNKNOWN)
        self._last_answer_ns: dict[str, int] = {}
        self._life: dict[str, Life] = {}
        # Counted out of service (or restarted): out of service, and granted no lease,
        # until out of every record - its old roles go before it gets new ones.
        self._latched: set[str] = set()
        self._last_grant_ns: dict[str, int] = {}

    # -- what is known --------------------------------------------------------------------
    def __getitem__(self, su: str) -> Readiness:
        return self._state[su]

    def life(self, su: str) -> Life | None:
        """The life ``su`` last registered with (kept after its session closes)."""
        return self._life.get(su)

    def incarnation(self, su: str) -> str | None:
        life = self._life.get(su)
        return life.incarnation if life is not None else None

    def life_with_pid(self, su: str, pid: int) -> Life:
        """The life a report naming ``pid`` is about: the registered one if it has that
        pid, else one that is not (or no longer) the registered life."""
        life = self._life.get(su)
        return life if life is not None and life.pid == pid else Life(pid, "")

    def last_answer_ns(self, su: str) -> int:
        return self._last_answer_ns.get(su, 0)

    def effective(self, su: str, records: Mapping[str, AssignmentRecord | None]) -> Readiness:
        """Its readiness as a decision sees it: counted out while a record names it."""
        if su in self._latched:
            if any(r is not None and su in r.members for r in records.values()):
                return Readiness.OUT_OF_SERVICE  # its old life's roles go first
            self._latched.discard(su)
        return self._state[su]

    # -- changes --------------------------------------------------------------------------
    def start(self) -> None:
        """Any lease a component holds was granted before this manager started (ADR
        0008); the grace gives live components time to reconnect before they are
        counted out."""
        started = self._clock.mono_ns() + self._settings.amf_takeover_grace_ms * 1_000_000
        self._last_grant_ns = dict.fromkeys(self._roster.group_of, started)

    def out_of_service(self, su: str, why: str, *, life: Life | None = None) -> bool:
        """Count ``su`` out; ``life``: the life that failed, if the report names one
        (another life registered since: nothing changes). True when counted out."""
        if not self._current(su, life, why):
            return False
        if self._state[su] is not Readiness.OUT_OF_SERVICE:
            log.info("SU %s out of service: %s", su, why)
        self._state[su] = Readiness.OUT_OF_SERVICE
        self._latched.add(su)
        self._on_out(su, why)
        return True

    def suspect(self, su: str, why: str, *, life: Life | None = None) -> None:
        if not self._current(su, life, why):
            return
        if self._state[su] in (Readiness.IN_SERVICE, Readiness.UNKNOWN):
            log.info("SU %s suspect: %s", su, why)
            self._state[su] = Readiness.SUSPECT

    def _current(self, su: str, life: Life | None, why: str) -> bool:
        registered = self._life.get(su)
        if life is None or registered is None or registered == life:
            return True
        log.info("SU %s: not acting on '%s': it is about pid %d, the SU registered since"
                 " (pid %d)", su, why, life.pid, registered.pid)
        return False

    def answered(self, su: str) -> None:
        self._last_answer_ns[su] = self._clock.mono_ns()
        if self._state[su] is Readiness.SUSPECT and self._connected(su):
            self._state[su] = Readiness.IN_SERVICE

    def register(self, su: str, life: Life, held: Iterable[Held],
                 named: Mapping[str, AssignmentRecord]) -> bool:
        """``su`` registered (``held``: the roles it says it holds; ``named``: the
        records that name it). True when it keeps those roles (adopted: the same
        life reconnecting, or one whose roles match the records after this manager
        started); else, named anywhere, it is latched until out of every record."""
        holds: dict[str, tuple[str, int]] = {h.si: (h.ha_state, h.epoch) for h in held}
        known = self._life.get(su)
        # Counted out (latched), it gets no role back until out of every record, even
        # on the same incarnation: a partitioned active's record moved on without it.
        adopt = su not in self._latched and (
            (known is not None and known.incarnation == life.incarnation)
            or (known is None and all(holds.get(si, ("", 0))[0] == (r.ha_state_of(su) or "")
                                      for si, r in named.items())))
        if named and not adopt:
            self._latched.add(su)  # its roles died with its previous life
        self._life[su] = life
        self._state[su] = Readiness.IN_SERVICE
        self.answered(su)
        return adopt

    # -- leases ---------------------------------------------------------------------------
    def grant(self, su: str, n: int) -> dict[str, Any] | None:
        """The answer to lease request ``n`` (None: no answer). No lease for an SU
        counted out of service until it is out of every record; a grant states every
        record's assignment to the SU, so an order lost or overtaken is corrected by
        the next grant."""
        if not self._allowed():
            return None  # no longer leading (ADR 0013): silence, the lease runs out by itself
        vnf = self._roster.group_of[su]
        records = self._roster.records(vnf)
        if self.effective(su, records) is Readiness.OUT_OF_SERVICE:
            return {"op": "grant", "n": n, "granted": False}
        self._last_grant_ns[su] = self._clock.mono_ns()
        group = self._roster.groups[vnf]
        return {"op": "grant", "n": n, "granted": True, "assignments": [
            self._roster.assignment(group, r, r.ha_state_of(su))
            for r in records.values() if r is not None]}

    def check_leases(self) -> list[str]:
        """Suspect after three missed lease requests; out of service once the lease of
        the last grant, plus the margin, is over: a grant runs from its request's send,
        before the grant, so the component has quiesced itself by then (ADR 0008).
        Returns the SUs counted out that were never heard of since this manager
        started: their failure may have been stored but not acted on by the previous
        manager (a new leader's term), so they are to be started again."""
        now = self._clock.mono_ns()
        ping_ns = self._settings.amf_ping_interval_ms * 1_000_000
        gone_ns = (self._settings.amf_active_lease_ms
                   + self._settings.amf_lease_margin_ms) * 1_000_000
        silent: list[str] = []
        for su, r in self._state.items():
            if r is Readiness.OUT_OF_SERVICE:
                continue
            last = self._last_answer_ns.get(su)
            if r is Readiness.IN_SERVICE and last is not None and now - last > 3 * ping_ns:
                self.suspect(su, f"no lease request for {(now - last) / 1e6:.0f} ms")
            ungranted = now - self._last_grant_ns.get(su, now)
            if ungranted > gone_ns and (r is not Readiness.UNKNOWN or self._roster.named(su)):
                # An SU never heard of since the manager started matters only if a
                # record names it (the manager restarted while it was cut off).
                self.out_of_service(su, f"no lease granted for {ungranted / 1e6:.0f} ms:"
                                        " any lease it held has expired")
                if r is Readiness.UNKNOWN:
                    silent.append(su)
        return silent
