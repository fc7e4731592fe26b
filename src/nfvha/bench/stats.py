"""Percentiles for latency tables (nearest-rank, so p99 of 50 samples is a real sample)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(kind: str, samples_ms: Sequence[float]) -> dict[str, float | int | str]:
    return {
        "kind": kind,
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 2),
        "p99_ms": round(percentile(samples_ms, 99), 2),
        "max_ms": round(max(samples_ms), 2),
    }
