"""The assignment record store: who holds each SI, written only by compare-and-set
on the record's epoch (ADR 0008), and the components' checkpoints.

Patroni's contract: losing the race is an answer (``False``), not an error;
``StoreUnavailable`` means the store could not be read or written, and the
caller must not send orders for a write it cannot confirm.

The SQLite implementation does each compare-and-set as one statement (an
``INSERT`` that must not conflict, or an ``UPDATE ... WHERE epoch = ?``), which
SQLite runs under its database write lock: two writers with the same expected
epoch, in one process or two, cannot both succeed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from nfvha.amf.model import AssignmentRecord
from nfvha.store.base import StoreUnavailable
from nfvha.store.schema import open_store


class AssignmentStore(Protocol):
    def get(self, si: str) -> AssignmentRecord | None: ...

    def all(self) -> dict[str, AssignmentRecord]: ...

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        """Write ``record`` if the stored epoch of ``si`` is ``expected_epoch`` (0: no
        record yet). ``record.epoch`` must be ``expected_epoch + 1`` (else ValueError)."""
        ...

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        """Store a JSON-able ``value``; returns its version (1 for the first write)."""
        ...

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None: ...

    def close(self) -> None: ...


def check_cas(si: str, expected_epoch: int, record: AssignmentRecord) -> None:
    """The argument checks every implementation makes; raises ValueError."""
    if expected_epoch < 0:
        raise ValueError(f"expected_epoch must be >= 0, got {expected_epoch}")
    if record.si != si:
        raise ValueError(f"record of SI {record.si!r} written as {si!r}")
    if record.epoch != expected_epoch + 1:
        raise ValueError(f"record epoch {record.epoch} != expected epoch {expected_epoch} + 1")


class SqliteAssignmentStore:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._db = open_store(path, "amf", fsync=fsync)
        # One connection may be shared by threads (asyncio.to_thread); a statement
        # and the read of its rowcount must not interleave with another thread's.
        self._lock = threading.Lock()

    def get(self, si: str) -> AssignmentRecord | None:
        row = self._one("SELECT body FROM assignments WHERE si = ?", (si,))
        return self._record(row[0]) if row else None

    def all(self) -> dict[str, AssignmentRecord]:
        with self._lock:
            try:
                rows = self._db.execute("SELECT body FROM assignments ORDER BY si").fetchall()
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e
        records = [self._record(body) for (body,) in rows]
        return {r.si: r for r in records}

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        check_cas(si, expected_epoch, record)
        body = record.model_dump_json()
        if expected_epoch == 0:
            sql = "INSERT INTO assignments(si, epoch, body) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
            params: tuple[Any, ...] = (si, record.epoch, body)
        else:
            sql = "UPDATE assignments SET epoch = ?, body = ? WHERE si = ? AND epoch = ?"
            params = (record.epoch, body, si, expected_epoch)
        return self._write(sql, params) == 1

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {owner}/{key} is not JSON: {e}") from e
        row = self._one(
            "INSERT INTO checkpoints(owner, key, version, value) VALUES (?, ?, 1, ?)"
            " ON CONFLICT(owner, key) DO UPDATE SET version = version + 1, value = excluded.value"
            " RETURNING version", (owner, key, text))
        assert row is not None  # RETURNING always gives the row written
        return int(row[0])

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None:
        row = self._one("SELECT version, value FROM checkpoints WHERE owner = ? AND key = ?",
                        (owner, key))
        return (int(row[0]), json.loads(row[1])) if row else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        with self._lock:
            try:
                # fetchall: a statement (RETURNING's) left unfinished keeps its
                # autocommit transaction, and the write lock, open.
                rows = self._db.execute(sql, params).fetchall()
                return rows[0] if rows else None
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            try:
                return self._db.execute(sql, params).rowcount
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e

    @staticmethod
    def _record(body: str) -> AssignmentRecord:
        try:
            return AssignmentRecord.model_validate_json(body)
        except ValidationError as e:
            raise StoreUnavailable(f"unreadable assignment record: {e}") from e
