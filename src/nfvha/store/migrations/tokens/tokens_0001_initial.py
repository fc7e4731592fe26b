"""tokens 0001: the API tokens of one controller (VNFHA-12), as hashes.

Revision ID: tokens_0001
Revises:
Create Date: 2026-11-24

The same table as the cluster's (``store/pg.py``): the SHA-256 of the secret, its
role and a label. The secret itself is never stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "tokens_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("""CREATE TABLE tokens (
  sha256 TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('reader', 'operator', 'admin')),
  name TEXT NOT NULL DEFAULT ''
)""")


def downgrade() -> None:
    op.execute("DROP TABLE tokens")
