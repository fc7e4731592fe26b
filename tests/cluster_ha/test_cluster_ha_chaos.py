"""Randomized control-plane faults - the leader killed or cut off from etcd, an etcd
member killed, PostgreSQL restarted - during an alarm storm, each with the VNF's
active killed in the failover window: nothing acknowledged lost, every subscriber
notified of every alarm, one recovery per failure, never two actives, never two
terms acting at once. One round of each fault here; ``nfvha bench cluster-chaos``
runs a hundred (docs/benchmarks.md)."""

from __future__ import annotations

import pytest
from cluster_ha_testutil import Cluster

from nfvha.bench.chaos import FAULT_KINDS, Invariants, run_chaos

pytestmark = pytest.mark.testbed

VIM3_LIMIT_S = 5.0


@pytest.mark.req("VIM-1")
@pytest.mark.req("VIM-3")
@pytest.mark.req("VNFHA-10")
@pytest.mark.req("FM-7")
async def test_control_plane_faults_during_an_alarm_storm_lose_nothing(
        cluster: Cluster) -> None:
    lines: list[str] = []
    result = await run_chaos(cluster.tb.topology, len(FAULT_KINDS), seed=7, vnf="gw",
                             log=lines.append, tb=cluster.tb, paths=cluster.paths)
    print("\n" + "\n".join(lines))
    assert result["faults"] == len(FAULT_KINDS)
    assert {k: v["faults"] for k, v in result["by_kind"].items()} == dict.fromkeys(
        FAULT_KINDS, 1)
    assert {k: result[k] for k in Invariants().counts()} == Invariants().counts(), \
        result["problems"]
    # the storm and the operator really ran through the faults
    assert result["storm_sensor_changes"] > 50
    assert result["alarms_acknowledged"] >= 1, result["ack_answers"]
    # every failure recovered within the VNF's SAL; a new leader within VIM-3's limit
    assert result["sal_met"]
    for kind in ("leader-kill", "leader-partition"):
        assert result["by_kind"][kind]["failover_p99_ms"] < VIM3_LIMIT_S * 1000, result
