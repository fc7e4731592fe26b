"""Three real controllers on real etcd and PostgreSQL in front of a real test bed:
one leads, every one answers; the leader killed, another decides within the
target; the leader cut off from etcd stops deciding and never acts again without a
new election (ADR 0013)."""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from typing import Any

import httpx
import pytest
from cluster_ha_testutil import Cluster, wait_until

from nfvha.amf.model import AssignmentRecord
from nfvha.store.etcd import EtcdAssignmentStore
from nfvha.store.pg import PgDatabase
from nfvha.store.pg_stores import PgEventStore
from nfvha.testbed.apiclient import failover_client, member_state
from nfvha.testbed.faults import FaultInjector
from nfvha.util.files import read_json

pytestmark = pytest.mark.testbed

VIM3_LIMIT_S = 5.0  # the requirement; the goal (1.5 s p99) is reported, see ADR 0013
FAILOVER_GOAL_S = 1.5


def states(c: Cluster) -> dict[str, dict[str, Any] | None]:
    return {name: member_state(url) for name, url in c.fronts.items()}


def deciding(c: Cluster, *, epoch_above: int = 0) -> tuple[str, dict[str, Any]] | None:
    """The one member deciding (with an epoch above ``epoch_above``), if exactly one."""
    found = [(n, s) for n, s in states(c).items()
             if s is not None and s["deciding"] and s["epoch"] > epoch_above]
    return found[0] if len(found) == 1 else None


async def leader_now(c: Cluster, timeout_s: float = 15.0) -> tuple[str, dict[str, Any]]:
    got: tuple[str, dict[str, Any]] = await wait_until(
        lambda: deciding(c), timeout_s, "one deciding leader")
    return got


async def all_agents_connected(c: Cluster, timeout_s: float = 10.0) -> None:
    async with failover_client(c.tb.api_urls, headers=c.tb.headers, timeout=5.0) as api:
        async def ready() -> bool:
            try:
                r = await api.get("/v1/hosts")
            except httpx.HTTPError:
                return False
            return r.status_code == 200 and all(
                h["agent"]["connected"] and h["state"] == "up" for h in r.json())

        end = time.monotonic() + timeout_s
        while not await ready():
            assert time.monotonic() < end, "agents did not reconnect to the new leader"
            await asyncio.sleep(0.05)


async def restart(c: Cluster, name: str) -> None:
    await asyncio.to_thread(c.tb.start_member, name)
    await wait_until(lambda: (s := member_state(c.fronts[name])) is not None
                     and s["role"] == "follower" and s["leader"] is not None,
                     20.0, f"{name} back as a follower")


def etcd_state(c: Cluster) -> str:
    """etcd's health as the cluster reports it (MW-3)."""
    st = httpx.get(f"{c.tb.api_urls[0]}/v1/cluster", headers=c.tb.headers, timeout=2.0).json()
    state: str = st["etcd"]["state"]
    return state


def agents_at(c: Cluster, epoch: int) -> bool:
    return set(agent_epochs(c).values()) == {epoch}


def agent_epochs(c: Cluster) -> dict[str, int]:
    return {h: int(read_json(c.tb.run.host_dir(h) / "agent-state.json").get("leader_epoch", 0))
            for h in c.tb.topology.host_names()}


