"""``nfvha up --cluster N``: the test bed behind N controllers on etcd and PostgreSQL.

The same fabric, hosts, VMs and VNFCs as ``Testbed``; in front of them a 3-member
etcd cluster and a PostgreSQL server (loopback, data under the run directory) and N
controller processes, each with its own agent address (TCP event streams, UDP
heartbeats), its own API port (served while it leads) and its own front address
(always answered; ADR 0013). The generic VNFM's address is one for all: only the
leader listens on it, so it moves with the leadership as a VIP would.

Every process carries the run's marker and is listed in ``run.json``: ``nfvha down``
finds them even after a crash. A clean stop shuts PostgreSQL and etcd down first
(no stale shared memory, no half-written WAL).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfvha.agent.config import AgentConfig, ControllerAddress
from nfvha.controller.cluster_config import ClusterConfig, ControllerMember, StoreConfig
from nfvha.controller.config import ControllerConfig
from nfvha.model.topology import Topology
from nfvha.nfvi.cleanup import RUN_MARKER
from nfvha.testbed.deploy import CONTROLLER_PORT, Testbed, free_tcp_port
from nfvha.testbed.etcd import EtcdCluster
from nfvha.testbed.postgres import PostgresServer
from nfvha.testbed.services import ServiceProcess
from nfvha.util.files import atomic_write_json, read_json
from nfvha.util.procs import is_same_process, kill_pid, start_ticks

MEMBER_PORT_STEP = 10  # controller i's agent port on the fabric: 7700 + 10 i


def member_name(i: int) -> str:
    return f"c{i + 1}"


class ClusterTestbed(Testbed):
    __test__ = False

    def __init__(self, topology: Topology, *, size: int = 3, etcd_size: int = 3,
                 run_id: str | None = None, python: str | None = None) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one controller")
        super().__init__(topology, run_id=run_id, python=python)
        self.size = size
        self.cluster_root = self.run.root / "cluster"
        self.etcd = EtcdCluster(self.cluster_root / "etcd", size=etcd_size,
                                token=f"nfvha-{self.run.run_id}")
        self.pg = PostgresServer(self.cluster_root / "pg")
        self.members: list[ControllerMember] = []
        self.controller_pids: dict[str, tuple[int, int]] = {}
        self.api_urls: list[str] = []
        # Lease timing of the members (ADR 0013), and the etcd endpoints each member is
        # given (a test puts its own proxies in between, to cut one member off).
        self.cluster_options: dict[str, Any] = {}
        self.etcd_endpoints_of: Callable[[str], list[str]] | None = None

    # -- configuration -----------------------------------------------------------
    def member_config_path(self, name: str) -> Path:
        return self.run.controller_dir / f"controller-{name}.json"

    def write_configs(self) -> tuple[ControllerConfig, dict[str, AgentConfig]]:
        ctl, agents = super().write_configs()
        ip = ctl.listen_ip
        self.members = []
        for i in range(self.size):
            agent_port = (CONTROLLER_PORT + MEMBER_PORT_STEP * i) if self.plan is not None \
                else (ctl.port if i == 0 else free_tcp_port())
            api_port = ctl.api_port if i == 0 else free_tcp_port()
            front_port = free_tcp_port()
            self.members.append(ControllerMember(
                name=member_name(i), agent_ip=ip, agent_port=agent_port,
                api_url=f"http://127.0.0.1:{api_port}", front_url=f"http://127.0.0.1:{front_port}"))
        self.api_urls = [m.front_url for m in self.members]
        self.api_url = self.api_urls[0]
        store = StoreConfig(kind="cluster", etcd_endpoints=self.etcd.endpoints,
                            etcd_prefix=f"/nfvha/{self.run.run_id}/",
                            etcd_op_timeout_s=1.0, pg_conninfo=self.pg.conninfo(),
                            pg_schema="nfvha")
        for m in self.members:
            own = store if self.etcd_endpoints_of is None else store.model_copy(
                update={"etcd_endpoints": self.etcd_endpoints_of(m.name)})
            cfg = ctl.model_copy(update={
                "port": m.agent_port, "api_port": int(m.api_url.rsplit(":", 1)[1]),
                "api_internal_port": None,  # its front is inside it
                "store": own,
                "cluster": ClusterConfig(name=m.name, members=self.members,
                                         front_port=int(m.front_url.rsplit(":", 1)[1]),
                                         **self.cluster_options)})
            ControllerConfig.model_validate(cfg.model_dump())  # the validators, once
            self.member_config_path(m.name).write_text(cfg.model_dump_json(indent=1))
        controllers = [ControllerAddress(ip=m.agent_ip, port=m.agent_port) for m in self.members]
        for host, acfg in agents.items():
            agents[host] = acfg.model_copy(update={"controllers": controllers})
            (self.run.host_dir(host) / "agent.json").write_text(
                agents[host].model_dump_json(indent=1))
        return ctl, agents

    def _write_run_file(self) -> None:
        super()._write_run_file()
        info = read_json(self.run.run_file)
        info.update({
            "api_urls": self.api_urls, "cluster": {
                "controllers": [m.model_dump() for m in self.members],
                "etcd": self.etcd.endpoints, "postgres": self.pg.conninfo()}})
        atomic_write_json(self.run.run_file, info)

    # -- start -------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {**os.environ, RUN_MARKER: self.run.run_id}

    def _record(self, p: ServiceProcess) -> None:
        if p.pid is not None and p.ticks is not None:
            self.pids.append({"pid": p.pid, "start_ticks": p.ticks})

    def start_stores(self) -> None:
        """etcd and PostgreSQL, marked as the run's and recorded in run.json."""
        env = self._env()
        for p in [*self.etcd.processes, self.pg.process]:
            p.env = env
        self.etcd.start()
        for p in self.etcd.processes:
            self._record(p)
        self.pg.start()
        self._record(self.pg.process)
        self._write_run_file()

    def start_controller(self, env: dict[str, str] | None = None) -> None:
        """The stores (first time), then every controller that is not running."""
        if not self.pg.running():
            self.start_stores()
        for m in self.members:
            if not self.controller_running(m.name):
                self.start_member(m.name, env)

    def start_member(self, name: str, env: dict[str, str] | None = None) -> None:
        """The member's HA director (unless it still runs), then the member."""
        d = self.run.controller_dir
        self.start_director(self.member_config_path(name), d / f"director-{name}.log",
                            d / f"director-{name}.pid", env or self._env())
        sp = self.spawn_control(
            ["nfvha.controller.main", "--config", str(self.member_config_path(name))],
            d / f"controller-{name}.log", d / f"controller-{name}.pid", env or self._env())
        self.controller_pids[name] = (sp.pid, sp.start_ticks)

    def controller_running(self, name: str) -> bool:
        rec = self.controller_pids.get(name)
        return rec is not None and is_same_process(*rec)

    def kill_member(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill (SIGKILL: a crash) or stop (SIGTERM: hands over) one controller."""
        pid, ticks = self.controller_pids[name]
        kill_pid(pid, sig, ticks=ticks)

    def member_pid(self, name: str) -> int | None:
        rec = self.controller_pids.get(name)
        if rec is None or start_ticks(rec[0]) != rec[1]:
            return None
        return rec[0]

    # -- stop --------------------------------------------------------------------
    def down(self) -> list[str]:
        for name in list(self.controller_pids):
            if self.controller_running(name):
                self.kill_member(name, signal.SIGTERM)
        self.pg.stop()
        self.etcd.stop()
        return super().down()
