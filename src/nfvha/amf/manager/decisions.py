"""Role decisions: snapshot -> ``engine.decide`` -> compare-and-set -> orders (ADR 0008).

Whenever what the manager knows about a group changes, the group is *kicked*; kicked
groups are decided once each on the next turn of the loop, however many kicks came.
Each decision is made from an immutable snapshot of the records and the SUs'
readiness; the new records are written with compare-and-set first, then the orders
go out carrying the new epoch. A lost compare-and-set means someone else wrote: read
again and decide again, never send orders from a stale view.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nfvha.amf.engine import decide, orders
from nfvha.amf.manager.readiness import ReadinessTracker
from nfvha.amf.manager.roster import Roster
from nfvha.amf.model import AssignmentRecord, Order, ServiceGroup, Snapshot, SuView
from nfvha.store.assignments import AssignmentStore
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock

log = logging.getLogger(__name__)

MAX_DECISION_ROUNDS = 4  # a restarted SU: removed in one round, reassigned in the next
DECISIONS_KEPT = 1000  # the latest written records, for observers


@dataclass
class Decision:
    """One written record, for observers (the scenario runner, the API)."""

    vnf: str
    record: AssignmentRecord
    decided_mono_ns: int
    reason: str


class Decider:
    """``send(su, message)``: to the SU's session, if it has one. ``allowed()``: the
    leader gate (ADR 0013), asked before every decision."""

    def __init__(self, roster: Roster, readiness: ReadinessTracker, store: AssignmentStore,
                 clock: Clock, *, send: Callable[[str, dict[str, Any]], None],
                 allowed: Callable[[], bool]) -> None:
        self._roster = roster
        self._readiness = readiness
        self._store = store
        self._clock = clock
        self._send = send
        self._allowed = allowed
        self._kicked: dict[str, str] = {}  # vnf -> why
        self._retry: set[str] = set()  # groups whose decision met an unavailable store
        self.decisions: deque[Decision] = deque(maxlen=DECISIONS_KEPT)
        self._last: dict[str, Decision] = {}  # si -> the last record this manager wrote

    def last(self, si: str) -> Decision | None:
        """The last decision this manager wrote for ``si``."""
        return self._last.get(si)

    def kick(self, vnf: str, why: str) -> None:
        if not self._kicked:
            asyncio.get_running_loop().call_soon(self._decide_kicked)
        self._kicked.setdefault(vnf, why)

    def retry(self) -> None:
        """Decide again the groups whose decision met an unavailable store."""
        retry, self._retry = self._retry, set()
        for vnf in retry:
            self.kick(vnf, "retry after store failure")

    def _decide_kicked(self) -> None:
        kicked, self._kicked = self._kicked, {}
        if not self._allowed():  # leader gate (ADR 0013)
            log.info("not the leader: no decision for %s", sorted(kicked))
            return
        for vnf, why in kicked.items():
            try:
                self.decide(vnf, why)
            except StoreUnavailable:
                log.exception("assignment store unavailable; %s decided again later", vnf)
                self._retry.add(vnf)

    def decide(self, vnf: str, why: str) -> None:
        group = self._roster.groups[vnf]
        endpoint = self._roster.endpoint
        for _ in range(MAX_DECISION_ROUNDS):
            records = self._roster.records(vnf)
            snapshot = Snapshot(
                group=group, records=records, now=self._clock.wall(),
                sus={su: SuView(name=su, readiness=self._readiness.effective(su, records),
                                vm=endpoint[su].vm, host=endpoint[su].host)
                     for su in group.sus})
            new = decide(snapshot)
            if not new:
                return
            for rec in new:
                old = records[rec.si]
                if not self._store.compare_and_set(rec.si, old.epoch if old else 0, rec):
                    log.warning("lost the assignment race for %s; deciding again", rec.si)
                    break
                decision = Decision(vnf, rec, self._clock.mono_ns(), why)
                self.decisions.append(decision)
                self._last[rec.si] = decision
                log.info("%s epoch %d: active %s, standby %s (%s)", rec.si, rec.epoch,
                         list(rec.active), list(rec.standby), why)
                for order in orders(old, rec):
                    self.send_order(group, rec, order)
        log.error("%s: no stable assignment after %d rounds", vnf, MAX_DECISION_ROUNDS)

    def send_order(self, group: ServiceGroup, rec: AssignmentRecord, order: Order) -> None:
        if order.ha_state is None:
            self._send(order.su, {"op": "remove", "si": order.si, "epoch": order.epoch})
        else:
            self._send(order.su, {"op": "assign",
                                  **self._roster.assignment(group, rec, order.ha_state)})
