"""A controller cluster for the real-process tests: 3 controllers on a 3-member etcd
cluster and PostgreSQL, in front of a 2-host test bed; each controller reaches etcd
through its own cuttable proxies. One per module (it takes ~10 s to start); torn
down at the end, and the tests that kill a controller start it again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_ha_testutil import Cluster, topology

from nfvha.testbed.cluster import ClusterTestbed
from nfvha.testbed.deploy import namespaces_available
from nfvha.testbed.etcd import etcd_binary
from nfvha.testbed.etcdpaths import EtcdPaths
from nfvha.testbed.postgres import postgres_bin_dir
from nfvha.testbed.services import ServiceError


def _require() -> None:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    try:
        etcd_binary()
        postgres_bin_dir()
    except ServiceError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    _require()
    tb = ClusterTestbed(topology(), size=3)
    paths = EtcdPaths(tb.etcd.endpoints)
    tb.etcd_endpoints_of = paths.endpoints_for
    try:
        asyncio.run(tb.start())
        yield Cluster(tb, paths)
    finally:
        _keep_logs(tb, tmp_path_factory.mktemp("cluster-logs"))
        tb.down()
        paths.close()


def _keep_logs(tb: ClusterTestbed, into: Path) -> None:
    """The members' and agents' logs outlive the run's directory (for a failure)."""
    for log in [*tb.run.controller_dir.glob("*.log"), *tb.run.root.glob("hosts/*/*.log")]:
        with contextlib.suppress(OSError):
            shutil.copy(log, into / f"{log.parent.name}-{log.name}")
