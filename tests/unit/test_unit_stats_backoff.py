"""Latency percentiles for the benchmark tables, and the restart backoff."""

from __future__ import annotations

import pytest

from nfvha.agent.hostprocs import Backoff
from nfvha.bench.stats import percentile, summary

# -- percentile: nearest rank, rank = ceil(p/100 * n), 1-based, at least 1 ------------

FIFTY = [float(i) for i in range(1, 51)]  # 1..50


def test_p99_of_fifty_samples_is_the_largest() -> None:
    # ceil(0.99 * 50) = 50: the 50th smallest, i.e. the largest; a real sample.
    assert percentile(FIFTY, 99) == 50.0


def test_p50_of_fifty_samples_is_the_25th_smallest() -> None:
    assert percentile(FIFTY, 50) == 25.0


@pytest.mark.parametrize(
    ("p", "n", "rank"),
    [(50, 10, 5), (90, 10, 9), (95, 100, 95), (99, 100, 99), (99, 1000, 990), (99, 200, 198),
     (50, 1, 1), (99, 1, 1), (100, 7, 7), (0, 7, 1), (1, 50, 1), (2, 50, 1), (3, 50, 2)],
)
def test_nearest_rank(p: float, n: int, rank: int) -> None:
    samples = [float(i) for i in range(1, n + 1)]
    assert percentile(samples, p) == float(rank)


def test_percentile_sorts_its_input_and_does_not_modify_it() -> None:
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 100) == 5.0
    assert samples == [5.0, 1.0, 4.0, 2.0, 3.0]


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_nearest_rank_with_fractional_percentile() -> None:
    samples = [float(i) for i in range(1, 1001)]
    assert percentile(samples, 99.9) == 999.0


def test_summary_keys_and_values() -> None:
    s = summary("vm.crash", [3.0, 1.0, 2.0, 4.123456])
    assert list(s) == ["kind", "n", "p50_ms", "p99_ms", "max_ms"]
    assert s == {"kind": "vm.crash", "n": 4, "p50_ms": 2.0, "p99_ms": 4.12, "max_ms": 4.12}


def test_summary_of_fifty() -> None:
    s = summary("host.down", FIFTY)
    assert s == {"kind": "host.down", "n": 50, "p50_ms": 25.0, "p99_ms": 50.0, "max_ms": 50.0}


# -- Backoff ------------------------------------------------------------------------


def test_backoff_starts_at_initial_and_doubles_up_to_max() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, reset_after_s=30)
    delays = [b.next_delay(ran_for_s=0.5) for _ in range(7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_resets_after_a_healthy_run() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0, reset_after_s=30)
    for _ in range(5):
        b.next_delay(ran_for_s=1)
    assert b.current_s == pytest.approx(1.0)
    assert b.next_delay(ran_for_s=30) == pytest.approx(0.1)  # at the threshold: reset
    assert b.next_delay(ran_for_s=29.9) == pytest.approx(0.2)  # below: keeps growing


def test_backoff_first_failure_is_initial_even_after_a_long_run() -> None:
    b = Backoff(initial_s=0.05, max_s=5.0, reset_after_s=30)
    assert b.next_delay(ran_for_s=1000) == pytest.approx(0.05)
    assert b.next_delay(ran_for_s=0) == pytest.approx(0.1)


def test_backoff_with_initial_equal_to_max_stays_flat() -> None:
    b = Backoff(initial_s=2.0, max_s=2.0, reset_after_s=30)
    assert [b.next_delay(0) for _ in range(3)] == [2.0, 2.0, 2.0]