@pytest.mark.req("VIM-1")
@pytest.mark.req("VIM-4")
async def test_one_leader_decides_and_every_member_answers(cluster: Cluster) -> None:
    name, leader = await leader_now(cluster)
    others = [n for n in cluster.fronts if n != name]
    for n in others:
        s = member_state(cluster.fronts[n])
        assert s is not None and s["role"] == "follower" and not s["deciding"]
        assert s["leader"] == {"name": name, "epoch": leader["epoch"]}
    # All-active API: every member's front answers, the followers' through the leader.
    for n, url in cluster.fronts.items():
        async with httpx.AsyncClient(base_url=url, headers=cluster.tb.headers,
                                     timeout=5.0) as api:
            hosts = (await api.get("/v1/hosts")).json()
            assert {h["name"] for h in hosts} == {"h1", "h2"}, n
            assert all(h["agent"]["connected"] for h in hosts), n
            # Every part of the control plane is watched and queryable (VIM-4).
            end = time.monotonic() + 5.0
            while True:
                st = (await api.get("/v1/cluster")).json()
                if all(m["state"] == "up" for m in st["members"]):
                    break
                assert time.monotonic() < end, f"{n} does not see every member up: {st}"
                await asyncio.sleep(0.1)
            assert st["etcd"]["state"] == "in-sync" and len(st["etcd"]["members"]) == 3
            assert st["postgres"]["state"] == "up"
            assert {m["name"]: m["role"] for m in st["members"]} == {
                m: ("leader" if m == name else "follower") for m in cluster.fronts}
    # the cluster's state needs an API token; a member's own line does not
    async with httpx.AsyncClient(base_url=cluster.tb.api_urls[0], timeout=5.0) as anon:
        assert (await anon.get("/v1/cluster")).status_code == 401
        assert (await anon.get("/v1/cluster/self")).status_code == 200
        assert (await anon.get("/v1/hosts")).status_code == 401  # the leader's API says so
    # the agents took the leader's epoch
    assert set(agent_epochs(cluster).values()) == {leader["epoch"]}


@pytest.mark.req("VIM-2")
@pytest.mark.req("VIM-3")
async def test_leader_killed_another_decides_within_the_target(cluster: Cluster) -> None:
    took: list[float] = []
    for _ in range(2):
        name, old = await leader_now(cluster)
        killed_ns = time.monotonic_ns()
        cluster.tb.kill_member(name, signal.SIGKILL)
        new_name, new = await wait_until(
            functools.partial(deciding, cluster, epoch_above=old["epoch"]),
            VIM3_LIMIT_S + 5, "a new leader deciding")
        assert new_name != name
        term = new["terms"][-1]
        took.append((term["deciding_ns"] - killed_ns) / 1e9)
        # Agents and API clients found the new leader by themselves (VIM-2).
        await all_agents_connected(cluster)
        await wait_until(functools.partial(agents_at, cluster, new["epoch"]),
                         5.0, "agents at the new epoch")
        await restart(cluster, name)
    print(f"\nleader killed -> new leader deciding: {[round(t, 3) for t in took]} s"
          f" (goal {FAILOVER_GOAL_S} s p99, requirement {VIM3_LIMIT_S} s)")
    assert max(took) < VIM3_LIMIT_S


@pytest.mark.req("VIM-3")
@pytest.mark.req("VNFHA-10")
async def test_leader_cut_off_from_etcd_stops_and_never_acts_again(cluster: Cluster) -> None:
    name, old = await leader_now(cluster)
    cut_ns = time.monotonic_ns()
    cluster.paths.cut(name)
    try:
        # It stops deciding by itself, before its lease can expire in etcd...
        stopped = await wait_until(
            lambda: (s := member_state(cluster.fronts[name])) is not None
            and not s["deciding"] and s["terms"][-1]["ended_ns"] is not None and s,
            5.0, f"{name} to stop deciding")
        term = stopped["terms"][-1]
        assert term["epoch"] == old["epoch"] and term["end_reason"] == "not renewed in time"
        # its actions stopped within the TTL of its last renewal before the cut
        assert (term["stopped_ns"] - cut_ns) / 1e9 < 1.0
        # ...and only then does another member lead, under a higher epoch.
        new_name, new = await wait_until(
            lambda: deciding(cluster, epoch_above=old["epoch"]), VIM3_LIMIT_S + 5,
            "a new leader deciding")
        assert new_name != name
        assert new["terms"][-1]["elected_ns"] > term["stopped_ns"]
        print(f"\ncut off at 0: {name} stopped deciding at"
              f" {(term['stopped_ns'] - cut_ns) / 1e9:.3f} s (saw it at"
              f" {(term['ended_ns'] - cut_ns) / 1e9:.3f} s); {new_name} elected at"
              f" {(new['terms'][-1]['elected_ns'] - cut_ns) / 1e9:.3f} s, deciding at"
              f" {(new['terms'][-1]['deciding_ns'] - cut_ns) / 1e9:.3f} s")
        await all_agents_connected(cluster)
        # A failure now is recovered once, by the new leader (VNFHA-10): the cut-off
        # one holds no agent stream, no VNFM address, no term.
        active = await active_of(cluster, "gw")
        FaultInjector(cluster.tb.run, cluster.tb.topology).inject("vnfc-crash", active)
        await wait_recovered(cluster, "gw")
        assert set(agent_epochs(cluster).values()) == {new["epoch"]}
        s = member_state(cluster.fronts[name])
        assert s is not None and s["role"] == "follower"
        assert [t["epoch"] for t in s["terms"]] == [t["epoch"] for t in stopped["terms"]]
    finally:
        cluster.paths.heal(name)
    # Healed, it follows: the term it lost is not resumed.
    await wait_until(lambda: (s := member_state(cluster.fronts[name])) is not None
                     and s["leader"] is not None and s["leader"]["name"] == new_name,
                     5.0, f"{name} following {new_name}")
    await asyncio.sleep(1.0)  # a few renewal periods: it must not take its term back
    s = member_state(cluster.fronts[name])
    assert s is not None and s["role"] == "follower" and s["epoch"] == 0
    assert [t["epoch"] for t in s["terms"]] == [t["epoch"] for t in stopped["terms"]]


