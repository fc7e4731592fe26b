"""History on PostgreSQL: events, alarms and tokens, with the SQLite stores' contracts.

Event ids: a reader pages through events by id (``events(after=...)``, the alarm
manager's replay watermark), which is only safe if no event commits with an id
below one already visible. SQLite has one writer; here several controllers may
append, and an identity column hands out ids before commit. So appends take a
transaction-level advisory lock first: ids are handed out and committed in one
order. Group commit (many events per transaction) keeps that lock cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nfvha.model.auth import TokenEntry
from nfvha.model.events import Event, StoredEvent
from nfvha.store.alarms import AlarmRow
from nfvha.store.base import Arrival
from nfvha.store.pg import PgDatabase

EVENTS_APPEND_LOCK = 0x6E66_7668_6576_6E74  # "nfvhevnt"

_INSERT_EVENT = (
    "INSERT INTO events(host, seq, origin, kind, entity, body, received_time,"
    " received_mono_ns) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT (host, seq) WHERE seq > 0 DO NOTHING RETURNING id")
_ALARM_COLUMNS = "id, key, entity, host, severity, active, raised_time, changed_time, body"


class PgEventStore:
    def __init__(self, db: PgDatabase, *, owns_db: bool = False,
                 append_db: PgDatabase | None = None) -> None:
        """``append_db``: a connection for appends alone (owned, closed with the
        store): the event bus commits in a thread of its own, and reads on ``db``
        would otherwise wait for its transactions (one connection is used by one
        thread at a time). None: appends use ``db`` too."""
        self.db = db
        self.append_db = append_db
        self._owns_db = owns_db

    def append(self, events: Sequence[Event], received_time: float,
               received_mono_ns: int) -> list[StoredEvent]:
        return self.append_groups([(events, received_time, received_mono_ns)])[0]

    def append_groups(self, groups: Sequence[Arrival]) -> list[list[StoredEvent]]:
        out: list[list[StoredEvent]] = []
        with (self.append_db or self.db).transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_APPEND_LOCK,))
            last_seq: dict[str, int] = {}
            for events, received_time, received_mono_ns in groups:
                stored: list[StoredEvent] = []
                if events:
                    cur.executemany(_INSERT_EVENT, [
                        (ev.host, ev.seq, ev.origin, ev.kind.value, ev.entity,
                         ev.model_dump_json(), received_time, received_mono_ns)
                        for ev in events], returning=True)
                    for ev in events:
                        row = cur.fetchone()
                        if row is not None:  # None: a re-sent event we already have
                            if ev.seq > 0:
                                last_seq[ev.host] = max(last_seq.get(ev.host, 0), ev.seq)
                            stored.append(StoredEvent(
                                **ev.model_dump(), id=int(row[0]),
                                received_time=received_time,
                                received_mono_ns=received_mono_ns))
                        cur.nextset()
                out.append(stored)
            if last_seq:
                cur.executemany(
                    "INSERT INTO agent_seq(host, last_seq) VALUES (%s, %s) ON CONFLICT (host)"
                    " DO UPDATE SET last_seq = greatest(agent_seq.last_seq, excluded.last_seq)",
                    sorted(last_seq.items()))
        return out

    def last_seq(self, host: str) -> int:
        rows = self.db.fetch("SELECT last_seq FROM agent_seq WHERE host = %s", (host,))
        return int(rows[0][0]) if rows else 0

    def _rows(self, where: str, params: list[Any], limit: int,
              order: str = "ASC") -> list[StoredEvent]:
        rows = self.db.fetch(
            f"SELECT id, body, received_time, received_mono_ns FROM events WHERE {where}"
            f" ORDER BY id {order} LIMIT %s", [*params, limit])
        return [StoredEvent(**json.loads(str(body)), id=int(i),
                            received_time=float(rt),
                            received_mono_ns=int(rm))
                for i, body, rt, rm in rows]

    def events(self, *, after: int = 0, limit: int = 1000, kind: str | None = None,
               entity: str | None = None, host: str | None = None) -> list[StoredEvent]:
        where = ["id > %s"]
        params: list[Any] = [after]
        for col, val in (("kind", kind), ("entity", entity), ("host", host)):
            if val is not None:
                where.append(f"{col} = %s")
                params.append(val)
        return self._rows(" AND ".join(where), params, limit)

    def max_id(self) -> int:
        rows = self.db.fetch("SELECT coalesce(max(id), 0) FROM events")
        return int(rows[0][0])

    def latest(self, kind: str, entity: str) -> StoredEvent | None:
        rows = self._rows("kind = %s AND entity = %s", [kind, entity], 1, order="DESC")
        return rows[0] if rows else None

    def host_conditions(self, host: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._rows("kind = 'host.condition' AND host = %s", [host], limit, order="DESC")
        return [{"time": r.event_time, **r.details} for r in rows]

    def close(self) -> None:
        if self.append_db is not None:
            self.append_db.close()
        if self._owns_db:
            self.db.close()


class PgAlarmStore:
    def __init__(self, db: PgDatabase, *, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db

    def put(self, rows: list[AlarmRow], processed_event_id: int | None = None) -> None:
        with self.db.transaction() as cur:
            if processed_event_id is not None:
                cur.execute(
                    "INSERT INTO alarm_meta(k, v) VALUES ('processed_event_id', %s)"
                    " ON CONFLICT (k) DO UPDATE SET v = greatest(alarm_meta.v, excluded.v)",
                    (processed_event_id,))
            if rows:
                # In list order: the caller writes cleared rows before the raised ones
                # that take over their key (the unique index on active keys).
                cur.executemany(
                    f"INSERT INTO alarms({_ALARM_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity,"
                    " active = excluded.active, changed_time = excluded.changed_time,"
                    " body = excluded.body",
                    [(r.id, r.key, r.entity, r.host, r.severity, r.active, r.raised_time,
                      r.changed_time, r.body) for r in rows])

    def _select(self, where: str, params: tuple[Any, ...]) -> list[AlarmRow]:
        rows = self.db.fetch(
            f"SELECT {_ALARM_COLUMNS} FROM alarms WHERE {where} ORDER BY raised_time, id",
            params)
        return [AlarmRow(str(i), str(k), str(e), str(h), str(s), bool(a),
                         float(rt), float(ct), str(b))
                for i, k, e, h, s, a, rt, ct, b in rows]

    def processed_event_id(self) -> int:
        rows = self.db.fetch("SELECT v FROM alarm_meta WHERE k = 'processed_event_id'")
        return int(rows[0][0]) if rows else 0

    def get(self, alarm_id: str) -> AlarmRow | None:
        rows = self._select("id = %s", (alarm_id,))
        return rows[0] if rows else None

    def active(self) -> list[AlarmRow]:
        return self._select("active", ())

    def all(self) -> list[AlarmRow]:
        return self._select("TRUE", ())

    def age(self, now: float, cleared_retention_s: Mapping[str, float],
            event_retention_s: float) -> tuple[int, int]:
        with self.db.transaction() as cur:
            alarms = 0
            for severity, keep in cleared_retention_s.items():
                cur.execute("DELETE FROM alarms WHERE NOT active AND severity = %s"
                            " AND changed_time < %s", (severity, now - keep))
                alarms += cur.rowcount
            cur.execute("DELETE FROM events WHERE received_time < %s",
                        (now - event_retention_s,))
            events = cur.rowcount
        return alarms, events

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


class PgTokenStore:
    def __init__(self, db: PgDatabase, *, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db

    def put(self, entry: TokenEntry) -> bool:
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO tokens(sha256, role, name) VALUES (%s, %s, %s)"
                        " ON CONFLICT (sha256) DO NOTHING", (entry.sha256, entry.role,
                                                              entry.name))
            return cur.rowcount == 1

    def get(self, sha256: str) -> TokenEntry | None:
        rows = self.db.fetch("SELECT sha256, role, name FROM tokens WHERE sha256 = %s",
                             (sha256,))
        return _token(rows[0]) if rows else None

    def delete(self, sha256: str) -> bool:
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM tokens WHERE sha256 = %s", (sha256,))
            return cur.rowcount == 1

    def all(self) -> list[TokenEntry]:
        return [_token(r) for r in
                self.db.fetch("SELECT sha256, role, name FROM tokens ORDER BY sha256")]

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


def _token(row: tuple[Any, ...]) -> TokenEntry:
    return TokenEntry(sha256=str(row[0]), role=str(row[1]), name=str(row[2]))
