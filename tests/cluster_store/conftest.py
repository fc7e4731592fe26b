"""Real servers for the cluster-store tests, and one store factory per backend.

One 3-member etcd cluster and one PostgreSQL server per test session, in
``/tmp/nfvha-<run>-cluster-store-*``, stopped by pid at the end. Tests share them
but not their data: each test has its own etcd key prefix and its own PostgreSQL
schema. A test that stops a server has it started again before the next test.

The contract tests are parametrized over the embedded implementation and the
cluster one, so both answer to the same behaviour. Cluster backends need
``etcd`` and PostgreSQL (``scripts/bootstrap`` installs them): without them
those tests are skipped, and under CI (``CI`` set) they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_store_testutil import (
    AssignmentBackend,
    HistoryBackend,
    LeaseBackend,
    Servers,
    SqlitePaths,
    unique,
)

from nfvha.faults.outbox import Outbox
from nfvha.faults.outbox_pg import PgOutbox
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.store.etcd import EtcdAssignmentStore, EtcdLeaderLease
from nfvha.store.leader import LocalLeaderLease, LocalLeaseBoard
from nfvha.store.pg_stores import PgAlarmStore, PgEventStore, PgTokenStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.store.tokens import SqliteTokenStore
from nfvha.testbed.etcd import EtcdCluster, etcd_binary
from nfvha.testbed.postgres import PostgresServer, postgres_bin_dir
from nfvha.testbed.services import ServiceError
from nfvha.util.clock import ManualClock
from nfvha.util.runpaths import new_run_id, run_root


def _require_servers() -> None:
    try:
        etcd_binary()
        postgres_bin_dir()
    except ServiceError as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    _require_servers()
    run = new_run_id()
    root = Path(tempfile.mkdtemp(prefix=f"nfvha-{run}-cluster-store-", dir=run_root()))
    etcd = EtcdCluster(root / "etcd", token=f"nfvha-{run}")
    pg = PostgresServer(root / "pg")
    try:
        etcd.start()
        pg.start()
        yield Servers(etcd, pg)
    finally:
        etcd.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(servers: Servers) -> Iterator[Servers]:
    try:
        yield servers
    finally:
        servers.close_opened()
        stopped = [i for i in range(len(servers.etcd.members)) if not servers.etcd.running(i)]
        for i in stopped:
            servers.etcd.start_member(i, wait=False)
        if stopped:
            servers.etcd.wait_healthy()
        if not servers.pg.running():
            servers.pg.start()


@pytest.fixture
def sqlite_paths() -> Iterator[SqlitePaths]:
    root = Path(tempfile.mkdtemp(prefix="nfvha-test-cluster-store-"))
    try:
        yield SqlitePaths(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "etcd"])
def assignments(request: pytest.FixtureRequest,
                sqlite_paths: SqlitePaths) -> Iterator[AssignmentBackend]:
    if request.param == "sqlite":
        backend = AssignmentBackend("sqlite", lambda: SqliteAssignmentStore(sqlite_paths.amf_db))
    else:
        cluster: Servers = request.getfixturevalue("cluster")
        prefix = cluster.etcd_prefix()
        backend = AssignmentBackend("etcd", lambda: EtcdAssignmentStore.connect(
            cluster.etcd.endpoints, prefix=prefix))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(params=["local", "etcd"])
def leases(request: pytest.FixtureRequest) -> Iterator[LeaseBackend]:
    name = unique("leader")
    if request.param == "local":
        board, clock = LocalLeaseBoard(), ManualClock()
        backend = LeaseBackend("local", lambda h, t: LocalLeaderLease(board, name, h, t, clock),
                               clock=clock, manual=clock)
    else:
        cluster: Servers = request.getfixturevalue("cluster")
        prefix = cluster.etcd_prefix()
        backend = LeaseBackend("etcd", lambda h, t: EtcdLeaderLease(
            cluster.etcd_client(), name, h, t, prefix=prefix))
    try:
        yield backend
    finally:
        backend.close()


def pg_history(cluster: Servers) -> HistoryBackend:
    schema = unique("t")
    return HistoryBackend(
        "postgres",
        # As a controller has it: appends (the event bus's writer thread) on a
        # connection of their own.
        events=lambda: PgEventStore(cluster.pg_db(schema), append_db=cluster.pg_db(schema)),
        alarms=lambda: PgAlarmStore(cluster.pg_db(schema)),
        outbox=lambda clock: PgOutbox(cluster.pg_db(schema), clock=clock),
        tokens=lambda: PgTokenStore(cluster.pg_db(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def history(request: pytest.FixtureRequest,
            sqlite_paths: SqlitePaths) -> Iterator[HistoryBackend]:
    if request.param == "sqlite":
        backend = HistoryBackend(
            "sqlite",
            events=lambda: SqliteEventStore(sqlite_paths.events_db),
            alarms=lambda: SqliteAlarmStore(sqlite_paths.events_db),
            outbox=lambda clock: Outbox(sqlite_paths.notifications_db, clock=clock),
            tokens=lambda: SqliteTokenStore(sqlite_paths.tokens_db))
    else:
        backend = pg_history(request.getfixturevalue("cluster"))
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def pg_only(cluster: Servers) -> Iterator[HistoryBackend]:
    backend = pg_history(cluster)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def etcd_cluster(cluster: Servers) -> EtcdCluster:
    return cluster.etcd


@pytest.fixture
def pg_server(cluster: Servers) -> PostgresServer:
    return cluster.pg
