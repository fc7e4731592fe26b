"""A host's liveness as the controller and the HA director both speak of it (ADR 0015)."""

from __future__ import annotations

from enum import StrEnum


class HostState(StrEnum):
    UNKNOWN = "unknown"  # never heard of since the director started (or its term began)
    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
