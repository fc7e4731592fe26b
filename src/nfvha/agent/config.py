"""What an agent (and its host supervisor) is told at boot: ``<host dir>/agent.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from nfvha.model.settings import Settings, Strict


class VnfcLaunch(Strict):
    name: str
    argv: list[str]
    port: int


class VmLaunch(Strict):
    name: str
    cpu: float
    memory_mb: int
    netns: str | None  # None on the loopback fallback
    data_ip: str
    vnfcs: list[VnfcLaunch] = Field(default_factory=list)


class ProcessLaunch(Strict):
    name: str
    argv: list[str]


class PeerAddress(Strict):
    host: str
    ip: str
    port: int


class AgentConfig(Strict):
    run_id: str
    host: str
    python: str
    controller_ip: str
    controller_port: int  # TCP for the event stream, UDP for heartbeats
    heartbeat_port: int  # UDP port every host supervisor listens on for peers
    mgmt_ip: str
    peers: list[PeerAddress] = Field(default_factory=list)
    settings: Settings = Field(default_factory=Settings)
    vms: list[VmLaunch] = Field(default_factory=list)
    processes: list[ProcessLaunch] = Field(default_factory=list)
    fabric: dict[str, Any] | None = None  # FabricPlan JSON; None on the loopback fallback
    links: list[str] = Field(default_factory=list)  # interfaces to watch
    cgroups: bool = True

    def vm(self, name: str) -> VmLaunch:
        for v in self.vms:
            if v.name == name:
                return v
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        return cls.model_validate_json(path.read_bytes())
