"""PostgreSQL for history: the connection every PostgreSQL store goes through (ADR 0012).

psycopg 3, synchronous, like the store contracts. One connection per store,
behind a lock (``asyncio.to_thread`` callers may share it), opened on first use
and opened again on the call after a failure. Every psycopg error becomes
``StoreUnavailable``; a commit whose answer is lost is ``StoreUnavailable`` too,
and its caller does not acknowledge (agents re-send; the stores deduplicate).

Bounded waits, so that a dead or partitioned server costs a bounded stall:
``connect_timeout``, a server-side ``statement_timeout``, and TCP keepalives plus
``tcp_user_timeout`` on the client, which end a connection whose peer stopped
answering instead of waiting on it for the kernel's default minutes.

Schema: the tables live in a PostgreSQL schema of their own (``nfvha`` unless
told; tests use one per test). Versions are a list of DDL steps applied in order
in one transaction, under an advisory lock so that controllers starting
together apply them once; ``schema_version`` says how far a database is.
PostgreSQL's DDL is transactional: a failed step leaves the version it had.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql

from nfvha.store.base import StoreUnavailable

SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Advisory lock keys (any 64-bit number both sides agree on).
MIGRATE_LOCK = 0x6E66_7668_6D69_6772  # "nfvhmigr"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: events, alarms, notifications, tokens (the SQLite stores' tables, PostgreSQL types)
    (
        """CREATE TABLE events (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host TEXT NOT NULL,
  seq BIGINT NOT NULL,
  origin TEXT NOT NULL,
  kind TEXT NOT NULL,
  entity TEXT NOT NULL,
  body TEXT NOT NULL,
  received_time DOUBLE PRECISION NOT NULL,
  received_mono_ns BIGINT NOT NULL)""",
        "CREATE UNIQUE INDEX events_agent_seq ON events(host, seq) WHERE seq > 0",
        "CREATE INDEX events_kind_entity ON events(kind, entity, id)",
        "CREATE INDEX events_received_time ON events(received_time)",
        "CREATE TABLE agent_seq (host TEXT PRIMARY KEY, last_seq BIGINT NOT NULL)",
        """CREATE TABLE alarms (
  id TEXT PRIMARY KEY,
  key TEXT NOT NULL,
  entity TEXT NOT NULL,
  host TEXT NOT NULL,
  severity TEXT NOT NULL,
  active BOOLEAN NOT NULL,
  raised_time DOUBLE PRECISION NOT NULL,
  changed_time DOUBLE PRECISION NOT NULL,
  body TEXT NOT NULL)""",
        "CREATE UNIQUE INDEX alarms_active_key ON alarms(key) WHERE active",
        "CREATE INDEX alarms_entity ON alarms(entity, raised_time)",
        "CREATE TABLE alarm_meta (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
        """CREATE TABLE subscriptions (
  id TEXT PRIMARY KEY,
  callback_uri TEXT NOT NULL,
  filter_json TEXT,
  secret TEXT,
  created DOUBLE PRECISION NOT NULL,
  delivered_total BIGINT NOT NULL DEFAULT 0)""",
        """CREATE TABLE outbox (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  notification_id TEXT NOT NULL UNIQUE,
  subscription_id TEXT NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
  body BYTEA NOT NULL,
  created DOUBLE PRECISION NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_attempt DOUBLE PRECISION,
  delivered BOOLEAN NOT NULL DEFAULT FALSE,
  delivered_time DOUBLE PRECISION,
  last_error TEXT)""",
        "CREATE INDEX outbox_pending ON outbox(subscription_id, delivered, seq)",
        "CREATE INDEX outbox_delivered_time ON outbox(delivered, delivered_time)",
        """CREATE TABLE tokens (
  sha256 TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '')""",
    ),
)


def head() -> int:
    return len(MIGRATIONS)


class PgDatabase:
    def __init__(self, conninfo: str, *, schema: str = "nfvha", connect_timeout_s: float = 2.0,
                 statement_timeout_s: float = 5.0, tcp_user_timeout_s: float = 3.0,
                 check_idle_s: float = 0.5) -> None:
        if not SCHEMA_RE.match(schema):
            raise ValueError(f"bad schema name {schema!r}")
        self.conninfo = conninfo
        self.schema = schema
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._options = (f"-c statement_timeout={int(statement_timeout_s * 1000)}"
                         f" -c search_path={schema}")
        self._tcp_user_timeout_ms = int(tcp_user_timeout_s * 1000)
        self._check_idle_ns = int(check_idle_s * 1e9)
        self._used_ns = 0
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._migrated = False
        self._closed = False

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken and (
                time.monotonic_ns() - self._used_ns < self._check_idle_ns or self._alive(conn)):
            self._used_ns = time.monotonic_ns()
            return conn
        self._drop()
        conn = psycopg.connect(
            self.conninfo, autocommit=True, connect_timeout=self._connect_timeout,
            options=self._options, keepalives=1, keepalives_idle=1, keepalives_interval=1,
            keepalives_count=3, tcp_user_timeout=self._tcp_user_timeout_ms)
        self._conn = conn
        self._used_ns = time.monotonic_ns()
        if not self._migrated:
            migrate(conn, self.schema)
            self._migrated = True
        return conn

    @staticmethod
    def _alive(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
        """A connection idle for a while is checked before use (as a pool does): one
        the server closed meanwhile - a restart - would fail the caller's first
        statement, and a new leader's term would end on it."""
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        """A cursor inside one transaction, committed when the block ends."""
        with self._lock:
            try:
                conn = self._connect()
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as e:
                self._failed(e)
                raise StoreUnavailable(f"PostgreSQL: {e}") from e

    def fetch(self, query: str,
              params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement outside any explicit transaction (reads)."""
        with self._lock:
            try:
                return self._connect().execute(query, params).fetchall()
            except psycopg.Error as e:
                self._failed(e)
                raise StoreUnavailable(f"PostgreSQL: {e}") from e

    def ping(self) -> bool:
        try:
            self.fetch("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()

    def _failed(self, e: psycopg.Error) -> None:
        # A connection error, or one that left the connection unusable, is not retried on
        # the same connection: the next call connects again.
        if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError) or (
                self._conn is not None and (self._conn.broken or self._conn.closed)):
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def migrate(conn: psycopg.Connection[tuple[Any, ...]], schema: str) -> int:
    """Bring ``schema`` to ``head()``; returns the version it was at. Safe to run
    concurrently from several controllers (advisory lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.schema_version (version INTEGER"
                             " NOT NULL)").format(sql.Identifier(schema)))
        row = conn.execute(sql.SQL("SELECT max(version) FROM {}.schema_version")
                           .format(sql.Identifier(schema))).fetchone()
        at = int(row[0]) if row and row[0] is not None else 0
        if at > head():
            raise StoreUnavailable(f"schema {schema} is at version {at}, newer than this"
                                   f" nfvha ({head()})")
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
        for steps in MIGRATIONS[at:]:
            for statement in steps:
                conn.execute(statement)
        if at < head():
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (head(),))
        return at
