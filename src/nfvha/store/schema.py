"""Schema migrations of the embedded SQLite stores, managed by alembic.

Four independent schemas, each in its own database file:

- ``events`` (``<run>/controller/events.db``): ``events`` and ``agent_seq``
  (the event store) and ``alarms`` (the alarm store);
- ``notifications`` (``<run>/controller/notifications.db``): ``subscriptions``
  and ``outbox``;
- ``amf`` (``<run>/controller/amf.db``): ``assignments`` and ``checkpoints``
  (the availability manager's assignment store);
- ``tokens`` (``<run>/controller/tokens.db``): ``tokens`` (the API tokens' hashes,
  ``store.tokens.SqliteTokenStore``).

Layout: one alembic environment (``migrations/env.py``,
``migrations/script.py.mako``) and one version directory per schema
(``migrations/events/``, ``migrations/notifications/``). The alembic ``Config``
is built here, in code (no alembic.ini), with ``version_locations`` set to the
schema's directory alone, so each schema is a linear history of its own and
each database has its own ``alembic_version`` table. Two directories rather
than two branches in one: a database can never be upgraded with the other
schema's revisions, and no revision has to name a branch. Revision ids are
``<schema>_<NNNN>`` and a revision's file is ``<id>_<slug>.py``.

The stores call :func:`migrate` right after their pragmas (WAL, synchronous)
and keep using stdlib ``sqlite3`` for their queries; SQLAlchemy is only the
connection alembic works through.

Fast path (a store opened at head): the newest revision id is the greatest
``<schema>_<NNNN>`` file name in the version directories (a directory listing;
tests/store_migrations checks the naming against alembic's own revision graph),
and the database's ``alembic_version`` is read with stdlib ``sqlite3``. When
they agree nothing else happens: alembic and SQLAlchemy, ~0.3 s to import, are
not even imported. Measured: ~0.4-0.5 ms per call at head, which takes
opening a store from ~0.3 ms to ~0.5 ms (test_store_migrations_schema.py).

Slow path, serialised between processes and connections: a SQLAlchemy
connection whose pysqlite driver is left in autocommit and whose transactions
start with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented recipe for real SQLite
transactions). That takes the database's single write lock (the one the
stores' own write transactions take, whichever process they are in) before
anything is read, and alembic runs inside that one transaction (it sees an
external transaction and leaves it alone): the version check, the adoption
check, the DDL and the ``alembic_version`` row commit together or not at all.
A second opener, another process or the controller's next connection to the
events DB, waits for the lock (up to ``LOCK_WAIT_S``), then finds the database
at head and does nothing. SQLite DDL is transactional, so a crash mid-migration
leaves the database at the revision it had.

Adoption: a database created before migrations (our tables, no
``alembic_version``) is compared, object by object (normalised ``CREATE``
text), with what the initial revision creates, built once per process in a
scratch in-memory database. If all of it is there the database is ``stamp``-ed
at the initial revision; if part is missing (an alarm store opened alone made
only ``alarms``) the initial revision runs over it, its ``CREATE ... IF NOT
EXISTS`` adding only what is missing. A database with other tables, or with one
of ours defined differently, is refused (:class:`MigrationError`).

Durability: the migration connection keeps SQLite's default
``synchronous=FULL``, so a schema change is on disk before the store goes on.
The journal mode (WAL) is the stores' to set, before they call :func:`migrate`.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nfvha.store.base import StoreUnavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

SchemaName = Literal["events", "notifications", "amf", "tokens"]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"
# How long an opener waits for the write lock (another opener's migration, or a
# store's write transaction) before giving up with MigrationError.
LOCK_WAIT_S = 30.0


class MigrationError(Exception):
    """The database cannot be brought to (or read at) its schema's head."""


@dataclass(frozen=True)
class SchemaLayout:
    """Where one schema's revisions live, and which one creates the pre-migrations tables."""

    name: str
    version_dirs: tuple[Path, ...]
    initial: str

    def head(self) -> str:
        """The newest revision id, from the file names alone (no alembic import)."""
        pattern = re.compile(rf"({re.escape(self.name)}_\d{{4}})_\w+\.py")
        ids = [m.group(1) for d in self.version_dirs for f in d.iterdir()
               if (m := pattern.fullmatch(f.name))]
        if not ids:
            raise MigrationError(f"no {self.name} revisions in {self.version_dirs}")
        return max(ids)


LAYOUTS: Mapping[SchemaName, SchemaLayout] = {
    "events": SchemaLayout("events", (MIGRATIONS_DIR / "events",), "events_0001"),
    "notifications": SchemaLayout(
        "notifications", (MIGRATIONS_DIR / "notifications",), "notifications_0001"),
    "amf": SchemaLayout("amf", (MIGRATIONS_DIR / "amf",), "amf_0001"),
    "tokens": SchemaLayout("tokens", (MIGRATIONS_DIR / "tokens",), "tokens_0001"),
}


def migrate(path: Path, schema: SchemaName) -> None:
    """Bring the database at ``path`` (created if missing) to the schema's head.

    Idempotent; under a millisecond when already at head; safe against
    concurrent callers, in this process or others.
    Raises MigrationError."""
    upgrade(path, LAYOUTS[schema])


