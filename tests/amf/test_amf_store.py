"""The SQLite assignment store: compare-and-set on epochs, checkpoints, durability."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from amf_support import record

from nfvha.store.assignments import AssignmentStore, SqliteAssignmentStore
from nfvha.store.base import StoreUnavailable
from nfvha.store.schema import current, head


@pytest.fixture
def db_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nfvha-test-amf-") as d:
        yield Path(d) / "controller" / "amf.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteAssignmentStore]:
    s = SqliteAssignmentStore(db_path)
    try:
        yield s
    finally:
        s.close()


def test_the_store_is_an_assignment_store(store: SqliteAssignmentStore, db_path: Path) -> None:
    typed: AssignmentStore = store
    assert typed.all() == {}
    assert current(db_path, "amf") == head("amf") == "amf_0001"


def test_compare_and_set_on_the_epoch(store: SqliteAssignmentStore) -> None:
    first = record("gw", 1, active=["a"], standby=["b"])
    assert store.compare_and_set("gw", 0, first)
    assert not store.compare_and_set("gw", 0, first)  # exists already
    second = record("gw", 2, active=["b"])
    assert store.compare_and_set("gw", 1, second)
    assert not store.compare_and_set("gw", 1, second)  # stale expectation
    assert store.get("gw") == second
    assert store.get("other") is None
    assert not store.compare_and_set("other", 3, record("other", 4))  # no such record
    assert store.all() == {"gw": second}


@pytest.mark.parametrize(("si", "expected", "epoch"), [
    ("gw", 1, 3),   # not expected + 1
    ("gw", 0, 0),   # epoch 0 is never stored
    ("x", 0, 1),    # record of another SI
    ("gw", -1, 0),
])
def test_compare_and_set_checks_its_arguments(store: SqliteAssignmentStore, si: str,
                                              expected: int, epoch: int) -> None:
    with pytest.raises(ValueError):
        store.compare_and_set(si, expected, record("gw", epoch, active=["a"]))
    assert store.all() == {}


@pytest.mark.parametrize("expected", [0, 1])
def test_racing_writers_exactly_one_wins(db_path: Path, expected: int) -> None:
    setup = SqliteAssignmentStore(db_path)
    if expected:
        assert setup.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    writers = [SqliteAssignmentStore(db_path) for _ in range(8)]
    start = threading.Barrier(len(writers))
    results: list[bool] = [False] * len(writers)

    def write(i: int) -> None:
        start.wait()
        results[i] = writers[i].compare_and_set(
            "gw", expected, record("gw", expected + 1, active=[f"w{i}"]))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        assert results.count(True) == 1
        winner = results.index(True)
        assert setup.get("gw") == record("gw", expected + 1, active=[f"w{winner}"])
    finally:
        for w in [setup, *writers]:
            w.close()


def test_reopened_store_keeps_records_and_checkpoints(db_path: Path) -> None:
    s = SqliteAssignmentStore(db_path, fsync=True)
    r = record("gw", 1, active=["a"], standby=["b"])
    assert s.compare_and_set("gw", 0, r)
    assert s.checkpoint_write("gw-a", "sessions", {"n": 1}) == 1
    s.close()
    s = SqliteAssignmentStore(db_path)
    try:
        assert s.get("gw") == r
        assert s.checkpoint_read("gw-a", "sessions") == (1, {"n": 1})
        assert s.compare_and_set("gw", 1, record("gw", 2, active=["b"]))
    finally:
        s.close()


def test_checkpoint_versions_count_writes_per_key(store: SqliteAssignmentStore) -> None:
    assert store.checkpoint_read("gw-a", "sessions") is None
    assert store.checkpoint_write("gw-a", "sessions", [1, 2]) == 1
    assert store.checkpoint_write("gw-a", "sessions", {"x": None}) == 2
    assert store.checkpoint_write("gw-a", "other", "v") == 1
    assert store.checkpoint_write("gw", "sessions", 3.5) == 1
    assert store.checkpoint_read("gw-a", "sessions") == (2, {"x": None})
    assert store.checkpoint_read("gw", "sessions") == (1, 3.5)


@pytest.mark.parametrize("value", [object(), float("nan"), {1j: 2}])
def test_checkpoint_values_must_be_json(store: SqliteAssignmentStore, value: object) -> None:
    with pytest.raises(ValueError, match="not JSON"):
        store.checkpoint_write("gw-a", "k", value)
    assert store.checkpoint_read("gw-a", "k") is None


def test_sqlite_errors_are_store_unavailable(db_path: Path) -> None:
    s = SqliteAssignmentStore(db_path)
    s.close()  # a closed connection fails every call with a sqlite3 error
    with pytest.raises(StoreUnavailable):
        s.get("gw")
    with pytest.raises(StoreUnavailable):
        s.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    with pytest.raises(StoreUnavailable):
        s.checkpoint_write("gw-a", "k", 1)


def test_an_unopenable_store_is_unavailable(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreUnavailable):
        SqliteAssignmentStore(db_path)
