"""The history stores' contracts on SQLite and on PostgreSQL: events, alarms, the
notification outbox, API tokens (VNFHA-12: any replica serves what another stored)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from cluster_store_testutil import NOW, HistoryBackend, event

from nfvha.controller.bus import EventBus
from nfvha.faults.model import FmNotificationsFilter, NotificationType
from nfvha.faults.outbox import StoredSubscription
from nfvha.model.auth import TokenEntry, token_hash
from nfvha.model.events import Kind
from nfvha.store.alarms import AlarmRow
from nfvha.store.pg_stores import EVENTS_APPEND_LOCK, PgEventStore
from nfvha.util.clock import ManualClock


def alarm(aid: str, key: str, *, active: bool = True, severity: str = "MAJOR",
          changed: float = NOW) -> AlarmRow:
    return AlarmRow(id=aid, key=key, entity="vm/v1", host="h1", severity=severity,
                    active=active, raised_time=NOW, changed_time=changed,
                    body=f'{{"id":"{aid}"}}')


def sub(sid: str) -> StoredSubscription:
    flt = FmNotificationsFilter(notificationTypes=[NotificationType.ALARM],
                                resourceIds=["host/h1"])
    return StoredSubscription(sid, f"http://127.0.0.1:9/{sid}", flt, "0123456789abcdef", NOW)


# -- events ---------------------------------------------------------------------------


def test_events_are_stored_once_in_order(history: HistoryBackend) -> None:
    store = history.events()
    assert store.max_id() == 0 and store.last_seq("h1") == 0
    first = store.append([event("h1", 1), event("h1", 2), event("h2", 7)], NOW, 5)
    assert [(e.host, e.seq) for e in first] == [("h1", 1), ("h1", 2), ("h2", 7)]
    assert [e.id for e in first] == sorted(e.id for e in first)
    assert first[0].received_time == NOW and first[0].received_mono_ns == 5
    # a re-sent arrival (agent reconnect) stores only what is new; seq 0 is never a duplicate
    groups = store.append_groups([
        ([event("h1", 2), event("h1", 3)], NOW + 1, 6),
        ([event("ctl", 0, Kind.HOST_CONDITION, "host/h1", up=False),
          event("ctl", 0, Kind.HOST_CONDITION, "host/h1", up=True)], NOW + 2, 7),
        ([], NOW + 3, 8),
    ])
    assert [[(e.host, e.seq) for e in g] for g in groups] == [
        [("h1", 3)], [("ctl", 0), ("ctl", 0)], []]
    assert store.last_seq("h1") == 3 and store.last_seq("h2") == 7
    everything = store.events()
    assert len(everything) == 6 and store.max_id() == everything[-1].id
    assert [e.id for e in everything] == sorted({e.id for e in everything})
    assert store.events(after=first[-1].id) == everything[3:]
    assert store.events(limit=2) == everything[:2]
    assert [e.seq for e in store.events(host="h1")] == [1, 2, 3]
    assert len(store.events(kind="host.condition", entity="host/h1")) == 2
    latest = store.latest("host.condition", "host/h1")
    assert latest is not None and latest.details == {"up": True}
    assert [c["up"] for c in store.host_conditions("ctl")] == [True, False]
    assert store.latest("vm.crashed", "vm/x") is None


def test_another_instance_sees_the_events(history: HistoryBackend) -> None:
    a = history.events()
    stored = a.append([event("h1", 1)], NOW, 1)
    a.close()
    b = history.events()
    assert b.events() == stored and b.last_seq("h1") == 1
    assert b.append([event("h1", 1)], NOW, 2) == []


async def test_the_event_bus_commits_to_either_store_in_order(history: HistoryBackend) -> None:
    """The bus commits in its writer thread while the loop reads the same store."""
    store = history.events()
    bus = EventBus(store, ManualClock(), max_batch_events=8)
    heard: list[int] = []
    bus.subscribe(lambda batch: heard.extend(e.id for e in batch))
    stored = await asyncio.wait_for(asyncio.gather(*(
        bus.publish([event(f"h{i % 3}", i // 3 + 1)]) for i in range(60))), 60)
    assert [[(e.host, e.seq) for e in s] for s in stored] == \
        [[(f"h{i % 3}", i // 3 + 1)] for i in range(60)]
    ids = [s[0].id for s in stored]
    assert ids == sorted(ids) == heard and bus.last_id == store.max_id() == ids[-1]
    assert [e.id for e in store.events()] == ids
    bus.close()


def test_postgres_reads_do_not_wait_for_an_append_under_way(pg_only: HistoryBackend) -> None:
    """Appends have their own connection: an open append transaction (the bus's writer
    waiting on PostgreSQL) does not hold the loop's reads."""
    store = pg_only.events()
    assert isinstance(store, PgEventStore) and store.append_db is not None
    store.append([event("h1", 1)], NOW, 1)
    read: list[int] = []
    with store.append_db.transaction() as cur:  # an append under way
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_APPEND_LOCK,))
        reader = threading.Thread(target=lambda: read.append(len(store.events())))
        reader.start()
        reader.join(10)
        assert read == [1], "the read waited for the append's transaction"


