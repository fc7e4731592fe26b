"""The cluster stores under server failures, for real: an etcd member killed (the raft
leader), quorum lost, every member down, PostgreSQL crashed and restarted.

Rules checked: an answer while a quorum is up; ``StoreUnavailable`` (never a wrong
answer, never a hang past the deadline) while it is not; nothing acknowledged is
lost; the same store objects work again once the servers are back.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from cluster_store_testutil import (
    NOW,
    AnswerDropper,
    HistoryBackend,
    Servers,
    event,
    eventually,
    record,
)

from nfvha.amf.model import AssignmentRecord
from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd import EtcdAssignmentStore, EtcdLeaderLease
from nfvha.store.etcd_client import EtcdClient, OutcomeUnknown
from nfvha.store.health import etcd_health
from nfvha.testbed.etcd import EtcdCluster
from nfvha.testbed.postgres import PostgresServer

OP_TIMEOUT_S = 1.0
# Time for etcd to notice its leader is gone and elect another (election timeout 0.5 s),
# with margin for a loaded 2-core machine.
ELECTION_S = 5.0


def stores(cluster: Servers) -> tuple[EtcdAssignmentStore, EtcdLeaderLease]:
    prefix = cluster.etcd_prefix()
    client = cluster.etcd_client(op_timeout_s=OP_TIMEOUT_S)
    return (EtcdAssignmentStore(client, prefix=prefix),
            EtcdLeaderLease(client, "ctl", "ctl-a", 2.0, prefix=prefix))


def cas_like_a_caller(store: EtcdAssignmentStore, si: str, rec: AssignmentRecord) -> bool:
    """What the VNFM does: StoreUnavailable means "decide again shortly"."""
    deadline = time.monotonic() + ELECTION_S
    while True:
        try:
            return store.compare_and_set(si, rec.epoch - 1, rec)
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.req("MW-3")
def test_killing_the_etcd_leader_member_loses_nothing(cluster: Servers) -> None:
    etcd = cluster.etcd
    store, lease = stores(cluster)
    assert etcd_health(store.client).state == "in-sync"
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    assert lease.acquire()
    leader = etcd.leader_index()
    assert leader is not None
    etcd.kill_member(leader)
    # the next writes are answered by the two left, after their election
    took = time.monotonic()
    assert cas_like_a_caller(store, "gw", record("gw", 2, active=["b"]))
    assert time.monotonic() - took < ELECTION_S
    assert store.checkpoint_write("gw", "sessions", {"n": 2}) == 1
    assert store.get("gw") == record("gw", 2, active=["b"])
    eventually(lease.renew, ELECTION_S, "the leader lease renews on the surviving members",
               tolerate=(StoreUnavailable,))
    assert lease.is_leader()
    health = etcd_health(store.client)
    assert health.state == "degraded"
    assert etcd.members[leader].name in health.reason
    # back: it catches up with what was written without it
    etcd.start_member(leader)
    alone = EtcdAssignmentStore(cluster.etcd_client([etcd.members[leader].client_url]),
                                prefix=store._records.removesuffix("amf/assignments/"))
    eventually(lambda: alone.get("gw") == record("gw", 2, active=["b"]), ELECTION_S,
               "the restarted member has the record written while it was down",
               tolerate=(StoreUnavailable,))
    eventually(lambda: etcd_health(store.client).state == "in-sync", ELECTION_S,
               "the cluster is in sync again")


def test_without_a_quorum_etcd_is_unavailable_not_wrong(cluster: Servers) -> None:
    etcd = cluster.etcd
    store, lease = stores(cluster)
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    assert lease.acquire()
    etcd.stop_member(1)
    etcd.stop_member(2)
    for call in (lambda: store.compare_and_set("gw", 1, record("gw", 2, active=["b"])),
                 lambda: store.get("gw"), lease.renew):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - start < OP_TIMEOUT_S + 1.5  # bounded, not a hang
    assert etcd_health(store.client).state == "unavailable"
    # the term ends on its own clock: nothing renewed it
    eventually(lambda: not lease.is_leader(), lease.ttl_s + 1, "the leader term runs out")
    etcd.start_member(1, wait=False)
    etcd.start_member(2, wait=False)
    etcd.wait_healthy()
    # StoreUnavailable is "no answer", not "not written": a write the minority had taken
    # in may commit once the quorum is back. Either it did, whole, or it is not there.
    now = store.get("gw")
    assert now in (record("gw", 1, active=["a"]), record("gw", 2, active=["b"]))
    assert now is not None
    assert store.compare_and_set("gw", now.epoch, record("gw", now.epoch + 1, active=["c"]))


def test_every_etcd_member_down_is_unavailable_within_the_deadline(cluster: Servers) -> None:
    store, lease = stores(cluster)
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    for i in range(len(cluster.etcd.members)):
        cluster.etcd.stop_member(i)
    for call in (lambda: store.get("gw"), lease.acquire,
                 lambda: store.checkpoint_write("gw", "k", 1)):
        start = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - start < OP_TIMEOUT_S + 0.5
    health = etcd_health(store.client)
    assert health.state == "unavailable" and not any(m.reachable for m in health.members)


async def test_a_watch_moves_to_another_member_without_a_gap(cluster: Servers) -> None:
    etcd = cluster.etcd
    prefix = cluster.etcd_prefix()
    writer = EtcdAssignmentStore(cluster.etcd_client(op_timeout_s=OP_TIMEOUT_S), prefix=prefix)
    victim = etcd.leader_index()  # the watch's member, and the raft leader too
    assert victim is not None
    endpoints = [etcd.members[victim].client_url] + [
        m.client_url for i, m in enumerate(etcd.members) if i != victim]
    watcher = EtcdAssignmentStore(EtcdClient(endpoints, watch_reconnect_timeout_s=ELECTION_S),
                                  prefix=prefix)
    cluster.opened.append(watcher.client)
    _, revision = watcher.snapshot()
    seen: list[AssignmentRecord] = []
    total = 20

    async def follow() -> None:
        async for r in watcher.watch(revision):
            seen.append(r)
            if len(seen) == total:
                return

    task = asyncio.create_task(follow())
    for epoch in range(1, total + 1):
        if epoch == total // 2:
            await asyncio.to_thread(etcd.kill_member, victim)
        rec = record("gw", epoch, active=[f"a{epoch}"])
        assert await asyncio.to_thread(cas_like_a_caller, writer, "gw", rec)
    await asyncio.wait_for(task, ELECTION_S * 2)
    assert [r.epoch for r in seen] == list(range(1, total + 1))


def test_a_committed_write_whose_answer_is_lost(cluster: Servers) -> None:
    etcd = cluster.etcd
    dropper = AnswerDropper(etcd.members[0].client_port)
    cluster.opened.append(dropper)
    prefix = cluster.etcd_prefix()
    # a plain write: committed, but the client cannot know, so it must not say either way
    blind = cluster.etcd_client([dropper.url], op_timeout_s=OP_TIMEOUT_S)
    with pytest.raises(OutcomeUnknown):
        blind.put(f"{prefix}x".encode(), b"1")
    assert cluster.etcd_client().get(f"{prefix}x".encode()) is not None
    # compare-and-set finds out: sent again elsewhere, its condition fails, the key is ours
    store = EtcdAssignmentStore(
        cluster.etcd_client([dropper.url, *etcd.endpoints[1:]], op_timeout_s=OP_TIMEOUT_S),
        prefix=prefix)
    forwarded = dropper.forwarded
    assert store.compare_and_set("gw", 0, record("gw", 1, active=["a"]))
    assert dropper.forwarded == forwarded + 1  # the first try went through the dropper
    assert store.get("gw") == record("gw", 1, active=["a"])
    # and a lost race stays lost when the retry finds someone else's record
    rival = EtcdAssignmentStore(cluster.etcd_client(), prefix=prefix)
    assert rival.compare_and_set("gw", 1, record("gw", 2, active=["b"]))
    assert not store.compare_and_set("gw", 1, record("gw", 2, active=["a"]))


def test_postgres_crash_loses_no_acknowledged_event(pg_only: HistoryBackend,
                                                     pg_server: PostgresServer) -> None:
    store = pg_only.events()
    alarms = pg_only.alarms()
    acked: list[int] = []
    refused = 0
    stop = threading.Event()

    def agent() -> None:
        """Sends seq 1, 2, ... and re-sends a seq until it is acknowledged (the spool)."""
        nonlocal refused
        seq = 1
        while not stop.is_set():
            try:
                store.append([event("h1", seq)], NOW, seq)
                alarms.put([], processed_event_id=seq)
            except StoreUnavailable:
                refused += 1
                time.sleep(0.01)
                continue
            acked.append(seq)
            seq += 1

    sender = threading.Thread(target=agent)
    sender.start()
    try:
        eventually(lambda: len(acked) >= 100, 30, "events acknowledged before the crash")
        pg_server.crash()  # while the agent keeps sending
        eventually(lambda: refused > 0, 10, "the agent saw the database go")
        pg_server.start()
        after = len(acked)
        eventually(lambda: len(acked) >= after + 100, 30, "events acknowledged after it")
    finally:
        stop.set()
        sender.join(30)
    assert acked == list(range(1, len(acked) + 1))
    stored = [e.seq for e in store.events(host="h1", limit=100_000)]
    assert stored == acked  # each once, none lost, in order
    assert alarms.processed_event_id() == acked[-1] == store.last_seq("h1")


def test_postgres_down_is_unavailable_then_the_same_store_works(
        pg_only: HistoryBackend, pg_server: PostgresServer) -> None:
    store = pg_only.events()
    store.append([event("h1", 1)], NOW, 1)
    pg_server.stop()
    start = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.append([event("h1", 2)], NOW, 2)
    with pytest.raises(StoreUnavailable):
        store.events()
    assert time.monotonic() - start < 5.0
    pg_server.start()
    assert [e.seq for e in store.append([event("h1", 2)], NOW, 2)] == [2]
    assert [e.seq for e in store.events()] == [1, 2]


def test_member_status_names_the_leader(etcd_cluster: EtcdCluster, cluster: Servers) -> None:
    health = etcd_health(cluster.etcd_client())
    assert health.state == "in-sync"
    leader = etcd_cluster.leader_index()
    assert leader is not None and health.leader == etcd_cluster.members[leader].name
    assert sorted(m.name for m in health.members) == [m.name for m in etcd_cluster.members]
    assert all(m.reachable and m.has_leader for m in health.members)
