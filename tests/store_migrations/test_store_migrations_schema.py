"""Schema management of the SQLite stores by alembic: new databases, databases the
pre-migrations code created, idempotence, refusals, and the cost at head."""

from __future__ import annotations

import itertools
import logging
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from store_migrations_legacy import (
    LEGACY,
    LEGACY_ALARMS,
    LEGACY_EVENTS,
    dump,
    legacy_db,
    schema_sql,
)

from nfvha.faults.outbox import Outbox
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import StoreUnavailable
from nfvha.store.schema import (
    LAYOUTS,
    MIGRATIONS_DIR,
    MigrationError,
    SchemaName,
    current,
    head,
    migrate,
)
from nfvha.store.sqlite import SqliteEventStore

SCHEMAS: tuple[SchemaName, ...] = ("events", "notifications")
MIGRATION_LOG = "alembic.runtime.migration"


def event(host: str, seq: int) -> Event:
    return Event(host=host, seq=seq, origin="agent", kind=Kind.VM_CRASHED, entity="vm/vm1",
                 severity=Severity.CRITICAL, event_type=EventType.EQUIPMENT_ALARM,
                 probable_cause="test", description="", event_time=1_800_000_000.0 + seq,
                 detected_mono_ns=1_000 + seq, details={"seq": seq})


def old_code_writes_events(path: Path) -> None:
    """Rows as the pre-migrations event and alarm stores wrote them."""
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        for seq in (1, 2, 3):
            ev = event("h1", seq)
            db.execute(
                "INSERT INTO events(host, seq, origin, kind, entity, body, received_time,"
                " received_mono_ns) VALUES (?,?,?,?,?,?,?,?)",
                (ev.host, ev.seq, ev.origin, ev.kind.value, ev.entity, ev.model_dump_json(),
                 1_800_000_100.0, 5_000),
            )
        db.execute("INSERT INTO agent_seq(host, last_seq) VALUES ('h1', 3)")
        db.execute("DELETE FROM events WHERE seq = 3")  # AUTOINCREMENT must not reuse id 3
        old_code_writes_alarms(db)


