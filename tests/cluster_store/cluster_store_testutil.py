"""Helpers shared by the cluster-store tests: store factories per backend, records, events."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfvha.amf.model import AssignmentRecord
from nfvha.faults.outbox import Outbox
from nfvha.faults.outbox_pg import PgOutbox
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.alarms import AlarmStore
from nfvha.store.assignments import AssignmentStore
from nfvha.store.base import EventStore
from nfvha.store.etcd import DEFAULT_PREFIX
from nfvha.store.etcd_client import EtcdClient
from nfvha.store.leader import LeaderLease
from nfvha.store.pg import PgDatabase
from nfvha.store.tokens import TokenStore
from nfvha.testbed.etcd import EtcdCluster
from nfvha.testbed.postgres import PostgresServer
from nfvha.util.clock import SYSTEM_CLOCK, Clock, ManualClock

NOW = 1_800_000_000.0


def record(si: str, epoch: int, active: Iterable[str] = (), standby: Iterable[str] = (),
           changed_time: float = NOW) -> AssignmentRecord:
    return AssignmentRecord(si=si, epoch=epoch, active=tuple(active), standby=tuple(standby),
                            changed_time=changed_time)


def event(host: str, seq: int, kind: Kind = Kind.VNFC_CRASHED, entity: str = "vnfc/c1",
          **details: Any) -> Event:
    return Event(host=host, seq=seq, kind=kind, entity=entity, severity=Severity.MAJOR,
                 event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="test",
                 event_time=NOW + seq, detected_mono_ns=seq, details=details)


def unique(what: str) -> str:
    return f"{what}_{uuid.uuid4().hex[:10]}"


def eventually(cond: Callable[[], bool], timeout_s: float, what: str,
               interval_s: float = 0.02, *,
               tolerate: tuple[type[Exception], ...] = ()) -> float:
    """Poll ``cond`` until true (an exception in ``tolerate`` counts as not yet); returns
    the seconds it took, fails after ``timeout_s``."""
    start = time.monotonic()
    while True:
        try:
            if cond():
                return time.monotonic() - start
        except tolerate:
            pass
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)


@dataclass
class Servers:
    """The session's real servers, and what each test opened on them (closed after it)."""

    etcd: EtcdCluster
    pg: PostgresServer
    opened: list[Any] = field(default_factory=list)

    def etcd_client(self, endpoints: list[str] | None = None, **options: Any) -> EtcdClient:
        c = EtcdClient(endpoints or self.etcd.endpoints, **options)
        self.opened.append(c)
        return c

    def etcd_prefix(self) -> str:
        return f"{DEFAULT_PREFIX}{unique('t')}/"

    def pg_db(self, schema: str, **options: Any) -> PgDatabase:
        db = PgDatabase(self.pg.conninfo(), schema=schema, **options)
        self.opened.append(db)
        return db

    def close_opened(self) -> None:
        for o in reversed(self.opened):
            o.close()
        self.opened.clear()


@dataclass
class SqlitePaths:
    root: Path

    @property
    def events_db(self) -> Path:
        return self.root / "controller" / "events.db"

    @property
    def amf_db(self) -> Path:
        return self.root / "controller" / "amf.db"

    @property
    def notifications_db(self) -> Path:
        return self.root / "controller" / "notifications.db"

    @property
    def tokens_db(self) -> Path:
        return self.root / "controller" / "tokens.db"


class Opener:
    """Opens store instances on one backend's data (each a new connection), closes them all."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.opened: list[Any] = []

    def keep(self, store: Any) -> Any:
        self.opened.append(store)
        return store

    def close(self) -> None:
        for s in reversed(self.opened):
            s.close()


class AssignmentBackend(Opener):
    def __init__(self, backend: str, factory: Callable[[], AssignmentStore]) -> None:
        super().__init__(backend)
        self._factory = factory

    def open(self) -> AssignmentStore:
        store: AssignmentStore = self.keep(self._factory())
        return store


class LeaseBackend(Opener):
    def __init__(self, backend: str, make: Callable[[str, float], LeaderLease],
                 clock: Clock = SYSTEM_CLOCK, manual: ManualClock | None = None) -> None:
        super().__init__(backend)
        self._make = make
        self.clock = clock
        self._manual = manual

    def lease(self, holder: str, ttl_s: float) -> LeaderLease:
        lease: LeaderLease = self.keep(self._make(holder, ttl_s))
        return lease

    def let_expire(self, ttl_s: float) -> None:
        """Local: move the clock past the TTL. etcd: nothing; time passes for real."""
        if self._manual is not None:
            self._manual.advance(ttl_s + 0.001)


class HistoryBackend(Opener):
    """Events, alarms, outbox and tokens on one backend; each call gives a new instance
    (its own connection) on the same data, as another controller would have."""

    def __init__(self, backend: str, *, events: Callable[[], EventStore],
                 alarms: Callable[[], AlarmStore],
                 outbox: Callable[[Clock], Outbox | PgOutbox],
                 tokens: Callable[[], TokenStore]) -> None:
        super().__init__(backend)
        self._events, self._alarms, self._outbox, self._tokens = events, alarms, outbox, tokens

    def events(self) -> EventStore:
        store: EventStore = self.keep(self._events())
        return store

    def alarms(self) -> AlarmStore:
        store: AlarmStore = self.keep(self._alarms())
        return store

    def outbox(self, clock: Clock = SYSTEM_CLOCK) -> Outbox | PgOutbox:
        store: Outbox | PgOutbox = self.keep(self._outbox(clock))
        return store

    def tokens(self) -> TokenStore:
        store: TokenStore = self.keep(self._tokens())
        return store


class AnswerDropper:
    """A member's stand-in that forwards each request to the real member, waits until the
    member answers, and closes the connection without passing the answer on: the write
    is committed and the client never hears (a member dying after the commit)."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self._upstream = (host, upstream_port)
        self._sock = socket.create_server((host, 0))
        self._sock.settimeout(0.05)  # to see the stop flag
        self.url = f"http://{host}:{self._sock.getsockname()[1]}"
        self.forwarded = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            with conn:
                self._forward(conn)

    def _forward(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(body) < length:
            body += conn.recv(65536)
        with socket.create_connection(self._upstream, timeout=5) as up:
            up.sendall(head + b"\r\n\r\n" + body)
            up.recv(1)  # the member has answered: the request was carried out
        self.forwarded += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
