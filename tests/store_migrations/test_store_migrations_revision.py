"""The migration machinery beyond the initial revision: a throwaway second revision,
generated with alembic's own ``revision`` command into a temp version directory,
upgrades a database that holds data without losing any of it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from store_migrations_legacy import dump

from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.alarms import AlarmRow, SqliteAlarmStore
from nfvha.store.schema import LAYOUTS, MIGRATIONS_DIR, SchemaLayout, current, upgrade
from nfvha.store.sqlite import SqliteEventStore

ADD_NOTE = '''def upgrade() -> None:
    op.add_column("alarms", sa.Column("note", sa.Text(), nullable=False, server_default="-"))
'''


def event(seq: int) -> Event:
    return Event(host="h1", seq=seq, origin="agent", kind=Kind.VM_CRASHED, entity="vm/vm1",
                 severity=Severity.CRITICAL, event_type=EventType.EQUIPMENT_ALARM,
                 probable_cause="test", description="", event_time=1_800_000_000.0 + seq,
                 detected_mono_ns=seq, details={})


def generate_second_revision(extra_dir: Path) -> SchemaLayout:
    """``alembic revision`` through the API, with the package's own template."""
    layout = LAYOUTS["events"]
    dirs = (*layout.version_dirs, extra_dir)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(str(d) for d in dirs))
    script = command.revision(cfg, message="add note", rev_id="events_9999",
                              head="events_0002", version_path=str(extra_dir))
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    assert path == extra_dir / "events_9999_add_note.py"
    text = path.read_text()
    assert "def upgrade() -> None:\n    pass\n" in text
    text = text.replace("def upgrade() -> None:\n    pass\n", ADD_NOTE)
    text = text.replace("from alembic import op\n",
                        "import sqlalchemy as sa\nfrom alembic import op\n")
    path.write_text(text)
    return dataclasses.replace(layout, version_dirs=dirs)


@pytest.mark.req("FM-7")
def test_second_revision_upgrades_a_database_with_data(workdir: Path) -> None:
    db = workdir / "events.db"
    store, alarms = SqliteEventStore(db), SqliteAlarmStore(db)
    try:
        store.append([event(1), event(2)], 1_800_000_100.0, 5_000)
        alarms.put([AlarmRow("a1", "k1", "vm/vm1", "h1", "CRITICAL", True, 1.0, 1.0, "{}")])
    finally:
        store.close()
        alarms.close()
    before = {t: dump(db, t) for t in ("events", "agent_seq", "alarms")}
    assert current(db, "events") == "events_0002"

    extra = workdir / "versions"
    extra.mkdir()
    layout = generate_second_revision(extra)
    assert layout.head() == "events_9999"
    upgrade(db, layout)

    assert current(db, "events") == "events_9999"
    assert {t: dump(db, t) for t in ("events", "agent_seq")} == {
        t: before[t] for t in ("events", "agent_seq")}
    assert dump(db, "alarms") == [(*row, "-") for row in before["alarms"]]
    upgrade(db, layout)  # at head: nothing more
    assert current(db, "events") == "events_9999"