def test_postgres_appenders_commit_ids_in_order(pg_only: HistoryBackend) -> None:
    """Several controllers append at once; a reader paging by id must never skip one."""
    writers = [pg_only.events() for _ in range(3)]
    reader = pg_only.events()
    per_writer = 60
    seen: list[int] = []
    done = threading.Event()

    def write(w: int) -> None:
        for seq in range(1, per_writer + 1):
            writers[w].append([event(f"h{w}", seq)], NOW, seq)

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()  # read once more after the writers ended
            page = reader.events(after=last, limit=50)
            seen.extend(e.id for e in page)
            last = page[-1].id if page else last
            if finished and not page:
                return

    reading = threading.Thread(target=read)
    reading.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(len(writers))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    done.set()
    reading.join()
    assert len(seen) == len(set(seen)) == len(writers) * per_writer
    assert seen == sorted(seen)


# -- alarms ---------------------------------------------------------------------------


def test_alarms_round_trip_with_a_watermark_that_never_goes_back(
        history: HistoryBackend) -> None:
    store = history.alarms()
    assert store.all() == [] and store.processed_event_id() == 0
    store.put([alarm("a1", "k1"), alarm("a2", "k2")], processed_event_id=10)
    store.put([], processed_event_id=4)  # an older batch replayed: no step back
    assert store.processed_event_id() == 10
    # the successor of a cleared alarm takes its key in the same batch, cleared row first
    store.put([alarm("a1", "k1", active=False, changed=NOW + 5), alarm("a3", "k1")], 12)
    assert store.processed_event_id() == 12
    assert sorted(a.id for a in store.active()) == ["a2", "a3"]
    got = store.get("a1")
    assert got is not None and not got.active and got.changed_time == NOW + 5
    assert store.get("nope") is None
    assert {a.id for a in store.all()} == {"a1", "a2", "a3"}
    other = history.alarms()
    assert other.get("a3") == store.get("a3")


def test_ageing_deletes_old_cleared_alarms_and_events(history: HistoryBackend) -> None:
    events, alarms = history.events(), history.alarms()
    events.append([event("h1", 1)], NOW - 1000, 1)
    events.append([event("h1", 2)], NOW, 2)
    alarms.put([alarm("old", "k1", active=False, changed=NOW - 500),
                alarm("minor", "k2", active=False, severity="MINOR", changed=NOW - 500),
                alarm("new", "k3", active=False, changed=NOW - 10),
                alarm("live", "k4", changed=NOW - 10_000)])
    assert alarms.age(NOW, {"MAJOR": 100, "MINOR": 1000}, event_retention_s=500) == (1, 1)
    assert {a.id for a in alarms.all()} == {"minor", "new", "live"}
    assert [e.seq for e in events.events()] == [2]


# -- notification outbox ---------------------------------------------------------------


