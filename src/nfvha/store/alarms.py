"""Alarms in the embedded store (the same SQLite file as the events).

Rows carry the alarm as the API shows it (ETSI JSON) plus the columns the
controller looks alarms up by. Ageing (FM-7) deletes cleared alarms and events
older than a per-severity retention.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nfvha.store.base import StoreUnavailable
from nfvha.store.schema import open_store


@dataclass(frozen=True)
class AlarmRow:
    id: str
    key: str
    entity: str
    host: str
    severity: str
    active: bool
    raised_time: float
    changed_time: float
    body: str  # the ETSI Alarm as JSON


class AlarmStore(Protocol):
    """What ``SqliteAlarmStore`` does, for other engines (``store.pg_stores.PgAlarmStore``)."""

    def put(self, rows: list[AlarmRow], processed_event_id: int | None = None) -> None: ...

    def processed_event_id(self) -> int: ...

    def get(self, alarm_id: str) -> AlarmRow | None: ...

    def active(self) -> list[AlarmRow]: ...

    def all(self) -> list[AlarmRow]: ...

    def age(self, now: float, cleared_retention_s: Mapping[str, float],
            event_retention_s: float) -> tuple[int, int]: ...

    def close(self) -> None: ...


class SqliteAlarmStore:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._db = open_store(path, "events", fsync=fsync)

    def put(self, rows: list[AlarmRow], processed_event_id: int | None = None) -> None:
        """Insert or replace alarms, atomically, with the id of the last event they
        reflect (the replay watermark; it never goes back)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if processed_event_id is not None:
                self._db.execute(
                    "INSERT INTO alarm_meta(k, v) VALUES ('processed_event_id', ?)"
                    " ON CONFLICT(k) DO UPDATE SET v = max(v, excluded.v)",
                    (processed_event_id,))
            self._db.executemany(
                "INSERT INTO alarms(id, key, entity, host, severity, active, raised_time,"
                " changed_time, body) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                " severity=excluded.severity, active=excluded.active,"
                " changed_time=excluded.changed_time, body=excluded.body",
                [(r.id, r.key, r.entity, r.host, r.severity, int(r.active), r.raised_time,
                  r.changed_time, r.body) for r in rows],
            )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreUnavailable(str(e)) from e

    def _select(self, where: str, params: tuple[object, ...]) -> list[AlarmRow]:
        rows = self._db.execute(
            "SELECT id, key, entity, host, severity, active, raised_time, changed_time, body"
            f" FROM alarms WHERE {where} ORDER BY raised_time", params).fetchall()
        return [AlarmRow(i, k, e, h, s, bool(a), rt, ct, b) for i, k, e, h, s, a, rt, ct, b
                in rows]

    def processed_event_id(self) -> int:
        row = self._db.execute(
            "SELECT v FROM alarm_meta WHERE k = 'processed_event_id'").fetchone()
        return int(row[0]) if row else 0

    def get(self, alarm_id: str) -> AlarmRow | None:
        rows = self._select("id = ?", (alarm_id,))
        return rows[0] if rows else None

    def active(self) -> list[AlarmRow]:
        return self._select("active = 1", ())

    def all(self) -> list[AlarmRow]:
        return self._select("1 = 1", ())

    def age(self, now: float, cleared_retention_s: Mapping[str, float],
            event_retention_s: float) -> tuple[int, int]:
        """Delete cleared alarms older than their severity's retention (keyed by the
        severity the alarm had before it cleared, stored in ``severity``) and events
        older than ``event_retention_s``. Returns (alarms, events) deleted."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            alarms = 0
            for severity, keep in cleared_retention_s.items():
                alarms += self._db.execute(
                    "DELETE FROM alarms WHERE active = 0 AND severity = ? AND changed_time < ?",
                    (severity, now - keep)).rowcount
            events = self._db.execute(
                "DELETE FROM events WHERE received_time < ?", (now - event_retention_s,)
            ).rowcount if self._has_events() else 0
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise StoreUnavailable(str(e)) from e
        return alarms, events

    def _has_events(self) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='events'").fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()
