"""The leader lease's contract, in process and on etcd: one holder at a time, False for a
lost race, terms that end before the store's expiry, epochs that only rise."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from cluster_store_testutil import LeaseBackend, Servers, eventually, unique

from nfvha.store.etcd import EtcdLeaderLease
from nfvha.store.leader import LeaderTerm, check_lease_timing, whole_seconds

TTL_S = 1.0  # etcd's minimum with the test bed's 500 ms election timeout

def test_first_acquirer_wins_the_others_get_false(leases: LeaseBackend) -> None:
    a, b = leases.lease("ctl-a", TTL_S), leases.lease("ctl-b", TTL_S)
    assert a.leader() is None and a.term is None and not a.is_leader()
    assert a.acquire()
    assert a.is_leader() and a.term is not None and a.term.holder == "ctl-a"
    assert not b.acquire()
    assert b.term is None and not b.is_leader() and b.valid_until_ns == 0
    assert b.leader() == a.term == a.leader()
    assert a.acquire()  # holding it already: a renewal, same term
    assert a.leader() == a.term
    assert not b.renew()  # never held it


def test_term_ends_before_the_store_can_expire_it(leases: LeaseBackend) -> None:
    a = leases.lease("ctl-a", TTL_S)
    ttl_ns = int(a.ttl_s * 1e9)
    before = leases.clock.mono_ns()
    assert a.acquire()
    after = leases.clock.mono_ns()
    # counted from the request's send: no later than the store's own count
    assert before + ttl_ns <= a.valid_until_ns <= after + ttl_ns
    first = a.valid_until_ns
    before = leases.clock.mono_ns()
    assert a.renew()
    assert before + ttl_ns <= a.valid_until_ns <= leases.clock.mono_ns() + ttl_ns
    assert a.valid_until_ns >= first


def test_release_hands_over_with_a_higher_epoch(leases: LeaseBackend) -> None:
    a, b = leases.lease("ctl-a", TTL_S), leases.lease("ctl-b", TTL_S)
    assert a.acquire()
    first = a.term
    assert first is not None
    a.release()
    assert a.term is None and not a.is_leader()
    assert b.acquire()
    assert b.term is not None and b.term.epoch > first.epoch
    assert not a.renew()
    assert not a.acquire()
    assert a.leader() == b.term


def test_an_unrenewed_lease_expires_and_another_takes_over(leases: LeaseBackend) -> None:
    a, b = leases.lease("ctl-a", TTL_S), leases.lease("ctl-b", TTL_S)
    granted = time.monotonic()
    assert a.acquire()
    old = a.term
    assert old is not None
    assert not b.acquire()
    leases.let_expire(a.ttl_s)
    eventually(b.acquire, a.ttl_s + 3.0, "b takes over once a's lease expired")
    if leases.backend == "etcd":
        # never before the TTL the store granted (its lessor checks every 0.5 s)
        assert time.monotonic() - granted >= a.ttl_s - 0.05
    assert b.term is not None and b.term.epoch > old.epoch
    assert not a.is_leader()
    assert not a.renew()  # lost: an answer, not an error
    assert a.term is None
    assert b.leader() == b.term


def test_renewing_keeps_the_lease_past_its_ttl(leases: LeaseBackend) -> None:
    a, b = leases.lease("ctl-a", TTL_S), leases.lease("ctl-b", TTL_S)
    assert a.acquire()
    term = a.term
    start = leases.clock.mono_ns()
    while leases.clock.mono_ns() - start < 2.5 * a.ttl_s * 1e9:
        assert a.renew()
        assert not b.acquire()
        if leases.backend == "local":
            leases.let_expire(a.ttl_s / 2)
        else:
            time.sleep(a.ttl_s / 4)  # the renew period under test
    assert a.term == term and a.leader() == term


def test_check_lease_timing() -> None:
    check_lease_timing(ttl_s=1.0, renew_interval_s=0.3, retry_timeout_s=0.3)
    with pytest.raises(ValueError, match="below the TTL"):
        check_lease_timing(ttl_s=1.0, renew_interval_s=0.5, retry_timeout_s=0.25)
    with pytest.raises(ValueError):
        check_lease_timing(ttl_s=1.0, renew_interval_s=0, retry_timeout_s=0.1)
    assert [whole_seconds(t) for t in (0.2, 1.0, 1.01, 3)] == [1, 1, 2, 3]


def test_etcd_contested_acquire_has_one_winner(cluster: Servers) -> None:
    name, prefix = unique("leader"), cluster.etcd_prefix()
    lessees = [EtcdLeaderLease(cluster.etcd_client(), name, f"ctl-{i}", TTL_S, prefix=prefix)
               for i in range(5)]
    start = threading.Barrier(len(lessees))
    won: list[bool | None] = [None] * len(lessees)

    def campaign(i: int) -> None:
        start.wait()
        won[i] = lessees[i].acquire()

    threads = [threading.Thread(target=campaign, args=(i,)) for i in range(len(lessees))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert won.count(True) == 1 and won.count(False) == len(lessees) - 1
    winner = lessees[won.index(True)]
    assert lessees[0].leader() == winner.term
    winner.release()


async def test_etcd_watch_tells_followers_when_to_campaign(cluster: Servers) -> None:
    name, prefix = unique("leader"), cluster.etcd_prefix()
    a = EtcdLeaderLease(cluster.etcd_client(), name, "ctl-a", TTL_S, prefix=prefix)
    b = EtcdLeaderLease(cluster.etcd_client(), name, "ctl-b", TTL_S, prefix=prefix)
    seen: list[LeaderTerm | None] = []
    changed = asyncio.Event()

    async def follow() -> None:
        async for term in b.watch():
            seen.append(term)
            changed.set()

    task = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(changed.wait(), 5)
        assert seen == [None]  # first what is now: nobody
        changed.clear()
        assert await asyncio.to_thread(a.acquire)
        await asyncio.wait_for(changed.wait(), 5)
        assert seen[-1] == a.term
        changed.clear()
        await asyncio.to_thread(a.release)
        await asyncio.wait_for(changed.wait(), 5)
        assert seen[-1] is None
        assert await asyncio.to_thread(b.acquire)
    finally:
        task.cancel()
