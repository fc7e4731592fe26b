"""A real etcd cluster on one machine: N members on loopback ports (ADR 0012).

Debian's ``etcd-server`` (3.4 in bookworm; ``scripts/bootstrap`` installs it).
Each member has its own data directory under ``root`` and its log beside it; a
member stopped or killed is started again on its data directory and rejoins
(``--initial-cluster-state existing`` is implied once the data directory holds a
member). The gRPC JSON gateway the stores use is served on the client port.

Timing: heartbeat 50 ms and election timeout 500 ms (etcd's defaults are 100 ms
and 1 s) so that losing the leader costs about half a second; it also lowers
etcd's minimum lease TTL to 1 s (1.5 election timeouts, rounded up to seconds).
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import httpx

from nfvha.testbed.services import ServiceError, ServiceProcess, free_tcp_ports, wait_for


def etcd_binary() -> str:
    found = shutil.which("etcd") or (
        "/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    if found is None:
        raise ServiceError("etcd is not installed: run scripts/bootstrap"
                           " (apt-get install etcd-server)")
    return found


@dataclass(frozen=True)
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path

    @property
    def client_url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class EtcdCluster:
    def __init__(self, root: Path, size: int = 3, *, host: str = "127.0.0.1",
                 token: str = "nfvha", heartbeat_ms: int = 50, election_ms: int = 500,
                 binary: str | None = None) -> None:
        if size < 1:
            raise ValueError("an etcd cluster has at least one member")
        self.root = root
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.binary = binary or etcd_binary()
        ports = free_tcp_ports(2 * size, host)
        self.members = [EtcdMember(f"m{i}", host, ports[2 * i], ports[2 * i + 1],
                                   root / f"m{i}") for i in range(size)]
        self.processes = [ServiceProcess(f"etcd {m.name}", self._argv(m), root / f"{m.name}.log")
                          for m in self.members]

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def _argv(self, m: EtcdMember) -> list[str]:
        initial = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        return [
            self.binary, "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            "--logger", "zap", "--log-level", "warn",
        ]

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every member not running and wait until all of them are healthy."""
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.processes:
            if not p.running():
                p.start()
        self.wait_healthy(timeout_s=timeout_s)

    def start_member(self, i: int, *, wait: bool = True, timeout_s: float = 30.0) -> None:
        self.processes[i].start()
        if wait:
            self.wait_healthy([i], timeout_s=timeout_s)

    def stop_member(self, i: int, sig: int = signal.SIGTERM) -> None:
        self.processes[i].stop(sig)

    def kill_member(self, i: int) -> None:
        self.processes[i].kill()

    def running(self, i: int) -> bool:
        return self.processes[i].running()

    def healthy(self, i: int, timeout_s: float = 0.5) -> bool:
        """The member answers and has a leader (etcd's own ``/health``)."""
        try:
            r = httpx.get(self.members[i].client_url + "/health", timeout=timeout_s,
                          trust_env=False)
            return r.status_code == 200 and r.json().get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def wait_healthy(self, members: list[int] | None = None, timeout_s: float = 30.0) -> None:
        which = list(range(len(self.members))) if members is None else members

        def ready() -> bool:
            for i in which:
                if not self.processes[i].running():
                    raise ServiceError(f"etcd {self.members[i].name} exited:\n"
                                       f"{self.processes[i].log_tail()}")
            return all(self.healthy(i) for i in which)

        wait_for(ready, timeout_s, f"etcd members {[self.members[i].name for i in which]}")

    def leader_index(self, timeout_s: float = 0.5) -> int | None:
        """Which member is the raft leader, from any member's status."""
        ids: dict[str, int] = {}
        leader: str | None = None
        for i, m in enumerate(self.members):
            try:
                st = httpx.post(m.client_url + "/v3/maintenance/status", json={},
                                timeout=timeout_s, trust_env=False).json()
            except (httpx.HTTPError, ValueError):
                continue
            ids[str(st["header"]["member_id"])] = i
            if st.get("leader", "0") != "0":
                leader = leader or str(st["leader"])
        return ids.get(leader) if leader else None

    def stop(self) -> None:
        for p in self.processes:
            p.stop()
