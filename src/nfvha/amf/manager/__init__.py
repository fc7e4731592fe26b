"""The manager side of availability management (OpenSAF's AMF director role, ADR 0008).

``AvailabilityManager`` (``am``) wires together one module per job: ``roster`` (the
service groups, where their SUs live, their records), ``sessions`` (the components'
SDK connections), ``readiness`` (readiness, registered lives, leases, the counted-out
latch), ``decisions`` (snapshot -> engine -> compare-and-set -> orders),
``failures`` (the VIM's stored events and the agents' notices), ``repair``
(escalation -> repairs through the VIM's port), ``members`` (IF-2 load-balancer
reports), ``checkpoints`` (IF-3) and ``status``. It runs in the HA director (ADR
0014) as the generic VNFM, and in a VNF's own AM (``nfvha.amf.own``). Nothing here
imports the controller: what it needs of the VIM comes through ``nfvha.amf.ports``.
"""

from nfvha.amf.manager.am import AvailabilityManager
from nfvha.amf.manager.decisions import Decision
from nfvha.amf.manager.status import SiStatus, SuStatus, VnfAvailability

__all__ = ["AvailabilityManager", "Decision", "SiStatus", "SuStatus", "VnfAvailability"]
