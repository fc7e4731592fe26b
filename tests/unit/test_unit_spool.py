"""The agent's on-disk event spool: what survives an agent restart."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.agent.spool import EventSpool
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.util.clock import ManualClock


@pytest.fixture
def spool_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nfvha-test-") as d:
        yield Path(d) / "spool"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def event(seq: int, host: str = "h1") -> Event:
    return Event(
        host=host,
        seq=seq,
        kind=Kind.VM_CRASHED,
        entity=f"vm/vm{seq}",
        severity=Severity.CRITICAL,
        event_type=EventType.EQUIPMENT_ALARM,
        probable_cause="vm-crash",
        description=f"event {seq}",
        event_time=1_800_000_000.0 + seq,
        detected_mono_ns=1_000_000_000 + seq,
        details={"n": seq},
    )


def fill(spool: EventSpool, count: int) -> list[Event]:
    out = []
    for _ in range(count):
        ev = event(spool.next_seq())
        spool.append(ev)
        out.append(ev)
    return out


def test_new_spool_is_empty(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    try:
        assert s.pending() == []
        assert s.acked_seq == 0
        assert s.next_seq() == 1
    finally:
        s.close()


def test_sequence_numbers_increase(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    try:
        assert [s.next_seq() for _ in range(3)] == [1, 2, 3]
    finally:
        s.close()


def test_appended_events_survive_a_new_spool(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    written = fill(s, 3)
    assert s.pending() == written
    s.close()

    s2 = EventSpool(spool_dir, clock)
    try:
        assert s2.pending() == written  # equal field by field, in order
        assert s2.next_seq() == 4
    finally:
        s2.close()


def test_ack_drops_pending_up_to_seq(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    try:
        written = fill(s, 5)
        s.ack(3)
        assert s.acked_seq == 3
        assert s.pending() == written[3:]
        s.ack(2)  # an older ack changes nothing
        assert s.acked_seq == 3
        assert s.pending() == written[3:]
        s.ack(5)
        assert s.pending() == []
    finally:
        s.close()


def test_ack_is_persisted(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    written = fill(s, 5)
    s.ack(3)
    s.close()

    s2 = EventSpool(spool_dir, clock)
    try:
        assert s2.acked_seq == 3
        assert s2.pending() == written[3:]
        assert s2.next_seq() == 6
    finally:
        s2.close()


def test_all_acked_next_seq_still_continues(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    fill(s, 4)
    s.ack(4)
    s.close()

    s2 = EventSpool(spool_dir, clock)
    try:
        assert s2.pending() == []
        assert s2.next_seq() == 5
    finally:
        s2.close()


def test_resync_renumbers_events_the_controller_would_take_for_duplicates(
        spool_dir: Path, clock: ManualClock) -> None:
    """A controller that has more of this host's events than the spool knows (the
    spool was lost) must neither drop the events numbered since nor see new ones
    re-use its numbers."""
    s = EventSpool(spool_dir, clock)
    try:
        fill(s, 2)
        s.resync(10)
        assert [e.seq for e in s.pending()] == [11, 12]
        assert s.next_seq() == 13
    finally:
        s.close()
    again = EventSpool(spool_dir, clock)  # the renumbering is on disk too
    try:
        assert [e.seq for e in again.pending()] == [11, 12]
    finally:
        again.close()


def test_resync_with_controller_behind_acks_what_it_has(
        spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    try:
        fill(s, 3)
        s.resync(2)
        assert [e.seq for e in s.pending()] == [3]
    finally:
        s.close()


def test_torn_last_line_is_ignored(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    written = fill(s, 2)
    s.close()
    # A crash in the middle of a write leaves half a line at the end.
    with open(spool_dir / "spool.jsonl", "ab") as f:
        f.write(b'{"host": "h1", "seq": 3, "ki\xff\xfe')

    s2 = EventSpool(spool_dir, clock)
    try:
        assert s2.pending() == written
        assert s2.next_seq() == 3
    finally:
        s2.close()


def test_event_appended_after_a_torn_line_survives(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    fill(s, 1)
    s.close()
    with open(spool_dir / "spool.jsonl", "ab") as f:
        f.write(b'{"host": "h1", "se')

    s2 = EventSpool(spool_dir, clock)
    after_crash = fill(s2, 1)[0]
    assert after_crash.seq == 2
    s2.close()

    s3 = EventSpool(spool_dir, clock)
    try:
        assert after_crash in s3.pending()
        assert s3.next_seq() == 3
    finally:
        s3.close()


def test_blank_lines_are_skipped(spool_dir: Path, clock: ManualClock) -> None:
    s = EventSpool(spool_dir, clock)
    written = fill(s, 1)
    s.close()
    with open(spool_dir / "spool.jsonl", "ab") as f:
        f.write(b"\n   \n")
    s2 = EventSpool(spool_dir, clock)
    try:
        assert s2.pending() == written
    finally:
        s2.close()
