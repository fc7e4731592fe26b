"""notifications 0001: the tables the outbox created before migrations.

Revision ID: notifications_0001
Revises:
Create Date: 2026-11-21

The DDL is verbatim what ``faults/outbox.py`` executed on every open,
``IF NOT EXISTS`` included (see adoption in ``nfvha.store.schema``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "notifications_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    """CREATE TABLE IF NOT EXISTS subscriptions (
  id TEXT PRIMARY KEY,
  callback_uri TEXT NOT NULL,
  filter_json TEXT,
  secret TEXT,
  created REAL NOT NULL,
  delivered_total INTEGER NOT NULL DEFAULT 0
)""",
    """CREATE TABLE IF NOT EXISTS outbox (
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
)""",
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(subscription_id, delivered, seq)",
    "CREATE INDEX IF NOT EXISTS outbox_delivered_time ON outbox(delivered, delivered_time)",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in ("outbox", "subscriptions"):
        op.execute(f"DROP TABLE {table}")
