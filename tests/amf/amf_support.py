"""Builders shared by the availability-management tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from nfvha.amf.model import AssignmentRecord, Readiness, ServiceGroup, Snapshot, SuView
from nfvha.model.topology import ComponentSpec, Redundancy, VnfSpec

NOW = 1_800_000_000.0
IN = Readiness.IN_SERVICE
OUT = Readiness.OUT_OF_SERVICE
SUSPECT = Readiness.SUSPECT
UNKNOWN = Readiness.UNKNOWN


def vnf(name: str, redundancy: Redundancy, components: int, *, active: int | None = None,
        spare: int | None = None, stateful: bool = False) -> VnfSpec:
    return VnfSpec(name=name, redundancy=redundancy, active=active, spare=spare,
                   stateful=stateful,
                   components=[ComponentSpec(name=f"{name}-{chr(ord('a') + i)}", vm=f"vm{i}")
                               for i in range(components)])


def group(name: str, redundancy: Redundancy, components: int, *, active: int | None = None,
          spare: int | None = None, stateful: bool = False) -> ServiceGroup:
    return ServiceGroup.from_vnf(vnf(name, redundancy, components, active=active, spare=spare,
                                     stateful=stateful))


def snapshot(g: ServiceGroup, readiness: Mapping[str, Readiness] | None = None,
             records: Iterable[AssignmentRecord] = (), now: float = NOW) -> Snapshot:
    """All SUs in service unless ``readiness`` says otherwise."""
    ready = dict.fromkeys(g.sus, IN) | dict(readiness or {})
    by_si: dict[str, AssignmentRecord | None] = dict.fromkeys(g.sis)
    by_si.update((r.si, r) for r in records)
    return Snapshot(group=g, sus={su: SuView(name=su, readiness=r) for su, r in ready.items()},
                    records=by_si, now=now)


def record(si: str, epoch: int, active: Iterable[str] = (), standby: Iterable[str] = (),
           changed_time: float = NOW) -> AssignmentRecord:
    return AssignmentRecord(si=si, epoch=epoch, active=tuple(active), standby=tuple(standby),
                            changed_time=changed_time)
