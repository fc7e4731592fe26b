"""Alembic environment for nfvha's SQLite stores.

Only ``nfvha.store.schema`` runs it: it passes, in ``config.attributes``, a
connection that is already inside a ``BEGIN IMMEDIATE`` transaction, so the
version check, the DDL and the version stamp are one transaction that holds the
database's write lock throughout (alembic sees an external transaction and
neither begins nor commits one itself). The ``alembic`` command line, which
would bring its own engine and no such lock, is refused.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError(
            "nfvha migrations run through nfvha.store.schema.migrate(), not the alembic CLI"
        )
    # transactional_ddl: SQLite's DDL is transactional, and here it all runs in
    # the caller's transaction anyway. Batch mode: SQLite's ALTER TABLE cannot
    # change columns, so revisions that do get alembic's copy-and-move recipe.
    context.configure(connection=connection, transactional_ddl=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("nfvha migrations have no offline (SQL script) mode")
run_migrations_online()
