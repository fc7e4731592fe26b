"""``<run>/controller/controller.json``: what the controller is told at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nfvha.model.auth import AuthConfig
from nfvha.model.settings import Settings, Strict


class HostEntry(Strict):
    name: str
    fence: Literal["local", "none"] = "local"


class ComponentEndpoint(Strict):
    """Where a VNFC lives and where its standby receives state (direct sync, IF-3)."""

    name: str
    vnf: str
    vm: str
    host: str
    address: str
    port: int
    sync_port: int


class AmfConfig(Strict):
    """The generic VNFM's listener for the components' SDK connections (ADR 0008)."""

    listen_ip: str
    port: int
    components: list[ComponentEndpoint] = Field(default_factory=list)
    vips: dict[str, str] = Field(default_factory=dict)  # VNF -> "address/prefixlen"


class ControllerConfig(Strict):
    run_id: str
    listen_ip: str
    port: int  # TCP: agent event streams; UDP: host heartbeats
    api_host: str = "127.0.0.1"
    api_port: int
    db_path: Path
    db_fsync: bool = False
    hosts: list[HostEntry]
    settings: Settings = Field(default_factory=Settings)
    fabric: dict[str, Any] | None = None  # FabricPlan JSON, for the local fence devices
    topology_file: Path | None = None
    auth: AuthConfig = Field(default_factory=AuthConfig)
    amf: AmfConfig | None = None

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        return cls.model_validate_json(path.read_bytes())
