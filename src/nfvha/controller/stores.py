"""The controller's stores, embedded or cluster, opened from its configuration.

Embedded (default): the SQLite files beside ``db_path``, as one controller always
had them. Cluster (ADR 0012, 0013): events, alarms and the notification outbox in
PostgreSQL (one connection per store object: the ager and the outbox run in worker
threads; the events' appends one more, for the event bus's writer thread). The
assignment records and checkpoints are the availability manager's, in the HA
director (ADR 0014): ``amf.db`` beside ``db_path``, or etcd with writes fenced by the
leader's term, read through ``store.leader_records.LeaderRecords``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, cast

from nfvha.controller.config import ControllerConfig
from nfvha.faults.outbox import Outbox
from nfvha.faults.outbox_pg import PgOutbox
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.base import EventStore
from nfvha.store.pg import PgDatabase
from nfvha.store.pg_stores import PgAlarmStore, PgEventStore, PgTokenStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.store.tokens import SqliteTokenStore, TokenStore, seed_tokens
from nfvha.util.clock import Clock


@dataclass
class Stores:
    events: EventStore
    # Typed as the SQLite classes the alarm manager and the notifier are written
    # against; the PostgreSQL ones keep the same contracts (tests/cluster_store).
    alarms: SqliteAlarmStore
    ager: SqliteAlarmStore
    outbox: Outbox
    _closers: list[Any] = field(default_factory=list)
    # API tokens (VNFHA-12): SQLite (embedded) or the shared store (a cluster); None:
    # the configuration's, in memory.
    tokens: TokenStore | None = None

    def close(self) -> None:
        for c in self._closers:
            with contextlib.suppress(Exception):  # closing: nothing left to tell
                c.close()


def open_stores(cfg: ControllerConfig, clock: Clock) -> Stores:
    if cfg.store.kind == "embedded":
        events = SqliteEventStore(cfg.db_path, fsync=cfg.db_fsync)
        alarms = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
        ager = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
        outbox = Outbox(cfg.db_path.with_name("notifications.db"), fsync=cfg.db_fsync)
        # Tokens added through the API are kept across restarts; the configuration's are
        # put back at every start, as a cluster member does (VNFHA-12).
        tokens = SqliteTokenStore(cfg.db_path.with_name("tokens.db"), fsync=cfg.db_fsync)
        seed_tokens(tokens, cfg.auth.tokens)
        return Stores(events, alarms, ager, outbox, [events, alarms, ager, outbox, tokens],
                      tokens)
    return open_history(cfg, clock)


def open_history(cfg: ControllerConfig, clock: Clock) -> Stores:
    """The PostgreSQL stores of a cluster member (no assignments). A member keeps them
    open across its terms, so that a new term does not wait for connections."""
    s = cfg.store
    if s.pg_conninfo is None:
        raise ValueError("no PostgreSQL conninfo: not a cluster store")

    def db() -> PgDatabase:
        return PgDatabase(s.pg_conninfo or "", schema=s.pg_schema)

    pg_events = PgEventStore(db(), owns_db=True, append_db=db())
    pg_alarms = PgAlarmStore(db(), owns_db=True)
    pg_ager = PgAlarmStore(db(), owns_db=True)
    pg_outbox = PgOutbox(db(), clock=clock, owns_db=True)
    pg_tokens = PgTokenStore(db(), owns_db=True)
    return Stores(pg_events, cast(SqliteAlarmStore, pg_alarms), cast(SqliteAlarmStore, pg_ager),
                  cast(Outbox, pg_outbox),
                  [pg_events, pg_alarms, pg_ager, pg_outbox, pg_tokens], pg_tokens)


def warm_up(history: Stores) -> bool:
    """Connect every store now (a follower, before it may have to lead)."""
    ok = True
    for store in (history.events, history.alarms, history.ager, history.outbox,
                  history.tokens):
        for db in (getattr(store, "db", None), getattr(store, "append_db", None)):
            ok = (db.ping() if isinstance(db, PgDatabase) else True) and ok
    return ok
