"""What the availability manager tells observers (``/v1/availability``, the scenario
runner): per VNF its SUs' readiness and, per SI, who holds it at which epoch and
when and why this manager last decided it."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from nfvha.amf.manager.decisions import Decision
from nfvha.amf.manager.readiness import ReadinessTracker
from nfvha.amf.manager.roster import Roster


class SuStatus(BaseModel):
    name: str
    readiness: str
    connected: bool


class SiStatus(BaseModel):
    si: str
    epoch: int
    active: list[str]
    standby: list[str]
    # The decision that wrote this epoch, when this manager made it (CLOCK_MONOTONIC,
    # one clock machine-wide), and why; None: another manager wrote it (a previous
    # leader), or no record yet.
    decided_mono_ns: int | None = None
    reason: str | None = None


class VnfAvailability(BaseModel):
    vnf: str
    redundancy: str
    service_units: list[SuStatus]
    service_instances: list[SiStatus]


def availability(roster: Roster, readiness: ReadinessTracker,
                 connected: Callable[[str], bool],
                 last: Callable[[str], Decision | None]) -> list[VnfAvailability]:
    out = []
    for vnf, g in roster.groups.items():
        sis = []
        for si, r in roster.records(vnf).items():
            d = last(si)
            mine = d is not None and r is not None and d.record.epoch == r.epoch
            sis.append(SiStatus(si=si, epoch=r.epoch if r else 0,
                                active=list(r.active) if r else [],
                                standby=list(r.standby) if r else [],
                                decided_mono_ns=d.decided_mono_ns if d and mine else None,
                                reason=d.reason if d and mine else None))
        out.append(VnfAvailability(
            vnf=vnf, redundancy=g.redundancy,
            service_units=[SuStatus(name=su, readiness=readiness[su].value,
                                    connected=connected(su)) for su in g.sus],
            service_instances=sis))
    return out
