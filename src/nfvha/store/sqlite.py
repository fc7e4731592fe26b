"""The embedded store: one SQLite file in WAL mode.

Durability: a transaction is committed before the controller acknowledges the
events in it, and with ``synchronous=NORMAL`` in WAL mode a committed
transaction survives a crash of the controller process (it is in the WAL in
the OS page cache); ``synchronous=FULL`` (``fsync=True``) also survives a
machine power loss, at the cost of an fsync per commit.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nfvha.model.events import Event, StoredEvent
from nfvha.store.base import Arrival, StoreUnavailable
from nfvha.store.schema import open_store


class SqliteEventStore:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._db = open_store(path, "events", fsync=fsync)
        # Appends have a connection of their own: the event bus commits in its writer
        # thread while the event loop reads through ``_db``, and one SQLite connection
        # must not be used by two threads at once (its readers would also see the
        # writer's uncommitted rows). WAL: readers see what is committed, never wait.
        self._writer = open_store(path, "events", fsync=fsync)
        self._write_lock = threading.Lock()

    def append(self, events: Sequence[Event], received_time: float,
               received_mono_ns: int) -> list[StoredEvent]:
        return self.append_groups([(events, received_time, received_mono_ns)])[0]

    def append_groups(self, groups: Sequence[Arrival]) -> list[list[StoredEvent]]:
        """One transaction, one commit, for several arrivals (group commit)."""
        out: list[list[StoredEvent]] = []
        db = self._writer
        with self._write_lock:
            try:
                db.execute("BEGIN IMMEDIATE")
                for events, received_time, received_mono_ns in groups:
                    out.append(self._insert(db, events, received_time, received_mono_ns))
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise StoreUnavailable(str(e)) from e
        return out

    @staticmethod
    def _insert(db: sqlite3.Connection, events: Sequence[Event], received_time: float,
                received_mono_ns: int) -> list[StoredEvent]:
        stored: list[StoredEvent] = []
        last_seq: dict[str, int] = {}
        for ev in events:
            body = ev.model_dump_json()
            cur = db.execute(
                "INSERT OR IGNORE INTO events(host, seq, origin, kind, entity, body,"
                " received_time, received_mono_ns) VALUES (?,?,?,?,?,?,?,?)",
                (ev.host, ev.seq, ev.origin, ev.kind.value, ev.entity, body,
                 received_time, received_mono_ns),
            )
            if cur.rowcount == 0:
                continue  # a re-sent event we already have
            if ev.seq > 0:
                last_seq[ev.host] = max(last_seq.get(ev.host, 0), ev.seq)
            stored.append(StoredEvent(**ev.model_dump(), id=cur.lastrowid or 0,
                                      received_time=received_time,
                                      received_mono_ns=received_mono_ns))
        db.executemany(
            "INSERT INTO agent_seq(host, last_seq) VALUES (?, ?) ON CONFLICT(host)"
            " DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            list(last_seq.items()),
        )
        return stored

    def last_seq(self, host: str) -> int:
        row = self._db.execute("SELECT last_seq FROM agent_seq WHERE host = ?", (host,)).fetchone()
        return int(row[0]) if row else 0

    def _rows(self, where: str, params: list[Any], limit: int, order: str = "ASC") -> list[
            StoredEvent]:
        rows = self._db.execute(
            f"SELECT id, body, received_time, received_mono_ns FROM events WHERE {where}"
            f" ORDER BY id {order} LIMIT ?", [*params, limit],
        ).fetchall()
        return [
            StoredEvent(**json.loads(body), id=i, received_time=rt, received_mono_ns=rm)
            for i, body, rt, rm in rows
        ]

    def events(self, *, after: int = 0, limit: int = 1000, kind: str | None = None,
               entity: str | None = None, host: str | None = None) -> list[StoredEvent]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after]
        for col, val in (("kind", kind), ("entity", entity), ("host", host)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        return self._rows(" AND ".join(where), params, limit)

    def max_id(self) -> int:
        row = self._db.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)

    def latest(self, kind: str, entity: str) -> StoredEvent | None:
        rows = self._rows("kind = ? AND entity = ?", [kind, entity], 1, order="DESC")
        return rows[0] if rows else None

    def host_conditions(self, host: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._rows("kind = 'host.condition' AND host = ?", [host], limit, order="DESC")
        return [{"time": r.event_time, **r.details} for r in rows]

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        self._db.close()
