"""Durable delivery state for alarm notifications: subscriptions and an outbox.

One SQLite file in WAL mode. A notification is committed here, for every
subscription it goes to, before any delivery is attempted, and it stays until
the subscriber has acknowledged it (or the subscription is deleted): that is
what makes delivery at-least-once across controller restarts.

Durability is that of the event store (``store/sqlite.py``): with
``synchronous=NORMAL`` a commit survives a crash of the controller process;
``fsync=True`` (``synchronous=FULL``) also survives a power loss.

Order: ``seq`` (an AUTOINCREMENT key, never reused nor renumbered, unlike a plain
rowid after VACUUM) is the order notifications were enqueued in, which is the
order each subscriber receives them in.

The methods are synchronous and thread-safe (one connection behind a lock), so
that an asyncio caller can run the slower ones in ``asyncio.to_thread``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from nfvha.faults.model import FmNotificationsFilter
from nfvha.store.schema import migrate
from nfvha.util.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class StoredSubscription:
    id: str
    callback_uri: str
    filter: FmNotificationsFilter | None
    secret: str | None
    created: float


@dataclass(frozen=True)
class SubscriptionCounts:
    pending: int
    delivered_total: int


class Outbox:
    def __init__(self, path: Path, *, fsync: bool = False, clock: Clock = SYSTEM_CLOCK) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        self._db.execute("PRAGMA foreign_keys=ON")
        # Another process on the same file (an operator's tool) waits its turn
        # instead of failing at once.
        self._db.execute("PRAGMA busy_timeout=2000")
        migrate(path, "notifications")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- subscriptions --------------------------------------------------------

    def add_subscription(self, sub: StoredSubscription) -> None:
        filter_json = sub.filter.model_dump_json(exclude_none=True) if sub.filter else None
        with self._transaction() as db:
            db.execute(
                "INSERT INTO subscriptions(id, callback_uri, filter_json, secret, created)"
                " VALUES (?,?,?,?,?)",
                (sub.id, sub.callback_uri, filter_json, sub.secret, sub.created),
            )

    def subscriptions(self) -> list[StoredSubscription]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, callback_uri, filter_json, secret, created FROM subscriptions"
                " ORDER BY created, id"
            ).fetchall()
        return [_subscription(r) for r in rows]

    def subscription(self, id: str) -> StoredSubscription | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, callback_uri, filter_json, secret, created FROM subscriptions"
                " WHERE id = ?",
                (id,),
            ).fetchone()
        return _subscription(row) if row else None

    def delete_subscription(self, id: str) -> bool:
        """Delete a subscription and every notification still queued for it."""
        with self._transaction() as db:
            db.execute("DELETE FROM outbox WHERE subscription_id = ?", (id,))
            cur = db.execute("DELETE FROM subscriptions WHERE id = ?", (id,))
            return cur.rowcount > 0

    # -- notifications --------------------------------------------------------

    def enqueue(self, items: list[tuple[str, str, bytes]]) -> None:
        """Store ``(notification_id, subscription_id, body)`` items in one transaction.

        An id already stored is ignored (a retried enqueue is harmless). An item
        for a subscription that no longer exists is dropped: it was deleted
        between matching and enqueueing, and its consumer no longer wants it.
        """
        if not items:
            return
        now = self._clock.wall()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO outbox(notification_id, subscription_id, body, created)"
                " SELECT ?, id, ?, ? FROM subscriptions WHERE id = ?",
                [(nid, body, now, sid) for nid, sid, body in items],
            )

    def pending(self, subscription_id: str, limit: int = 100) -> list[tuple[str, bytes, int]]:
        """Undelivered ``(notification_id, body, attempts)``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT notification_id, body, attempts FROM outbox"
                " WHERE subscription_id = ? AND delivered = 0 ORDER BY seq LIMIT ?",
                (subscription_id, limit),
            ).fetchall()
        return [(nid, bytes(body), attempts) for nid, body, attempts in rows]

    def delivered(self, notification_id: str) -> None:
        self.delivered_many([notification_id])

    def delivered_many(self, notification_ids: list[str]) -> None:
        """Mark acknowledged notifications, in one transaction."""
        now = self._clock.wall()
        with self._transaction() as db:
            for nid in notification_ids:
                cur = db.execute(
                    "UPDATE outbox SET delivered = 1, delivered_time = ?, attempts = attempts + 1"
                    " WHERE notification_id = ? AND delivered = 0",
                    (now, nid),
                )
                if cur.rowcount:
                    db.execute(
                        "UPDATE subscriptions SET delivered_total = delivered_total + 1 WHERE id ="
                        " (SELECT subscription_id FROM outbox WHERE notification_id = ?)",
                        (nid,),
                    )

    def failed(self, notification_id: str, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt = ?, last_error = ?"
                " WHERE notification_id = ? AND delivered = 0",
                (self._clock.wall(), error[:1000], notification_id),
            )

    def counts(self) -> dict[str, SubscriptionCounts]:
        """Per subscription: notifications not yet delivered, and delivered ever."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.delivered_total,"
                " (SELECT COUNT(*) FROM outbox o WHERE o.subscription_id = s.id"
                "  AND o.delivered = 0)"
                " FROM subscriptions s"
            ).fetchall()
        return {sid: SubscriptionCounts(pending, total) for sid, total, pending in rows}

    def prune_delivered(self, delivered_before: float) -> int:
        """Forget delivered notifications older than ``delivered_before`` (wall time).

        They are kept for a while so that a duplicate enqueue of the same id is
        still recognised; the totals survive in ``subscriptions.delivered_total``.
        """
        with self._transaction() as db:
            cur = db.execute(
                "DELETE FROM outbox WHERE delivered = 1 AND delivered_time < ?",
                (delivered_before,),
            )
            return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _subscription(row: tuple[str, str, str | None, str | None, float]) -> StoredSubscription:
    sid, uri, filter_json, secret, created = row
    flt = FmNotificationsFilter.model_validate_json(filter_json) if filter_json else None
    return StoredSubscription(sid, uri, flt, secret, created)