async def availability(c: Cluster, vnf: str) -> dict[str, Any]:
    async with failover_client(c.tb.api_urls, headers=c.tb.headers, timeout=5.0) as api:
        r = await api.get("/v1/availability")
        r.raise_for_status()
        body: dict[str, Any] = next(v for v in r.json() if v["vnf"] == vnf)
        return body


async def active_of(c: Cluster, vnf: str, timeout_s: float = 10.0) -> str:
    end = time.monotonic() + timeout_s
    while True:
        si = (await availability(c, vnf))["service_instances"][0]
        if len(si["active"]) == 1:
            active: str = si["active"][0]
            return active
        assert time.monotonic() < end, f"{vnf} has no active"
        await asyncio.sleep(0.05)


async def wait_recovered(c: Cluster, vnf: str, timeout_s: float = 15.0) -> None:
    """One active, and every SU back in service (the crashed one restarted)."""
    end = time.monotonic() + timeout_s
    while True:
        v = await availability(c, vnf)
        si = v["service_instances"][0]
        assert len(si["active"]) <= 1, f"two actives: {si}"
        if len(si["active"]) == 1 and all(
                u["readiness"] == "in-service" and u["connected"] for u in v["service_units"]):
            return
        assert time.monotonic() < end, f"{vnf} not recovered: {v}"
        await asyncio.sleep(0.05)


