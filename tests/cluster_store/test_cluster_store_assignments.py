"""The assignment store's contract on SQLite and on etcd: compare-and-set on the epoch,
exactly one winner of a race, checkpoints; on etcd also watches."""

from __future__ import annotations

import asyncio
import threading

import pytest
from cluster_store_testutil import AssignmentBackend, Servers, record

from nfvha.amf.model import AssignmentRecord
from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd import EtcdAssignmentStore


def test_compare_and_set_wins_and_loses_on_the_epoch(assignments: AssignmentBackend) -> None:
    store = assignments.open()
    assert store.all() == {}
    first = record("gw", 1, active=["a"], standby=["b"])
    assert store.compare_and_set("gw", 0, first)
    assert not store.compare_and_set("gw", 0, first)  # exists already
    second = record("gw", 2, active=["b"])
    assert store.compare_and_set("gw", 1, second)
    assert not store.compare_and_set("gw", 1, record("gw", 2, active=["a"]))  # stale
    assert not store.compare_and_set("gw", 3, record("gw", 4))  # from the future
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
def test_epoch_rules_are_checked_before_writing(assignments: AssignmentBackend, si: str,
                                                expected: int, epoch: int) -> None:
    store = assignments.open()
    with pytest.raises(ValueError):
        store.compare_and_set(si, expected, record("gw", epoch, active=["a"]))
    assert store.all() == {}


@pytest.mark.parametrize("expected", [0, 3])
def test_racing_writers_exactly_one_wins(assignments: AssignmentBackend, expected: int) -> None:
    setup = assignments.open()
    for e in range(expected):
        assert setup.compare_and_set("gw", e, record("gw", e + 1, active=["a"]))
    writers = [assignments.open() for _ in range(6)]
    start = threading.Barrier(len(writers))
    results: list[bool | None] = [None] * len(writers)

    def write(i: int) -> None:
        start.wait()
        results[i] = writers[i].compare_and_set(
            "gw", expected, record("gw", expected + 1, active=[f"w{i}"]))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(writers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count(True) == 1 and results.count(False) == len(writers) - 1
    winner = results.index(True)
    assert setup.get("gw") == record("gw", expected + 1, active=[f"w{winner}"])


def test_another_instance_sees_records_and_checkpoints(assignments: AssignmentBackend) -> None:
    a = assignments.open()
    r = record("gw", 1, active=["a"], standby=["b"])
    assert a.compare_and_set("gw", 0, r)
    assert a.checkpoint_write("gw-a", "sessions", {"n": 1}) == 1
    a.close()
    b = assignments.open()  # a restarted controller, or another replica
    assert b.get("gw") == r
    assert b.checkpoint_read("gw-a", "sessions") == (1, {"n": 1})
    assert b.compare_and_set("gw", 1, record("gw", 2, active=["b"]))


def test_checkpoint_versions_count_writes_per_key(assignments: AssignmentBackend) -> None:
    store = assignments.open()
    assert store.checkpoint_read("gw-a", "sessions") is None
    assert store.checkpoint_write("gw-a", "sessions", [1, 2]) == 1
    assert store.checkpoint_write("gw-a", "sessions", {"x": None}) == 2
    assert store.checkpoint_write("gw-a", "other", "v") == 1
    assert store.checkpoint_write("gw", "sessions", 3.5) == 1
    assert store.checkpoint_read("gw-a", "sessions") == (2, {"x": None})
    assert store.checkpoint_read("gw", "sessions") == (1, 3.5)
    # names are kept apart even when one contains the separator of a key path
    assert store.checkpoint_write("a/b", "c", 1) == 1
    assert store.checkpoint_write("a", "b/c", 2) == 1
    assert store.checkpoint_read("a/b", "c") == (1, 1)
    assert store.checkpoint_read("a", "b/c") == (1, 2)


@pytest.mark.parametrize("value", [object(), float("nan"), {1j: 2}])
def test_checkpoint_values_must_be_json(assignments: AssignmentBackend, value: object) -> None:
    store = assignments.open()
    with pytest.raises(ValueError, match="not JSON"):
        store.checkpoint_write("gw-a", "k", value)
    assert store.checkpoint_read("gw-a", "k") is None


def test_etcd_record_not_written_by_compare_and_set_is_refused(cluster: Servers) -> None:
    prefix = cluster.etcd_prefix()
    store = EtcdAssignmentStore(cluster.etcd_client(), prefix=prefix)
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    # a write around the contract (an operator's etcdctl put) breaks epoch == version
    store.client.put(f"{prefix}amf/assignments/gw".encode(),
                     record("gw", 1, active=["b"]).model_dump_json().encode())
    with pytest.raises(StoreUnavailable, match="not written by compare-and-set"):
        store.get("gw")


async def test_etcd_watch_sees_every_write_after_the_snapshot(cluster: Servers) -> None:
    store = EtcdAssignmentStore(cluster.etcd_client(), prefix=cluster.etcd_prefix())
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    records, revision = store.snapshot()
    assert list(records) == ["gw"]
    seen: list[AssignmentRecord] = []
    done = asyncio.Event()

    async def follow() -> None:
        async for r in store.watch(revision):
            seen.append(r)
            if len(seen) == 4:
                done.set()
                return

    task = asyncio.create_task(follow())
    writes = [("gw", 1, record("gw", 2, active=["b"])), ("db", 0, record("db", 1, active=["x"])),
              ("gw", 2, record("gw", 3, active=["a"])), ("db", 1, record("db", 2))]
    for si, expected, r in writes:
        assert await asyncio.to_thread(store.compare_and_set, si, expected, r)
    await asyncio.wait_for(done.wait(), 10)
    await task
    assert seen == [r for _, _, r in writes]
