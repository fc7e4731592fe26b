"""The vocabulary of availability management (OpenSAF AMF, ADR 0008).

One component per service unit (SU) here, so an SU is named after its VNFC;
the service group (SG) is the VNF; a service instance (SI) is the workload the
SG assigns. Everything is immutable: the engine decides from a ``Snapshot``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import Field, model_validator

from nfvha.model.settings import Strict
from nfvha.model.topology import EscalationPolicy, Redundancy, VnfSpec


class HaState(StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"
    QUIESCING = "quiescing"
    QUIESCED = "quiesced"


class Readiness(StrEnum):
    """What the AM knows about an SU; only ``OUT_OF_SERVICE`` lets it move a role away."""

    IN_SERVICE = "in-service"
    # Unreachable, but may still be acting (holding the VIP): never replaced while suspect.
    SUSPECT = "suspect"
    # Confirmed not acting: process exit, VM crash, host fenced, or active lease expired.
    OUT_OF_SERVICE = "out-of-service"
    # Not seen since the AM started: may be acting, as far as the AM knows.
    UNKNOWN = "unknown"


class Recommendation(StrEnum):
    COMPONENT_RESTART = "component-restart"
    COMPONENT_FAILOVER = "component-failover"
    SU_FAILOVER = "su-failover"
    NODE_FAILOVER = "node-failover"  # ask the VIM to repair the VM
    NODE_FAILFAST = "node-failfast"  # ask the VIM to repair the host
    NO_RECOMMENDATION = "no-recommendation"


class AssignmentRecord(Strict):
    """Who holds an SI, as of ``epoch``; the one source of truth for roles.

    ``epoch`` is the fencing token every order carries. Epoch 0 is never stored:
    it is the ``expected_epoch`` of a record that does not exist yet."""

    si: str = Field(min_length=1)
    epoch: int = Field(ge=0)
    active: tuple[str, ...] = ()
    standby: tuple[str, ...] = ()
    changed_time: float

    @model_validator(mode="after")
    def _one_role_each(self) -> AssignmentRecord:
        members = self.active + self.standby
        if len(set(members)) != len(members):
            raise ValueError(f"an SU appears twice in the assignment of {self.si}: {members}")
        return self

    def ha_state_of(self, su: str) -> HaState | None:
        if su in self.active:
            return HaState.ACTIVE
        if su in self.standby:
            return HaState.STANDBY
        return None

    @property
    def members(self) -> tuple[str, ...]:
        return self.active + self.standby


class Order(Strict):
    """What one component must be told: ``ha_state`` None means "remove" (no role)."""

    su: str
    si: str
    ha_state: HaState | None
    epoch: int = Field(ge=1)


def _standbys_per_si(redundancy: Redundancy) -> int:
    return 0 if redundancy in ("none", "n-way-active") else 1


class ServiceGroup(Strict):
    """The configuration of one SG (a VNF): its SUs, its SIs, its escalation policy.

    SIs: ``2n``, ``none``, ``n-way-active`` assign one SI named after the VNF;
    ``n+m`` assigns N SIs ``<vnf>-1 .. <vnf>-N`` (N = ``active``), one active SU
    each, the M spare SUs being their standbys; ``n-way`` assigns one SI fewer
    than it has SUs (at least one), so that after one SU failure every SI can
    still have an active on an SU of its own and a standby."""

    name: str
    redundancy: Redundancy
    sus: tuple[str, ...] = Field(min_length=1, description="SU names, most preferred first")
    sis: tuple[str, ...] = Field(min_length=1)
    escalation: EscalationPolicy = Field(default_factory=EscalationPolicy)
    # The SUs keep state: only a standby (it has the state) may take an SI's active.
    stateful: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ServiceGroup:
        for what, names in (("SU", self.sus), ("SI", self.sis)):
            if len(set(names)) != len(names):
                raise ValueError(f"{self.name}: duplicate {what} names in {names}")
        if self.redundancy in ("2n", "none", "n-way-active") and len(self.sis) != 1:
            raise ValueError(f"{self.name}: redundancy {self.redundancy} assigns exactly one SI")
        return self

    @classmethod
    def from_vnf(cls, vnf: VnfSpec) -> ServiceGroup:
        sus = tuple(c.name for c in vnf.components)
        if vnf.redundancy == "n+m":
            n = vnf.active or 1  # the topology check guarantees active is set for n+m
            sis = tuple(f"{vnf.name}-{i}" for i in range(1, n + 1))
        elif vnf.redundancy == "n-way":
            sis = tuple(f"{vnf.name}-{i}" for i in range(1, max(1, len(sus) - 1) + 1))
        else:
            sis = (vnf.name,)
        return cls(name=vnf.name, redundancy=vnf.redundancy, sus=sus, sis=sis,
                   escalation=vnf.escalation, stateful=vnf.stateful)

    def single_active(self, si: str) -> bool:
        """At most one active for ``si`` (every model but ``n-way-active``)."""
        return self.redundancy != "n-way-active"

    @property
    def standbys_per_si(self) -> int:
        return _standbys_per_si(self.redundancy)

    @property
    def exclusive_roles(self) -> bool:
        """2N and N+M: an SU holds only active or only standby assignments (AMF);
        in N-way an SU may be active for one SI and standby for others."""
        return self.redundancy in ("2n", "n+m", "none")

    def preference(self, su: str) -> int:
        """Rank of ``su`` (lower is preferred); SUs no longer configured rank last."""
        try:
            return self.sus.index(su)
        except ValueError:
            return len(self.sus)


class SuView(Strict):
    name: str
    readiness: Readiness
    vm: str | None = None
    host: str | None = None


class Snapshot(Strict):
    """Everything one decision is made from; ``now`` is wall time (``Clock.wall``),
    stamped on the records written as ``changed_time``."""

    group: ServiceGroup
    sus: Mapping[str, SuView]
    records: Mapping[str, AssignmentRecord | None]
    now: float

    def readiness(self, su: str) -> Readiness:
        view = self.sus.get(su)
        return view.readiness if view is not None else Readiness.UNKNOWN

    def record(self, si: str) -> AssignmentRecord | None:
        return self.records.get(si)

    def applied(self, records: Iterable[AssignmentRecord]) -> Snapshot:
        """This snapshot with ``records`` written over the stored ones."""
        merged: dict[str, AssignmentRecord | None] = dict(self.records)
        merged.update((r.si, r) for r in records)
        return self.model_copy(update={"records": merged})
