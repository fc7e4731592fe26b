"""The embedded SQLite event store: exactly-once appends and queries."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.sqlite import SqliteEventStore

RECEIVED = 1_800_000_100.0
RECEIVED_NS = 5_000_000_000


@pytest.fixture
def db_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nfvha-test-") as d:
        yield Path(d) / "store" / "events.db"  # the parent is created by the store


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteEventStore]:
    s = SqliteEventStore(db_path)
    try:
        yield s
    finally:
        s.close()


def event(
    host: str,
    seq: int,
    kind: Kind = Kind.VM_CRASHED,
    entity: str = "vm/vm1",
    origin: str = "agent",
    description: str = "",
) -> Event:
    return Event(
        host=host,
        seq=seq,
        origin=origin,
        kind=kind,
        entity=entity,
        severity=Severity.CRITICAL,
        event_type=EventType.EQUIPMENT_ALARM,
        probable_cause="test",
        description=description,
        event_time=1_800_000_000.0 + seq,
        detected_mono_ns=1_000 + seq,
        details={"seq": seq, "nested": {"ok": True}},
    )


def controller_event(host: str, kind: Kind = Kind.HOST_DOWN) -> Event:
    return event(host, 0, kind=kind, entity=f"host/{host}", origin="controller")


def test_append_returns_stored_events_with_ids(store: SqliteEventStore) -> None:
    evs = [event("h1", 1), event("h1", 2)]
    stored = store.append(evs, RECEIVED, RECEIVED_NS)
    assert len(stored) == 2
    assert stored[0].id > 0
    assert stored[1].id > stored[0].id
    for s, e in zip(stored, evs, strict=True):
        assert s.received_time == RECEIVED
        assert s.received_mono_ns == RECEIVED_NS
        assert Event(**s.model_dump(exclude={"id", "received_time", "received_mono_ns"})) == e


def test_same_agent_event_is_stored_once(store: SqliteEventStore) -> None:
    first = store.append([event("h1", 1), event("h1", 2)], RECEIVED, RECEIVED_NS)
    again = store.append([event("h1", 2), event("h1", 3)], RECEIVED + 1, RECEIVED_NS + 1)
    assert [e.seq for e in again] == [3]
    assert [e.seq for e in store.events()] == [1, 2, 3]
    # The re-send did not overwrite the original.
    assert store.events()[1] == first[1]


def test_duplicate_within_one_batch_is_stored_once(store: SqliteEventStore) -> None:
    stored = store.append([event("h1", 1), event("h1", 1)], RECEIVED, RECEIVED_NS)
    assert len(stored) == 1
    assert len(store.events()) == 1


def test_same_seq_from_different_hosts_are_different_events(store: SqliteEventStore) -> None:
    stored = store.append([event("h1", 1), event("h2", 1)], RECEIVED, RECEIVED_NS)
    assert len(stored) == 2


def test_controller_events_with_seq_zero_always_insert(store: SqliteEventStore) -> None:
    a = store.append([controller_event("h1")], RECEIVED, RECEIVED_NS)
    b = store.append([controller_event("h1")], RECEIVED, RECEIVED_NS)
    c = store.append([controller_event("h1"), controller_event("h1")], RECEIVED, RECEIVED_NS)
    assert len(a) == len(b) == 1
    assert len(c) == 2
    assert len(store.events()) == 4
    assert store.last_seq("h1") == 0  # controller events do not move the agent's watermark


def test_last_seq_per_host(store: SqliteEventStore) -> None:
    assert store.last_seq("h1") == 0
    store.append([event("h1", 1), event("h1", 2), event("h2", 7)], RECEIVED, RECEIVED_NS)
    assert store.last_seq("h1") == 2
    assert store.last_seq("h2") == 7
    # Out of order: an older seq never lowers the watermark.
    store.append([event("h1", 5), event("h1", 3)], RECEIVED, RECEIVED_NS)
    assert store.last_seq("h1") == 5
    assert store.last_seq("h3") == 0


def test_events_filters(store: SqliteEventStore) -> None:
    stored = store.append(
        [
            event("h1", 1, Kind.VM_CRASHED, "vm/vm1"),
            event("h1", 2, Kind.VM_STARTED, "vm/vm1"),
            event("h2", 1, Kind.VM_CRASHED, "vm/vm2"),
            event("h2", 2, Kind.VNFC_CRASHED, "vnfc/c1"),
            controller_event("h1"),
        ],
        RECEIVED,
        RECEIVED_NS,
    )
    ids = [s.id for s in stored]
    assert [e.id for e in store.events()] == ids
    assert [e.id for e in store.events(after=ids[1])] == ids[2:]
    assert [e.id for e in store.events(limit=2)] == ids[:2]
    assert [e.id for e in store.events(kind="vm.crashed")] == [ids[0], ids[2]]
    assert [e.id for e in store.events(kind=Kind.VM_CRASHED)] == [ids[0], ids[2]]
    assert [e.id for e in store.events(entity="vm/vm1")] == ids[:2]
    assert [e.id for e in store.events(host="h2")] == ids[2:4]
    assert [e.id for e in store.events(host="h1", kind="vm.crashed")] == [ids[0]]
    assert [e.id for e in store.events(host="h1", after=ids[0], limit=1)] == [ids[1]]
    assert store.events(kind="link.down") == []


def test_latest(store: SqliteEventStore) -> None:
    assert store.latest("vm.crashed", "vm/vm1") is None
    store.append([event("h1", 1, description="first")], RECEIVED, RECEIVED_NS)
    store.append([event("h1", 2, Kind.VM_STARTED)], RECEIVED, RECEIVED_NS)
    store.append([event("h1", 3, description="second")], RECEIVED, RECEIVED_NS)
    latest = store.latest("vm.crashed", "vm/vm1")
    assert latest is not None
    assert latest.description == "second"
    assert store.latest("vm.crashed", "vm/other") is None


def test_max_id(store: SqliteEventStore) -> None:
    assert store.max_id() == 0
    stored = store.append([event("h1", 1), event("h1", 2)], RECEIVED, RECEIVED_NS)
    assert store.max_id() == stored[-1].id
    store.append([event("h1", 2)], RECEIVED, RECEIVED_NS)  # duplicate: no new id
    assert store.max_id() == stored[-1].id


def test_host_conditions(store: SqliteEventStore) -> None:
    cond = Event(
        host="h1", seq=1, kind=Kind.HOST_CONDITION, entity="host/h1",
        severity=Severity.WARNING, event_type=EventType.ENVIRONMENTAL_ALARM,
        probable_cause="condition", informational=True, event_time=123.0,
        detected_mono_ns=1, details={"temp_c": 41.5},
    )
    store.append([cond, event("h1", 2)], RECEIVED, RECEIVED_NS)
    assert store.host_conditions("h1") == [{"time": 123.0, "temp_c": 41.5}]
    assert store.host_conditions("h2") == []


def test_data_survives_reopening(db_path: Path) -> None:
    s = SqliteEventStore(db_path)
    stored = s.append([event("h1", 1), event("h1", 2), controller_event("h1")],
                      RECEIVED, RECEIVED_NS)
    s.close()

    s2 = SqliteEventStore(db_path, fsync=True)
    try:
        assert s2.events() == stored
        assert s2.last_seq("h1") == 2
        assert s2.max_id() == stored[-1].id
        # Exactly-once holds across the restart, and ids keep growing.
        assert s2.append([event("h1", 2)], RECEIVED, RECEIVED_NS) == []
        new = s2.append([event("h1", 3)], RECEIVED, RECEIVED_NS)
        assert new[0].id > stored[-1].id
    finally:
        s2.close()
