"""events 0002: the alarm manager's processed-event watermark.

Revision ID: events_0002
Revises: events_0001
Create Date: 2026-11-21

Alarms are decided from events after the events are committed (and acknowledged
to the agents). The id of the last event whose alarms are committed is stored in
the same transaction as those alarms, so a controller that crashed in between
replays the events after it at start (alarm and notification ids derive from the
event: a replay makes no duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "events_0002"
down_revision: str | Sequence[str] | None = "events_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE TABLE alarm_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    # A database from before this revision has decided every event it holds.
    op.execute("INSERT INTO alarm_meta(k, v) SELECT 'processed_event_id', coalesce(max(id), 0)"
               " FROM events")


def downgrade() -> None:
    op.execute("DROP TABLE alarm_meta")