def current(path: Path, schema: SchemaName) -> str | None:
    """The revision the database at ``path`` is at; None when it has none (no file,
    or a database migrations have not touched yet). Raises MigrationError if it
    carries another schema's revision."""
    try:
        versions = _stored_versions(path)
    except sqlite3.Error as e:
        raise MigrationError(f"cannot read the schema version of {path}: {e}") from e
    if not versions:
        return None
    if len(versions) > 1 or not versions[0].startswith(f"{schema}_"):
        raise MigrationError(f"{path} is at {versions}, not a {schema} revision")
    return versions[0]


def head(schema: SchemaName) -> str:
    """The schema's newest revision id."""
    return LAYOUTS[schema].head()


def upgrade(path: Path, layout: SchemaLayout) -> None:
    """:func:`migrate` for any layout (tests add version directories)."""
    try:
        at_head = _stored_versions(path) == (layout.head(),)
    except sqlite3.Error as e:
        raise MigrationError(f"cannot read the schema version of {path}: {e}") from e
    if not at_head:
        _upgrade_locked(path, layout)


def _stored_versions(path: Path) -> tuple[str, ...] | None:
    if not path.is_file():
        return None
    with closing(sqlite3.connect(str(path), timeout=LOCK_WAIT_S)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (VERSION_TABLE,)).fetchone() is None:
            return None
        return tuple(str(r[0]) for r in db.execute(f"SELECT version_num FROM {VERSION_TABLE}"))


def _upgrade_locked(path: Path, layout: SchemaLayout) -> None:
    # Imported here, not at module level: only an opener with work to do pays.
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _immediate_transaction(str(path)) as conn:
            cfg = _config(layout, conn)
            if _is_complete_premigrations_db(conn, layout, path):
                command.stamp(cfg, layout.initial)
            command.upgrade(cfg, "head")
    except (CommandError, SQLAlchemyError, sqlite3.Error) as e:
        raise MigrationError(f"cannot bring {path} to the {layout.name} head: {e}") from e


@contextmanager
def _immediate_transaction(database: str | None) -> Iterator[Connection]:
    """A connection inside ``BEGIN IMMEDIATE``, committed on success; ``None``
    is a scratch in-memory database."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(sa.URL.create("sqlite", database=database), poolclass=NullPool,
                              connect_args={"timeout": LOCK_WAIT_S})
    sa.event.listen(engine, "connect", _driver_autocommit)
    sa.event.listen(engine, "begin", _begin_immediate)
    try:
        with engine.connect() as conn, conn.begin():
            yield conn
    finally:
        engine.dispose()


def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite would otherwise BEGIN (deferred) only before DML and run DDL
    # outside any transaction; _begin_immediate takes over instead.
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _config(layout: SchemaLayout, conn: Connection) -> Config:
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%'.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("version_locations", os.pathsep.join(
        str(d).replace("%", "%%") for d in layout.version_dirs))
    # alembic >= 1.16 reads path_separator, older versions version_path_separator.
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_path_separator", "os")
    cfg.attributes["connection"] = conn  # read by env.py
    return cfg


def _is_complete_premigrations_db(conn: Connection, layout: SchemaLayout, path: Path) -> bool:
    """True for a database the pre-migrations code created in full (stamp it).
    False for a new, a migrated or a partial pre-migrations one (upgrade it).
    Raises MigrationError for a database that is none of those."""
    found = _schema_objects(conn)
    if not found or VERSION_TABLE in found:
        return False
    expected = _initial_objects(layout)
    foreign = sorted(n for n in found if n not in expected)
    different = sorted(n for n in found if n in expected and found[n] != expected[n])
    if foreign or different:
        raise MigrationError(
            f"{path} is not an nfvha {layout.name} database: unknown objects {foreign},"
            f" objects defined differently {different}")
    return found.keys() == expected.keys()


@cache
def _initial_objects(layout: SchemaLayout) -> Mapping[str, str]:
    """What the initial revision creates, from running it on a scratch database."""
    from alembic import command

    with _immediate_transaction(None) as conn:
        command.upgrade(_config(layout, conn), layout.initial)
        objects = _schema_objects(conn)
    del objects[VERSION_TABLE]
    return objects


def _schema_objects(conn: Connection) -> dict[str, str]:
    """Tables, indexes, views and triggers by name, with whitespace-normalised SQL
    (SQLite's own objects, such as sqlite_sequence and automatic indexes, left out)."""
    rows = conn.exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE substr(name, 1, 7) != 'sqlite_'").all()
    return {str(name): " ".join(str(sql).split()) for name, sql in rows}


def open_store(path: Path, schema: SchemaName, *, fsync: bool) -> sqlite3.Connection:
    """A store's connection: WAL (readers never block the writer), the stated fsync
    policy (``synchronous=NORMAL``: a commit survives a crash of the process; ``FULL``
    also a power loss), and the schema at head. Raises ``StoreUnavailable``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        migrate(path, schema)
    except (sqlite3.Error, MigrationError) as e:
        raise StoreUnavailable(f"cannot open {path}: {e}") from e
    return db
