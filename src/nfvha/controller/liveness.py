"""Host liveness now lives in ``nfvha.director.liveness`` (ADR 0015); the controller's
modules still import it from here until the HA director process takes the loop over
(ADR 0014), when this module goes."""

from __future__ import annotations

from nfvha.director.liveness import (
    HostLiveness,
    HostRecord,
    HostState,
    PowerStatus,
    ProbeRequest,
    TickResult,
    Transition,
)

__all__ = ["HostLiveness", "HostRecord", "HostState", "PowerStatus", "ProbeRequest",
           "TickResult", "Transition"]
