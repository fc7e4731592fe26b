"""The controller's stores, embedded or cluster, opened from its configuration.

Embedded (default): the SQLite files beside ``db_path``, as one controller always
had them. Cluster (ADR 0012, 0013): events, alarms and the notification outbox in
PostgreSQL (one connection per store object: the ager and the outbox run in worker
threads; the events' appends one more, for the event bus's writer thread),
assignments and checkpoints in etcd, with writes fenced by the leader's term when a
fence is given, and read through ``LeaderRecords``.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, cast

from nfvha.amf.model import AssignmentRecord
from nfvha.controller.config import ControllerConfig
from nfvha.faults.outbox import Outbox
from nfvha.faults.outbox_pg import PgOutbox
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.assignments import AssignmentStore, SqliteAssignmentStore
from nfvha.store.base import EventStore, StoreUnavailable
from nfvha.store.etcd import EtcdAssignmentStore, WriteFence
from nfvha.store.etcd_client import EtcdClient
from nfvha.store.pg import PgDatabase
from nfvha.store.pg_stores import PgAlarmStore, PgEventStore, PgTokenStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.store.tokens import SqliteTokenStore, TokenStore, seed_tokens
from nfvha.util.clock import Clock


class LeaderRecords:
    """The assignment records as the leader of a term keeps them: read once from etcd,
    then from memory, updated by its own compare-and-sets. Sound because nobody else
    writes during the term (the writes are fenced by it). The VNFM reads the records
    for every lease grant, on the event loop: from etcd, each read would hold the loop
    for a round trip, and for the whole deadline while etcd cannot be reached.

    Writes (and checkpoints) run in worker threads; the caller waits ``block_s`` at
    most. An answer later than that is "no answer" (``StoreUnavailable``: the write
    may still land, ADR 0012): the loop is never held for etcd's deadline - which, in
    an etcd leader election, outlasted the controller's own lease renewals and cost it
    its term. Until such a write is settled, another write of the same record is
    refused at once.

    A write that lost (another record is there) or got no answer makes the record
    uncertain: it is read again in the background, and until then the old one is
    served. Serving it is safe: the record that may have replaced it has the next
    epoch and none of its orders went out; a decision taken from the old one fails its
    compare-and-set and is taken again, and the lease grants state whatever record
    the cache holds once it is settled."""

    def __init__(self, store: AssignmentStore, *, block_s: float = 0.1,
                 workers: int = 4) -> None:
        self._store = store
        self._block_s = block_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="records")
        self._known: dict[str, AssignmentRecord | None] = {}
        self._writes: dict[str, int] = {}  # si -> local writes, to drop stale refreshes
        self._inflight: set[str] = set()
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def get(self, si: str) -> AssignmentRecord | None:
        with self._lock:
            if si in self._known:
                return self._known[si]
        rec = self._store.get(si)
        with self._lock:
            self._known.setdefault(si, rec)
            return self._known[si]

    def all(self) -> dict[str, AssignmentRecord]:
        records = self._store.all()
        with self._lock:
            self._known.update(records)
        return records

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        with self._lock:
            if si in self._inflight:
                raise StoreUnavailable(f"an earlier write of {si} has no answer yet")
            self._inflight.add(si)
            self._writes[si] = self._writes.get(si, 0) + 1
        try:
            fut = self._submit(self._store.compare_and_set, si, expected_epoch, record)
        except StoreUnavailable:
            with self._lock:
                self._inflight.discard(si)
            raise
        fut.add_done_callback(functools.partial(self._settled, si, record))
        ok = bool(self._wait(fut, f"compare-and-set of {si}"))
        if ok:  # the done callback may not have run yet: the next read must see it
            with self._lock:
                self._known[si] = record
        return ok

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        return int(self._wait(self._submit(self._store.checkpoint_write, owner, key, value),
                              f"checkpoint {owner}/{key}"))

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None:
        got: tuple[int, Any] | None = self._wait(
            self._submit(self._store.checkpoint_read, owner, key), f"checkpoint {owner}/{key}")
        return got

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._store.close()

    def _submit(self, fn: Any, *args: Any) -> Future[Any]:
        try:
            return self._pool.submit(fn, *args)
        except RuntimeError as e:  # shut down with the term
            raise StoreUnavailable(f"the store is closed: {e}") from None

    def _wait(self, fut: Future[Any], what: str) -> Any:
        try:
            return fut.result(timeout=self._block_s)
        except FutureTimeout:
            raise StoreUnavailable(f"{what}: no answer within {self._block_s:g} s; it may"
                                   " still be written") from None

    def _settled(self, si: str, record: AssignmentRecord,
                 fut: Future[bool]) -> None:
        with self._lock:
            self._inflight.discard(si)
        if not fut.cancelled() and fut.exception() is None and fut.result():
            with self._lock:
                self._known[si] = record
        else:
            self._refresh(si)

    def _refresh(self, si: str, pause_s: float = 0.1) -> None:
        """Read ``si`` again in a thread of its own, until etcd answers."""
        with self._lock:
            if si in self._refreshing:
                return
            self._refreshing.add(si)
            writes = self._writes.get(si, 0)

        def read() -> None:
            while True:
                try:
                    rec = self._store.get(si)
                except StoreUnavailable:
                    time.sleep(pause_s)
                    continue
                except Exception:  # closed with the term: nothing left to keep fresh
                    break
                with self._lock:
                    if self._writes.get(si, 0) == writes:
                        self._known[si] = rec
                break
            with self._lock:
                self._refreshing.discard(si)

        threading.Thread(target=read, name=f"refresh-{si}", daemon=True).start()


@dataclass
class Stores:
    events: EventStore
    # Typed as the SQLite classes the alarm manager and the notifier are written
    # against; the PostgreSQL ones keep the same contracts (tests/cluster_store).
    alarms: SqliteAlarmStore
    ager: SqliteAlarmStore
    outbox: Outbox
    assignments: AssignmentStore | None
    _closers: list[Any] = field(default_factory=list)
    # API tokens (VNFHA-12): SQLite (embedded) or the shared store (a cluster); None:
    # the configuration's, in memory.
    tokens: TokenStore | None = None

    def close(self) -> None:
        for c in self._closers:
            with contextlib.suppress(Exception):  # closing: nothing left to tell
                c.close()


def open_stores(cfg: ControllerConfig, clock: Clock, *, fence: WriteFence | None = None,
                etcd: EtcdClient | None = None) -> Stores:
    """``fence``: the leader's, for assignment writes; ``etcd``: a client to share (else
    one is opened and closed with the stores)."""
    if cfg.store.kind == "embedded":
        events = SqliteEventStore(cfg.db_path, fsync=cfg.db_fsync)
        alarms = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
        ager = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
        outbox = Outbox(cfg.db_path.with_name("notifications.db"), fsync=cfg.db_fsync)
        amf: AssignmentStore | None = None
        if cfg.amf is not None:
            amf = SqliteAssignmentStore(cfg.db_path.with_name("amf.db"), fsync=cfg.db_fsync)
        # Tokens added through the API are kept across restarts; the configuration's are
        # put back at every start, as a cluster member does (VNFHA-12).
        tokens = SqliteTokenStore(cfg.db_path.with_name("tokens.db"), fsync=cfg.db_fsync)
        seed_tokens(tokens, cfg.auth.tokens)
        return Stores(events, alarms, ager, outbox, amf,
                      [s for s in (events, alarms, ager, outbox, amf, tokens) if s is not None],
                      tokens)
    history = open_history(cfg, clock)
    return for_term(history, cfg, etcd, fence, owns_history=True)


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
                  cast(Outbox, pg_outbox), None,
                  [pg_events, pg_alarms, pg_ager, pg_outbox, pg_tokens], pg_tokens)


def warm_up(history: Stores) -> bool:
    """Connect every store now (a follower, before it may have to lead)."""
    ok = True
    for store in (history.events, history.alarms, history.ager, history.outbox,
                  history.tokens):
        for db in (getattr(store, "db", None), getattr(store, "append_db", None)):
            ok = (db.ping() if isinstance(db, PgDatabase) else True) and ok
    return ok


def for_term(history: Stores, cfg: ControllerConfig, etcd: EtcdClient | None,
             fence: WriteFence | None, *, owns_history: bool = False) -> Stores:
    """One term's stores: ``history``'s, and the term's own records (fenced by it).
    Closing them closes the records only, unless ``owns_history``."""
    s = cfg.store
    records: LeaderRecords | None = None
    closers: list[Any] = list(history._closers) if owns_history else []
    if cfg.amf is not None:
        client = etcd or EtcdClient(s.etcd_endpoints, op_timeout_s=s.etcd_op_timeout_s)
        records = LeaderRecords(EtcdAssignmentStore(
            client, prefix=s.etcd_prefix, owns_client=etcd is None, fence=fence))
        closers.append(records)
    return Stores(history.events, history.alarms, history.ager, history.outbox, records,
                  closers, history.tokens)