def old_code_writes_alarms(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO alarms VALUES ('a1', 'k1', 'host/h1', 'h1', 'CRITICAL', 1,"
               " 1.0, 2.0, '{}')")
    db.execute("INSERT INTO alarms VALUES ('a2', 'k1', 'host/h1', 'h1', 'MAJOR', 0,"
               " 0.5, 1.5, '{}')")


def alembic_steps(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == MIGRATION_LOG and r.getMessage().startswith("Running ")]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_new_database_gets_exactly_the_pre_migrations_schema(
        workdir: Path, schema: SchemaName) -> None:
    migrated, old = workdir / "migrated.db", workdir / "old.db"
    migrate(migrated, schema)
    legacy_db(old, LEGACY[schema])
    assert current(migrated, schema) == head(schema)
    # Same names, same CREATE text (SQLite keeps it minus IF NOT EXISTS): columns,
    # AUTOINCREMENT, defaults, foreign keys and the partial indexes' WHERE - plus
    # what later revisions added (events_0002: the alarm replay watermark).
    added = {"alarm_meta"} if schema == "events" else set()
    assert {k: v for k, v in schema_sql(migrated).items() if k not in added} \
        == schema_sql(old)
    if schema == "events":
        sql = schema_sql(migrated)
        assert sql["events_agent_seq"].endswith("WHERE seq > 0")
        assert sql["alarms_active_key"].endswith("WHERE active = 1")


@pytest.mark.parametrize("schema", SCHEMAS)
def test_migrate_at_head_changes_nothing(workdir: Path, schema: SchemaName,
                                         caplog: pytest.LogCaptureFixture) -> None:
    path = workdir / "x.db"
    migrate(path, schema)
    before = schema_sql(path)
    caplog.set_level(logging.INFO, logger=MIGRATION_LOG)
    migrate(path, schema)
    migrate(path, schema)
    assert schema_sql(path) == before
    assert dump(path, "alembic_version") == [(head(schema),)]
    assert alembic_steps(caplog) == []  # the fast path: alembic did not even run


@pytest.mark.req("FM-7")
def test_old_events_database_is_stamped_and_keeps_its_data(
        workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = workdir / "events.db"
    legacy_db(path, LEGACY_EVENTS, LEGACY_ALARMS)
    old_code_writes_events(path)
    rows = {t: dump(path, t) for t in ("events", "agent_seq", "alarms", "sqlite_sequence")}
    schema_before = schema_sql(path)
    assert current(path, "events") is None

    caplog.set_level(logging.INFO, logger=MIGRATION_LOG)
    store = SqliteEventStore(path)
    try:
        # (An earlier "upgrade" is the scratch in-memory database adoption compares with.)
        steps = alembic_steps(caplog)
        assert "Running stamp_revision  -> events_0001" in steps
        assert steps[-1].startswith("Running upgrade events_0001 -> events_0002")
        assert current(path, "events") == head("events")
        assert {k: v for k, v in schema_sql(path).items() if k != "alarm_meta"} \
            == schema_before
        # The adopted database decided all its events (ids 1, 2): nothing to replay.
        meta = SqliteAlarmStore(path)
        assert meta.processed_event_id() == 2
        meta.close()
        assert {t: dump(path, t) for t in rows} == rows
        # The store reads what the old code wrote and carries on from it.
        assert [e.seq for e in store.events()] == [1, 2]
        assert store.last_seq("h1") == 3
        [new] = store.append([event("h2", 1)], 1_800_000_200.0, 6_000)
        assert new.id == 4
    finally:
        store.close()
    alarms = SqliteAlarmStore(path)
    try:
        assert [a.id for a in alarms.all()] == ["a2", "a1"]
    finally:
        alarms.close()


@pytest.mark.req("FM-7")
def test_old_notifications_database_is_stamped_and_keeps_its_data(
        workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = workdir / "notifications.db"
    legacy_db(path, LEGACY["notifications"])
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("INSERT INTO subscriptions(id, callback_uri, filter_json, secret, created)"
                   " VALUES ('s1', 'http://127.0.0.1:9/s1', NULL, 'k', 1.0)")
        db.execute("INSERT INTO outbox(notification_id, subscription_id, body, created)"
                   " VALUES ('n1', 's1', x'7b7d', 2.0)")
    rows = {t: dump(path, t) for t in ("subscriptions", "outbox")}

    caplog.set_level(logging.INFO, logger=MIGRATION_LOG)
    outbox = Outbox(path)
    try:
        assert alembic_steps(caplog)[-1] == "Running stamp_revision  -> notifications_0001"
        assert current(path, "notifications") == "notifications_0001"
        assert {t: dump(path, t) for t in rows} == rows
        assert [s.id for s in outbox.subscriptions()] == ["s1"]
        assert [p[0] for p in outbox.pending("s1")] == ["n1"]
    finally:
        outbox.close()


@pytest.mark.req("FM-7")
def test_partial_old_database_is_completed_not_stamped(
        workdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An alarm store opened alone by the old code made only ``alarms``."""
    path, reference = workdir / "alarms-only.db", workdir / "reference.db"
    legacy_db(path, LEGACY_ALARMS)
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        old_code_writes_alarms(db)
    alarms_before = dump(path, "alarms")

    caplog.set_level(logging.INFO, logger=MIGRATION_LOG)
    store = SqliteAlarmStore(path)
    store.close()
    steps = alembic_steps(caplog)
    assert any(s.startswith("Running upgrade  -> events_0001,") for s in steps)
    assert not any("stamp" in s for s in steps)
    migrate(reference, "events")
    assert schema_sql(path) == schema_sql(reference)
    assert dump(path, "alarms") == alarms_before
    assert current(path, "events") == head("events")


def test_foreign_database_is_refused_and_left_alone(workdir: Path) -> None:
    path = workdir / "foreign.db"
    legacy_db(path, "CREATE TABLE something_else (x INTEGER);")
    before = schema_sql(path)
    with pytest.raises(MigrationError, match="unknown objects \\['something_else'\\]"):
        migrate(path, "events")
    with pytest.raises(StoreUnavailable, match="not an nfvha events database"):
        SqliteEventStore(path)
    assert schema_sql(path) == before
    assert current(path, "events") is None


def test_old_table_with_another_definition_is_refused(workdir: Path) -> None:
    path = workdir / "changed.db"
    legacy_db(path, LEGACY_ALARMS.replace("  body TEXT NOT NULL\n", "  body TEXT\n"))
    with pytest.raises(MigrationError, match="defined differently \\['alarms'\\]"):
        migrate(path, "events")
    assert current(path, "events") is None


def test_database_of_the_other_schema_is_refused(workdir: Path) -> None:
    old, migrated = workdir / "old-notifications.db", workdir / "notifications.db"
    legacy_db(old, LEGACY["notifications"])
    with pytest.raises(MigrationError, match="not an nfvha events database"):
        migrate(old, "events")
    migrate(migrated, "notifications")
    with pytest.raises(MigrationError, match="notifications_0001"):
        migrate(migrated, "events")
    with pytest.raises(MigrationError, match="not a events revision"):
        current(migrated, "events")
    assert current(migrated, "notifications") == "notifications_0001"


def test_database_from_a_newer_nfvha_is_refused_untouched(workdir: Path) -> None:
    path = workdir / "newer.db"
    migrate(path, "events")
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("UPDATE alembic_version SET version_num = 'events_0099'")
    with pytest.raises(StoreUnavailable, match="events_0099"):
        SqliteEventStore(path)
    assert current(path, "events") == "events_0099"


def test_current_without_a_database(workdir: Path) -> None:
    assert current(workdir / "missing.db", "events") is None
    assert not (workdir / "missing.db").exists()


@pytest.mark.parametrize("schema", SCHEMAS)
def test_file_names_give_the_same_head_as_alembic(schema: SchemaName) -> None:
    """The fast path finds the head from file names; alembic's graph must agree,
    and every revision must follow the naming that makes that true."""
    layout = LAYOUTS[schema]
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", str(layout.version_dirs[0]))
    scripts = ScriptDirectory.from_config(cfg)
    assert scripts.get_heads() == [layout.head()]
    revisions = list(scripts.walk_revisions())
    assert revisions[-1].revision == layout.initial
    assert revisions[-1].down_revision is None
    for rev in revisions:
        assert Path(rev.path).parent == layout.version_dirs[0]
        assert Path(rev.path).name.startswith(f"{rev.revision}_")
        assert rev.revision.removeprefix(f"{schema}_").isdigit()
    ordered = sorted(r.revision for r in revisions)
    for older, newer in itertools.pairwise(ordered):
        assert scripts.get_revision(newer).down_revision == older  # one line, in id order


def test_opening_at_head_costs_well_under_50_ms(workdir: Path,
                                                record_property: pytest.RecordProperty) -> None:
    path = workdir / "events.db"
    SqliteEventStore(path).close()
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        migrate(path, "events")
        samples.append(time.perf_counter() - t0)
    median_ms = statistics.median(samples) * 1e3
    worst_ms = max(samples) * 1e3
    record_property("migrate_at_head_median_ms", round(median_ms, 3))
    record_property("migrate_at_head_max_ms", round(worst_ms, 3))
    print(f"migrate() at head: median {median_ms:.3f} ms, max {worst_ms:.3f} ms")
    assert median_ms < 5
    assert worst_ms < 50


def test_opening_at_head_does_not_import_alembic(workdir: Path) -> None:
    """The ~0.3 s import of alembic and SQLAlchemy is paid only when there is work."""
    path = workdir / "events.db"
    migrate(path, "events")
    code = (
        "import sys, time; from pathlib import Path; t = time.perf_counter();"
        "from nfvha.store.schema import migrate;"
        f"migrate(Path({str(path)!r}), 'events');"
        "print(round((time.perf_counter() - t) * 1e3, 1));"
        "assert 'alembic' not in sys.modules and 'sqlalchemy' not in sys.modules, 'imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    print(f"first migrate() at head in a new process, module import included: "
          f"{done.stdout.strip()} ms")

