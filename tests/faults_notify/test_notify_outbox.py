"""The notification outbox: durable, ordered, idempotent delivery state."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.faults.model import FmNotificationsFilter, NotificationType
from nfvha.faults.outbox import Outbox, StoredSubscription
from nfvha.store.schema import migrate
from nfvha.util.clock import ManualClock


def sub(sid: str, secret: str | None = None) -> StoredSubscription:
    flt = FmNotificationsFilter(notificationTypes=[NotificationType.ALARM], resourceIds=["host/h1"])
    return StoredSubscription(sid, f"http://127.0.0.1:9/{sid}", flt, secret, 1_800_000_000.0)


@pytest.fixture
def outbox(outbox_path: Path) -> Iterator[Outbox]:
    ob = Outbox(outbox_path)
    try:
        yield ob
    finally:
        ob.close()


def test_subscriptions_round_trip_and_survive_reopen(outbox_path: Path) -> None:
    ob = Outbox(outbox_path)
    try:
        ob.add_subscription(sub("s1", secret="0123456789abcdef"))
        ob.add_subscription(StoredSubscription("s2", "https://x.test/cb", None, None, 1.0))
    finally:
        ob.close()
    ob = Outbox(outbox_path)
    try:
        subs = {s.id: s for s in ob.subscriptions()}
        assert subs["s1"] == sub("s1", secret="0123456789abcdef")
        assert subs["s2"].filter is None and subs["s2"].secret is None
        assert ob.subscription("s1") == subs["s1"]
        assert ob.subscription("nope") is None
        with pytest.raises(sqlite3.IntegrityError):
            ob.add_subscription(sub("s1"))
    finally:
        ob.close()


def test_enqueue_is_ordered_idempotent_and_per_subscription(outbox: Outbox) -> None:
    outbox.add_subscription(sub("s1"))
    outbox.add_subscription(sub("s2"))
    outbox.enqueue([("n1", "s1", b"1"), ("n2", "s2", b"2"), ("n3", "s1", b"3")])
    outbox.enqueue([("n3", "s1", b"other"), ("n4", "s1", b"4")])  # n3 again: ignored
    outbox.enqueue([("n5", "gone", b"5")])  # no such subscription: dropped
    assert outbox.pending("s1") == [("n1", b"1", 0), ("n3", b"3", 0), ("n4", b"4", 0)]
    assert outbox.pending("s2") == [("n2", b"2", 0)]
    assert outbox.pending("s1", limit=2) == [("n1", b"1", 0), ("n3", b"3", 0)]
    assert outbox.pending("gone") == []


def test_enqueue_is_atomic(outbox: Outbox) -> None:
    outbox.add_subscription(sub("s1"))
    with pytest.raises(sqlite3.Error):
        # The second body is not bindable: nothing of the batch may be stored.
        outbox.enqueue([("n1", "s1", b"1"), ("n2", "s1", object())])  # type: ignore[list-item]
    assert outbox.pending("s1") == []


def test_failed_and_delivered_update_state_and_counts(outbox: Outbox) -> None:
    outbox.add_subscription(sub("s1"))
    outbox.enqueue([("n1", "s1", b"1"), ("n2", "s1", b"2")])
    outbox.failed("n1", "HTTP 503")
    outbox.failed("n1", "timeout")
    assert outbox.pending("s1") == [("n1", b"1", 2), ("n2", b"2", 0)]
    assert outbox.counts()["s1"].pending == 2
    outbox.delivered("n1")
    outbox.delivered("n1")  # a second acknowledgement changes nothing
    assert outbox.pending("s1") == [("n2", b"2", 0)]
    c = outbox.counts()["s1"]
    assert (c.pending, c.delivered_total) == (1, 1)


def test_delete_subscription_drops_its_notifications(outbox: Outbox) -> None:
    outbox.add_subscription(sub("s1"))
    outbox.add_subscription(sub("s2"))
    outbox.enqueue([("n1", "s1", b"1"), ("n2", "s2", b"2")])
    assert outbox.delete_subscription("s1") is True
    assert outbox.delete_subscription("s1") is False
    assert outbox.pending("s1") == []
    assert outbox.pending("s2") == [("n2", b"2", 0)]
    assert [s.id for s in outbox.subscriptions()] == ["s2"]


def test_pending_survives_reopen(outbox_path: Path) -> None:
    ob = Outbox(outbox_path)
    try:
        ob.add_subscription(sub("s1"))
        ob.enqueue([(f"n{i}", "s1", str(i).encode()) for i in range(5)])
        ob.delivered("n0")
        ob.failed("n1", "refused")
    finally:
        ob.close()
    ob = Outbox(outbox_path)
    try:
        assert [p[0] for p in ob.pending("s1")] == ["n1", "n2", "n3", "n4"]
        assert ob.pending("s1")[0][2] == 1
    finally:
        ob.close()


def test_prune_forgets_old_delivered_but_keeps_totals(outbox_path: Path) -> None:
    clock = ManualClock()
    ob = Outbox(outbox_path, clock=clock)
    try:
        ob.add_subscription(sub("s1"))
        ob.enqueue([("n1", "s1", b"1"), ("n2", "s1", b"2"), ("n3", "s1", b"3")])
        ob.delivered("n1")
        clock.advance(100)
        ob.delivered("n2")
        assert ob.prune_delivered(clock.wall() - 50) == 1  # n1 only; n3 is pending
        assert ob.counts()["s1"].delivered_total == 2
        assert [p[0] for p in ob.pending("s1")] == ["n3"]
    finally:
        ob.close()


def test_schema_is_idempotent(outbox_path: Path) -> None:
    Outbox(outbox_path).close()
    migrate(outbox_path, "notifications")  # again: no error
    db = sqlite3.connect(str(outbox_path))
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"subscriptions", "outbox"} <= tables
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
