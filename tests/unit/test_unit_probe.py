"""The scenario probe's arithmetic: outages and lost state from samples."""

from __future__ import annotations

import itertools
import socket
import time

from nfvha.testbed.probe import (
    Outage,
    Sample,
    ServiceProbe,
    first_answer_after,
    lost_increments,
    outage_after,
    outages_after,
)

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


def test_first_answer_is_the_end_of_the_first_interruption() -> None:
    samples = [ok(0, 1), bad(5), bad(10), ok(15, 2), bad(400), bad(405), bad(410), ok(415, 3)]
    # The failover's answer (16 ms), not the longer interruption that came later.
    assert first_answer_after(samples, 1 * MS) == 16 * MS
    assert outage_after(samples, 1 * MS) == Outage(400 * MS, 416 * MS)


def test_first_answer_without_an_interruption_is_the_new_responders() -> None:
    moved = [Sample(0, MS, 1, "gw-a"), Sample(5 * MS, 6 * MS, 2, "gw-a"),
             Sample(10 * MS, 11 * MS, 3, "gw-b")]
    assert first_answer_after(moved, 2 * MS) == 11 * MS  # fell between two requests
    assert first_answer_after(moved[:2], 2 * MS) is None  # nothing moved


def test_a_sample_crosses_from_the_probe_process_unchanged() -> None:
    for s in (ok(3, 7), Sample(5, None, failure="timeout"), Sample(1, 2, None, "x")):
        assert Sample.parse(s.line()) == s
    assert Sample.parse("garbage") is None


class _Silent:
    """A UDP port that takes requests and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.addr: tuple[str, int] = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()


def test_the_probe_sends_on_while_earlier_requests_wait_for_their_timeout() -> None:
    """A probe that waited for each request's timeout before sending the next would take
    its own timeout for outage: requests go out every interval regardless."""
    silent = _Silent()
    probe = ServiceProbe(silent.addr, "t", interval_s=0.005, timeout_s=0.2)
    try:
        probe.start()
        deadline = time.monotonic() + 20
        while len(probe.snapshot()) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        probe.stop()
        silent.close()
    samples = probe.snapshot()
    assert len(samples) >= 30
    assert all(s.reply_ns is None and s.failure == "timeout" for s in samples)
    gaps = sorted(b.sent_ns - a.sent_ns for a, b in itertools.pairwise(samples))
    assert gaps[len(gaps) // 2] < 0.1 * 1e9  # about the interval, far below the timeout
