"""The notification outbox on PostgreSQL: ``faults.outbox.Outbox``'s contract, shared by
every controller of a cluster (ADR 0012).

Same rules as the SQLite outbox: a notification is committed for every
subscription it goes to before any delivery is attempted, and stays until
acknowledged; ``seq`` (an identity column) is the order of enqueueing and so of
delivery. Synchronous and thread-safe (``store.pg.PgDatabase``), for
``asyncio.to_thread`` callers.
"""

from __future__ import annotations

from typing import Any

from nfvha.faults.model import FmNotificationsFilter
from nfvha.faults.outbox import StoredSubscription, SubscriptionCounts
from nfvha.store.pg import PgDatabase
from nfvha.util.clock import SYSTEM_CLOCK, Clock

_SUBSCRIPTION = "SELECT id, callback_uri, filter_json, secret, created FROM subscriptions"


class PgOutbox:
    def __init__(self, db: PgDatabase, *, clock: Clock = SYSTEM_CLOCK,
                 owns_db: bool = False) -> None:
        self.db = db
        self._clock = clock
        self._owns_db = owns_db

    # -- subscriptions --------------------------------------------------------

    def add_subscription(self, sub: StoredSubscription) -> None:
        filter_json = sub.filter.model_dump_json(exclude_none=True) if sub.filter else None
        with self.db.transaction() as cur:
            cur.execute("INSERT INTO subscriptions(id, callback_uri, filter_json, secret, created)"
                        " VALUES (%s,%s,%s,%s,%s)",
                        (sub.id, sub.callback_uri, filter_json, sub.secret, sub.created))

    def subscriptions(self) -> list[StoredSubscription]:
        return [_subscription(r) for r in self.db.fetch(f"{_SUBSCRIPTION} ORDER BY created, id")]

    def subscription(self, id: str) -> StoredSubscription | None:
        rows = self.db.fetch(f"{_SUBSCRIPTION} WHERE id = %s", (id,))
        return _subscription(rows[0]) if rows else None

    def delete_subscription(self, id: str) -> bool:
        """Delete a subscription and every notification still queued for it."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM outbox WHERE subscription_id = %s", (id,))
            cur.execute("DELETE FROM subscriptions WHERE id = %s", (id,))
            return cur.rowcount > 0

    # -- notifications --------------------------------------------------------

    def enqueue(self, items: list[tuple[str, str, bytes]]) -> None:
        """Store ``(notification_id, subscription_id, body)`` items in one transaction;
        an id stored already is ignored, an item for a deleted subscription dropped."""
        if not items:
            return
        now = self._clock.wall()
        with self.db.transaction() as cur:
            cur.executemany(
                "INSERT INTO outbox(notification_id, subscription_id, body, created)"
                " SELECT %s, id, %s, %s FROM subscriptions WHERE id = %s"
                " ON CONFLICT (notification_id) DO NOTHING",
                [(nid, body, now, sid) for nid, sid, body in items])

    def pending(self, subscription_id: str, limit: int = 100) -> list[tuple[str, bytes, int]]:
        """Undelivered ``(notification_id, body, attempts)``, oldest first."""
        rows = self.db.fetch(
            "SELECT notification_id, body, attempts FROM outbox"
            " WHERE subscription_id = %s AND NOT delivered ORDER BY seq LIMIT %s",
            (subscription_id, limit))
        return [(str(nid), bytes(body), int(attempts))
                for nid, body, attempts in rows]

    def delivered(self, notification_id: str) -> None:
        self.delivered_many([notification_id])

    def delivered_many(self, notification_ids: list[str]) -> None:
        """Mark acknowledged notifications, in one transaction."""
        now = self._clock.wall()
        with self.db.transaction() as cur:
            for nid in notification_ids:
                cur.execute(
                    "UPDATE outbox SET delivered = TRUE, delivered_time = %s,"
                    " attempts = attempts + 1 WHERE notification_id = %s AND NOT delivered"
                    " RETURNING subscription_id", (now, nid))
                row = cur.fetchone()
                if row is not None:
                    cur.execute("UPDATE subscriptions SET delivered_total = delivered_total + 1"
                                " WHERE id = %s", (row[0],))

    def failed(self, notification_id: str, error: str) -> None:
        with self.db.transaction() as cur:
            cur.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt = %s, last_error = %s"
                " WHERE notification_id = %s AND NOT delivered",
                (self._clock.wall(), error[:1000], notification_id))

    def counts(self) -> dict[str, SubscriptionCounts]:
        """Per subscription: notifications not yet delivered, and delivered ever."""
        rows = self.db.fetch(
            "SELECT s.id, s.delivered_total, (SELECT count(*) FROM outbox o"
            " WHERE o.subscription_id = s.id AND NOT o.delivered) FROM subscriptions s")
        return {str(sid): SubscriptionCounts(int(pending), int(total))
                for sid, total, pending in rows}

    def prune_delivered(self, delivered_before: float) -> int:
        """Forget delivered notifications older than ``delivered_before`` (wall time)."""
        with self.db.transaction() as cur:
            cur.execute("DELETE FROM outbox WHERE delivered AND delivered_time < %s",
                        (delivered_before,))
            return cur.rowcount

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


def _subscription(row: tuple[Any, ...]) -> StoredSubscription:
    sid, uri, filter_json, secret, created = row
    flt = FmNotificationsFilter.model_validate_json(str(filter_json)) if filter_json else None
    return StoredSubscription(str(sid), str(uri), flt, None if secret is None else str(secret),
                              float(created))
