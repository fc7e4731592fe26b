"""Helpers of the controller-cluster tests: the small topology and waiting on a
condition (the cuttable etcd paths and a member's state come from the test bed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from nfvha.bench.chaos import CHAOS
from nfvha.model.topology import Topology, parse_topology
from nfvha.testbed.cluster import ClusterTestbed
from nfvha.testbed.etcdpaths import EtcdPaths

# The benchmarks' topology (controller-failover, cluster-chaos): the tests prove what
# the benchmarks measure.
TOPOLOGY: dict[str, Any] = {**CHAOS, "name": "cluster-ha"}


def topology() -> Topology:
    return parse_topology(TOPOLOGY, "tests/cluster_ha")


async def wait_until(cond: Callable[[], Any], timeout_s: float, what: str,
                     interval_s: float = 0.02) -> Any:
    """Poll ``cond`` (run in a thread: it may do blocking I/O) until it returns
    something true; AssertionError after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        got = await asyncio.to_thread(cond)
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(interval_s)


class Cluster:
    def __init__(self, tb: ClusterTestbed, paths: EtcdPaths) -> None:
        self.tb = tb
        self.paths = paths

    @property
    def fronts(self) -> dict[str, str]:
        return {m.name: m.front_url for m in self.tb.members}