def test_outbox_keeps_subscriptions_and_ordered_idempotent_queues(
        history: HistoryBackend) -> None:
    ob = history.outbox()
    ob.add_subscription(sub("s1"))
    ob.add_subscription(StoredSubscription("s2", "https://x.test/cb", None, None, NOW + 1))
    assert [s.id for s in ob.subscriptions()] == ["s1", "s2"]
    assert ob.subscription("s1") == sub("s1")
    assert ob.subscription("nope") is None
    ob.enqueue([("n1", "s1", b"1"), ("n2", "s2", b"2"), ("n3", "s1", b"3")])
    ob.enqueue([("n3", "s1", b"other"), ("n4", "s1", b"4")])  # n3 again: ignored
    ob.enqueue([("n5", "gone", b"5")])  # no such subscription: dropped
    assert ob.pending("s1") == [("n1", b"1", 0), ("n3", b"3", 0), ("n4", b"4", 0)]
    assert ob.pending("s1", limit=2) == [("n1", b"1", 0), ("n3", b"3", 0)]
    assert ob.pending("s2") == [("n2", b"2", 0)]
    again = history.outbox()  # another replica, or the restarted controller
    assert [p[0] for p in again.pending("s1")] == ["n1", "n3", "n4"]
    assert again.delete_subscription("s2") is True
    assert again.delete_subscription("s2") is False
    assert ob.pending("s2") == [] and [s.id for s in ob.subscriptions()] == ["s1"]


def test_outbox_delivery_state_counts_and_pruning(history: HistoryBackend) -> None:
    clock = ManualClock()
    ob = history.outbox(clock)
    ob.add_subscription(sub("s1"))
    ob.enqueue([("n1", "s1", b"1"), ("n2", "s1", b"2"), ("n3", "s1", b"3")])
    ob.failed("n1", "HTTP 503")
    ob.failed("n1", "timeout")
    assert ob.pending("s1")[0] == ("n1", b"1", 2)
    ob.delivered("n1")
    ob.delivered_many(["n1", "n2"])  # n1 again changes nothing
    c = ob.counts()["s1"]
    assert (c.pending, c.delivered_total) == (1, 2)
    clock.advance(100)
    ob.delivered("n3")
    assert ob.prune_delivered(clock.wall() - 50) == 2
    c = ob.counts()["s1"]
    assert (c.pending, c.delivered_total) == (0, 3)


# -- tokens ---------------------------------------------------------------------------


@pytest.mark.req("VNFHA-12")
def test_tokens_put_get_delete(history: HistoryBackend) -> None:
    store = history.tokens()
    reader = TokenEntry(sha256=token_hash("r"), role="reader", name="ops")
    admin = TokenEntry(sha256=token_hash("a"), role="admin")
    assert store.put(reader) and store.put(admin)
    assert not store.put(reader.model_copy(update={"role": "admin"}))  # kept as it was
    assert store.get(reader.sha256) == reader
    assert store.all() == sorted([reader, admin], key=lambda t: t.sha256)
    assert store.delete(admin.sha256) and not store.delete(admin.sha256)
    assert store.get(admin.sha256) is None


@pytest.mark.req("VNFHA-12")
def test_tokens_are_kept_when_the_store_is_opened_again(history: HistoryBackend) -> None:
    first = history.tokens()
    entry = TokenEntry(sha256=token_hash("kept"), role="admin", name="made through the API")
    assert first.put(entry)
    first.close()  # a controller's restart
    again = history.tokens()
    assert again.get(entry.sha256) == entry and again.all() == [entry]


@pytest.mark.req("VNFHA-12")
def test_postgres_token_from_one_replica_is_served_by_another(pg_only: HistoryBackend) -> None:
    replica_a, replica_b = pg_only.tokens(), pg_only.tokens()
    entry = TokenEntry(sha256=token_hash("secret"), role="operator", name="nfvo")
    assert replica_a.put(entry)
    assert replica_b.get(token_hash("secret")) == entry
    assert replica_b.delete(entry.sha256)
    assert replica_a.get(entry.sha256) is None