class RecordWatch:
    """Every assignment record written, seen from here through an etcd watch."""

    def __init__(self, c: Cluster) -> None:
        cfg = read_json(c.tb.member_config_path(c.tb.members[0].name))["store"]
        self.store = EtcdAssignmentStore.connect(c.tb.etcd.endpoints, prefix=cfg["etcd_prefix"])
        self.records: list[tuple[int, AssignmentRecord]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RecordWatch:
        _, rev = await asyncio.to_thread(self.store.snapshot)

        async def watch() -> None:
            async for rec in self.store.watch(rev):
                self.records.append((time.monotonic_ns(), rec))

        self.task = asyncio.create_task(watch())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        self.store.close()

    def double_active(self) -> list[AssignmentRecord]:
        return [r for _, r in self.records if len(r.active) > 1]


@pytest.mark.req("VIM-3")
@pytest.mark.req("VNFHA-10")
async def test_vnf_failure_during_a_leader_failover_is_recovered_once(cluster: Cluster) -> None:
    """The leader and the VNF's active killed together: another controller decides,
    the VNF gets one active again and its failed unit back, never two actives."""
    async with RecordWatch(cluster) as watch:
        await wait_recovered(cluster, "gw")
        active = await active_of(cluster, "gw")
        name, old = await leader_now(cluster)
        t0 = time.monotonic_ns()
        cluster.tb.kill_member(name, signal.SIGKILL)
        FaultInjector(cluster.tb.run, cluster.tb.topology).inject("vnfc-crash", active)
        _, new = await wait_until(
            functools.partial(deciding, cluster, epoch_above=old["epoch"]),
            VIM3_LIMIT_S + 5, "a new leader deciding")
        await wait_recovered(cluster, "gw", timeout_s=15.0)
        recovered_s = (time.monotonic_ns() - t0) / 1e9
        first = min((seen for seen, _ in watch.records if seen > t0), default=None)
        assert first is not None, "the new leader wrote no record for the failure"
        print(f"\nleader + active {active} killed: new leader deciding after"
              f" {(new['terms'][-1]['deciding_ns'] - t0) / 1e9:.3f} s, first record"
              f" {(first - t0) / 1e9:.3f} s, recovered by {recovered_s:.3f} s")
        assert watch.double_active() == []
    await restart(cluster, name)


@pytest.mark.req("VIM-1")
@pytest.mark.req("MW-3")
async def test_etcd_member_killed_the_cluster_keeps_deciding(cluster: Cluster) -> None:
    """The raft leader of etcd killed: one controller decides throughout (a new term or
    the same), etcd is reported degraded, and a VNF failure is still recovered."""
    await wait_recovered(cluster, "gw")
    etcd = cluster.tb.etcd
    raft_leader = await asyncio.to_thread(etcd.leader_index)
    assert raft_leader is not None
    before, _ = await leader_now(cluster)
    etcd.kill_member(raft_leader)
    try:
        await wait_until(lambda: etcd_state(cluster) == "degraded", 10.0,
                         "etcd reported degraded")
        # etcd elected another raft leader; a controller decides (the same, or - when
        # the election outlasted its term - another one)
        await wait_until(lambda: etcd.leader_index() not in (None, raft_leader), 10.0,
                         "a new etcd leader")
        after, _ = await leader_now(cluster)
        print(f"\netcd raft leader killed: controller leader {before} -> {after}")
        FaultInjector(cluster.tb.run, cluster.tb.topology).inject(
            "vnfc-crash", await active_of(cluster, "gw"))
        await wait_recovered(cluster, "gw", timeout_s=15.0)
    finally:
        await asyncio.to_thread(etcd.start_member, raft_leader)
    await wait_until(lambda: etcd_state(cluster) == "in-sync", 15.0, "etcd in sync again")
    await leader_now(cluster)


@pytest.mark.req("VIM-1")
async def test_postgresql_restarted_nothing_acknowledged_is_lost(cluster: Cluster) -> None:
    """PostgreSQL restarted under load of agent events: the leader keeps its term, the
    agents re-send what was not stored, and every event an agent saw acknowledged is
    stored exactly once."""
    await wait_recovered(cluster, "gw")
    name, old = await leader_now(cluster)
    faults = FaultInjector(cluster.tb.run, cluster.tb.topology)
    await asyncio.to_thread(cluster.tb.pg.stop)
    try:
        # events while the database is down: the agents keep them in their spools
        faults.inject("vnfc-crash", await active_of(cluster, "gw"))
        await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(cluster.tb.pg.start)
    await wait_recovered(cluster, "gw", timeout_s=20.0)
    await all_agents_connected(cluster)
    now = deciding(cluster)
    assert now is not None and (now[0], now[1]["epoch"]) == (name, old["epoch"])
    cfg = read_json(cluster.tb.member_config_path(name))["store"]
    store = PgEventStore(PgDatabase(cfg["pg_conninfo"], schema=cfg["pg_schema"]), owns_db=True)
    try:
        for host in cluster.tb.topology.host_names():
            acked = int((cluster.tb.run.host_dir(host) / "spool" / "spool.acked").read_text())
            seqs = [e.seq for e in store.events(host=host, limit=100_000) if e.seq > 0]
            assert len(seqs) == len(set(seqs)), f"{host}: an event stored twice"
            assert set(range(1, acked + 1)) <= set(seqs), f"{host}: acknowledged event lost"
    finally:
        store.close()
