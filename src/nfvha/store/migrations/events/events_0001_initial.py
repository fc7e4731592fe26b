"""events 0001: the tables the event and alarm stores created before migrations.

Revision ID: events_0001
Revises:
Create Date: 2026-11-21

The DDL is verbatim what ``store/sqlite.py`` (events, agent_seq) and
``store/alarms.py`` (alarms) executed on every open, ``IF NOT EXISTS`` included:
a database those versions created only in part (an alarm store opened alone has
no ``events``) is completed by running this revision over it (see adoption in
``nfvha.store.schema``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "events_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    """CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host TEXT NOT NULL,
  seq INTEGER NOT NULL,
  origin TEXT NOT NULL,
  kind TEXT NOT NULL,
  entity TEXT NOT NULL,
  body TEXT NOT NULL,
  received_time REAL NOT NULL,
  received_mono_ns INTEGER NOT NULL
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_agent_seq ON events(host, seq) WHERE seq > 0",
    "CREATE INDEX IF NOT EXISTS events_kind_entity ON events(kind, entity, id)",
    "CREATE TABLE IF NOT EXISTS agent_seq (host TEXT PRIMARY KEY, last_seq INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS alarms (
  id TEXT PRIMARY KEY,
  key TEXT NOT NULL,
  entity TEXT NOT NULL,
  host TEXT NOT NULL,
  severity TEXT NOT NULL,
  active INTEGER NOT NULL,
  raised_time REAL NOT NULL,
  changed_time REAL NOT NULL,
  body TEXT NOT NULL
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS alarms_active_key ON alarms(key) WHERE active = 1",
    "CREATE INDEX IF NOT EXISTS alarms_entity ON alarms(entity, raised_time)",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    # Dropping a table drops its indexes.
    for table in ("alarms", "agent_seq", "events"):
        op.execute(f"DROP TABLE {table}")
