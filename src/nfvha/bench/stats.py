"""Percentiles for latency tables (nearest-rank, so p99 of 50 samples is a real sample)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(samples: Sequence[float], p: float) -> float:
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    # Integer arithmetic: ceil(99.9 / 100 * 1000) is 1000 in floating point, not 999.
    rank = max(1, -(-round(p * 1000) * len(ordered) // 100_000))
    return ordered[rank - 1]


def summary(kind: str, samples_ms: Sequence[float]) -> dict[str, float | int | str]:
    return {
        "kind": kind,
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 2),
        "p99_ms": round(percentile(samples_ms, 99), 2),
        "max_ms": round(max(samples_ms), 2),
    }
