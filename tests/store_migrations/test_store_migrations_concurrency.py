"""Several processes opening the same database at once: the migration is
serialised by SQLite's write lock (``BEGIN IMMEDIATE``), so exactly one of them
does the work and the others find the database at head."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

import pytest
from store_migrations_legacy import LEGACY, dump, legacy_db, schema_sql

from nfvha.store import schema as schema_module
from nfvha.store.schema import MigrationError, SchemaName, current, head, migrate

PROCESSES = 4
DEADLINE_S = 60.0


def open_at_once(path: str, schema: SchemaName, how: str, start: Barrier,
                 results: Queue[str]) -> None:
    """In a child process: wait for the others, then open the database either by
    ``migrate`` alone or through the stores the controller opens on it."""
    # Imported here so that the child's first open pays the import, as in real life.
    from nfvha.faults.outbox import Outbox
    from nfvha.store.alarms import SqliteAlarmStore
    from nfvha.store.sqlite import SqliteEventStore

    try:
        start.wait(DEADLINE_S)
        if how == "migrate":
            migrate(Path(path), schema)
        elif schema == "events":
            SqliteEventStore(Path(path)).close()
            SqliteAlarmStore(Path(path)).close()
        else:
            Outbox(Path(path)).close()
        results.put("ok")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e}")


def migrate_waiting(path: str, lock_wait_s: float, ready: MpEvent, results: Queue[str]) -> None:
    """In a child process: migrate, waiting at most ``lock_wait_s`` for the lock."""
    schema_module.LOCK_WAIT_S = lock_wait_s
    ready.set()
    try:
        migrate(Path(path), "events")
        results.put("ok")
    except MigrationError as e:
        results.put(f"MigrationError: {e}")


class Children:
    """Child processes started by one test, all stopped (by their own handle) after it."""

    def __init__(self) -> None:
        self.ctx: SpawnContext = multiprocessing.get_context("spawn")
        self.started: list[BaseProcess] = []

    def start(self, target: Callable[..., None], *args: object) -> BaseProcess:
        proc = self.ctx.Process(target=target, args=args)
        proc.start()
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            if proc.is_alive():
                proc.kill()
            proc.join(DEADLINE_S)


@pytest.fixture
def children() -> Iterator[Children]:
    made = Children()
    try:
        yield made
    finally:
        made.stop()


def run_children(children: Children, path: Path, schema: SchemaName, how: str) -> list[str]:
    start = children.ctx.Barrier(PROCESSES)
    results: Queue[str] = children.ctx.Queue()
    procs = [children.start(open_at_once, str(path), schema, how, start, results)
             for _ in range(PROCESSES)]
    outcomes = [results.get(timeout=DEADLINE_S) for _ in procs]
    for p in procs:
        p.join(DEADLINE_S)
        assert p.exitcode == 0
    return outcomes


@pytest.mark.parametrize("schema", ["events", "notifications"])
@pytest.mark.parametrize("start_from", ["no-file", "empty-wal", "old-code"])
def test_processes_opening_one_database_at_once(
        children: Children, workdir: Path, schema: SchemaName, start_from: str) -> None:
    """``no-file``: ``migrate`` alone, on a file that does not exist yet.
    ``empty-wal``: the stores, on the file their ``PRAGMA journal_mode=WAL`` leaves.
    ``old-code``: the stores, on a database the pre-migrations code made.
    (The stores themselves are not opened on a missing file here: their
    ``PRAGMA journal_mode=WAL`` on a brand-new file fails with "database is
    locked" when another process converts it at the same instant, before any
    migration runs; that was so before migrations too.)"""
    reference = workdir / "reference.db"
    migrate(reference, schema)
    for round_ in range(2):
        path = workdir / f"{schema}-{round_}.db"
        if start_from == "empty-wal":
            legacy_db(path)
        elif start_from == "old-code":
            legacy_db(path, LEGACY[schema])
        how = "migrate" if start_from == "no-file" else "stores"
        assert run_children(children, path, schema, how) == ["ok"] * PROCESSES
        assert current(path, schema) == head(schema)
        assert dump(path, "alembic_version") == [(head(schema),)]
        assert schema_sql(path) == schema_sql(reference)


def test_migration_waits_for_the_write_lock(children: Children, workdir: Path) -> None:
    path = workdir / "events.db"
    with closing(sqlite3.connect(str(path), isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # as a store's write transaction does
        results: Queue[str] = children.ctx.Queue()
        patient_ready, impatient_ready = children.ctx.Event(), children.ctx.Event()
        patient = children.start(migrate_waiting, str(path), DEADLINE_S, patient_ready, results)
        assert patient_ready.wait(DEADLINE_S)
        # One that gives up after 0.5 s shows the lock is what they wait for.
        impatient = children.start(migrate_waiting, str(path), 0.5, impatient_ready, results)
        outcome = results.get(timeout=DEADLINE_S)
        assert outcome.startswith("MigrationError") and "database is locked" in outcome
        impatient.join(DEADLINE_S)
        assert patient.is_alive()
        assert current(path, "events") is None
        holder.execute("COMMIT")
    assert results.get(timeout=DEADLINE_S) == "ok"
    patient.join(DEADLINE_S)
    assert current(path, "events") == head("events")
