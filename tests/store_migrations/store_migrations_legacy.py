"""The DDL the stores executed on every open before migrations, verbatim (from
store/sqlite.py, store/alarms.py and faults/outbox.py as of commit 2aa48b7), and
helpers to build databases the way that code did."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

LEGACY_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  host TEXT NOT NULL,
  seq INTEGER NOT NULL,
  origin TEXT NOT NULL,
  kind TEXT NOT NULL,
  entity TEXT NOT NULL,
  body TEXT NOT NULL,
  received_time REAL NOT NULL,
  received_mono_ns INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_agent_seq ON events(host, seq) WHERE seq > 0;
CREATE INDEX IF NOT EXISTS events_kind_entity ON events(kind, entity, id);
CREATE TABLE IF NOT EXISTS agent_seq (host TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
"""

LEGACY_ALARMS = """
CREATE TABLE IF NOT EXISTS alarms (
  id TEXT PRIMARY KEY,
  key TEXT NOT NULL,
  entity TEXT NOT NULL,
  host TEXT NOT NULL,
  severity TEXT NOT NULL,
  active INTEGER NOT NULL,
  raised_time REAL NOT NULL,
  changed_time REAL NOT NULL,
  body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alarms_active_key ON alarms(key) WHERE active = 1;
CREATE INDEX IF NOT EXISTS alarms_entity ON alarms(entity, raised_time);
"""

LEGACY_NOTIFICATIONS = """
CREATE TABLE IF NOT EXISTS subscriptions (
  id TEXT PRIMARY KEY,
  callback_uri TEXT NOT NULL,
  filter_json TEXT,
  secret TEXT,
  created REAL NOT NULL,
  delivered_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  notification_id TEXT NOT NULL UNIQUE,
  subscription_id TEXT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  body BLOB NOT NULL,
  created REAL NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_attempt REAL,
  delivered INTEGER NOT NULL DEFAULT 0,
  delivered_time REAL,
  last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(subscription_id, delivered, seq);
CREATE INDEX IF NOT EXISTS outbox_delivered_time ON outbox(delivered, delivered_time);
"""

LEGACY = {"events": LEGACY_EVENTS + LEGACY_ALARMS, "notifications": LEGACY_NOTIFICATIONS}


def legacy_db(path: Path, *scripts: str) -> None:
    """A database as the pre-migrations code left it: WAL, the DDL, no alembic_version."""
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for script in scripts:
            db.executescript(script)


def schema_sql(path: Path) -> dict[str, str]:
    """Every object of the database but alembic's and SQLite's own, by name."""
    with closing(sqlite3.connect(str(path))) as db:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"
            " AND name NOT IN ('alembic_version', 'sqlite_sequence')").fetchall()
    return {str(n): str(s) for n, s in rows}


def dump(path: Path, table: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(str(path))) as db:
        return [tuple(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
