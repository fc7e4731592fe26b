"""The scenario probe's arithmetic: outages and lost state from samples."""

from __future__ import annotations

from nfvha.testbed.probe import Sample, lost_increments, outage_after, outages_after

MS = 1_000_000


def ok(t_ms: int, value: int) -> Sample:
    return Sample(t_ms * MS, t_ms * MS + MS, value, "a")


def bad(t_ms: int) -> Sample:
    return Sample(t_ms * MS, None)


def test_outage_is_the_longest_interruption_after_the_fault() -> None:
    samples = [ok(0, 1), bad(5), bad(10), ok(15, 2), ok(20, 3), bad(400), ok(405, 4)]
    assert [o.ms for o in outages_after(samples, 1 * MS)] == [11.0, 6.0]
    outage = outage_after(samples, 1 * MS)
    assert outage is not None and outage.ms == 11.0


def test_no_failure_no_outage_and_a_service_that_never_came_back() -> None:
    assert outage_after([ok(0, 1), ok(5, 2)], 0) is None
    never = outage_after([ok(0, 1), bad(5), bad(10), bad(15)], 1 * MS)
    assert never is not None and never.ms == 10.0


def test_lost_increments_counts_what_an_answer_forgot() -> None:
    assert lost_increments([ok(0, 1), ok(5, 2), bad(10), ok(15, 3)]) == 0
    # 3 acknowledged, then the service answers 1: increments 2 and 3 were lost.
    assert lost_increments([ok(0, 1), ok(5, 2), ok(10, 3), ok(15, 1)]) == 3
