"""What ``nfvha bench abuse`` does and says: its options, which VNFCs it crashes and
which VNFs it watches on a topology, and its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nfvha.model.topology import EscalationStep, Topology

FIGURES = ("actives_lost", "probe_outage_ms", "lease_late_max_ms", "detect_p99_ms",
           "detect_p99_idle_ms", "rss_growth_mb")
# Repeated crashes of one VNFC stay VNFC restarts (the bench's faults are not meant to
# escalate into VM repairs).
NO_ESCALATION = EscalationStep(max=1000, probation_s=60)


@dataclass(frozen=True)
class AbuseOptions:
    vnf: str = "gw"
    duration_s: float = 30.0
    faults: int = 10
    connections: int = 300
    slow: int = 100
    body_workers: int = 4
    flood_cpu: float = 1.0  # cores for the flood processes; 0: not capped
    settle_s: float = 3.0
    sizes: tuple[int, ...] = (10_000_000, 200_000)


@dataclass(frozen=True)
class AbusePlan:
    vnf: str  # the 2N VNF under test
    targets: list[str]  # the VNFCs crashed, in turn
    watched: list[str]  # the VNFs whose actives must hold: the 2N VNF and the unfaulted


def make_plan(t: Topology, vnf: str) -> AbusePlan:
    """Which VNFCs to crash and which VNFs to watch; ValueError if the topology has no
    2N VNF ``vnf`` under the generic VNFM with a VIP, or nothing else to fault."""
    try:
        spec = t.vnf(vnf)
    except KeyError:
        raise ValueError(f"no VNF '{vnf}'; valid: {', '.join(v.name for v in t.vnfs)}"
                         ) from None
    if spec.redundancy != "2n" or spec.vnfm != "generic" or spec.service_address is None \
            or spec.service_address.kind != "vip":
        raise ValueError(f"VNF '{vnf}' must be 2N under the generic VNFM with a VIP")
    faulted = [v for v in t.vnfs if v.vnfm == "generic" and v.name != vnf
               and v.redundancy != "2n" and v.balances is None]
    if not faulted:
        raise ValueError("no VNF to fault: the faults go to the VNFCs of generic-VNFM VNFs"
                         f" other than '{vnf}' that are neither 2N nor load balancers")
    names = {v.name for v in faulted}
    return AbusePlan(vnf=vnf, targets=[c.name for v in faulted for c in v.components],
                     watched=[v.name for v in t.vnfs
                              if v.vnfm == "generic" and v.name not in names])


def bench_topology(t: Topology, plan: AbusePlan) -> Topology:
    targets = set(plan.targets)
    vnfs = []
    for v in t.vnfs:
        if any(c.name in targets for c in v.components):
            v = v.model_copy(update={"escalation": v.escalation.model_copy(
                update={"vnfc_restart": NO_ESCALATION})})
        vnfs.append(v)
    return t.model_copy(update={"vnfs": vnfs})


@dataclass
class AbuseResult:
    actives_lost: int | None = None
    probe_outage_ms: float | None = None
    lease_late_max_ms: float | None = None
    detect_p99_ms: float | None = None
    detect_p99_idle_ms: float | None = None
    rss_growth_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The six figures first, in this order; then what else was measured."""
        return {**{k: getattr(self, k) for k in FIGURES}, **self.extra,
                "errors": self.errors}
