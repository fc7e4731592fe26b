"""amf 0001: the assignment records and the checkpoints of the availability manager.

Revision ID: amf_0001
Revises:
Create Date: 2026-11-22

``assignments``: one row per SI, the record as JSON in ``body`` and its epoch
in a column of its own, so that compare-and-set is one ``UPDATE ... WHERE
epoch = ?``. ``checkpoints``: a component's (or an SI's) saved state, one JSON
value per key with a version that counts its writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "amf_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE = (
    """CREATE TABLE assignments (
  si TEXT PRIMARY KEY,
  epoch INTEGER NOT NULL CHECK (epoch > 0),
  body TEXT NOT NULL
)""",
    """CREATE TABLE checkpoints (
  owner TEXT NOT NULL,
  key TEXT NOT NULL,
  version INTEGER NOT NULL CHECK (version > 0),
  value TEXT NOT NULL,
  PRIMARY KEY (owner, key)
)""",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in ("checkpoints", "assignments"):
        op.execute(f"DROP TABLE {table}")
