"""``<run>/controller/controller.json``: what the controller is told at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from nfvha.agent.config import VmLaunch

# Re-exported: the test bed writes the controller's AM section with them.
from nfvha.amf.config import AmfConfig as AmfConfig
from nfvha.amf.config import ComponentEndpoint as ComponentEndpoint
from nfvha.controller.cluster_config import ClusterConfig, StoreConfig
from nfvha.model.api import ApiLimits
from nfvha.model.auth import AuthConfig
from nfvha.model.settings import Settings, Strict
from nfvha.model.topology import FenceSpec


class HostEntry(Strict):
    name: str
    fence: FenceSpec = Field(default_factory=FenceSpec)
    # Liveness confirmation by witnesses (ADR 0015): a witness is sent probe requests
    # at mgmt_ip:probe_port, a suspect is pinged at probe_ip:probe_port (its data
    # network address). Absent (older configs): it is neither asked nor probed.
    rack: str = ""  # "site/rack": witnesses are taken from other racks first
    mgmt_ip: str | None = None
    probe_ip: str | None = None
    probe_port: int = Field(0, ge=0, le=65_535)

    @field_validator("fence", mode="before")
    @classmethod
    def _fence_by_type(cls, v: Any) -> Any:
        # "local" / "none": the short form older controller.json files carry.
        return {"type": v} if isinstance(v, str) else v


class ControllerConfig(Strict):
    run_id: str
    listen_ip: str
    port: int  # TCP: agent event streams; UDP: host heartbeats
    # The API's public address. With ``api_internal_port`` a front process serves it
    # (``nfvha front``, ADR 0014 "The API front") and the controller's own API listens
    # on 127.0.0.1:api_internal_port behind it; without, the controller serves it.
    api_host: str = "127.0.0.1"
    api_port: int
    api_internal_port: int | None = Field(None, ge=1, le=65_535)
    db_path: Path
    db_fsync: bool = False
    hosts: list[HostEntry]
    settings: Settings = Field(default_factory=Settings)
    fabric: dict[str, Any] | None = None  # FabricPlan JSON, for the local fence devices
    topology_file: Path | None = None
    auth: AuthConfig = Field(default_factory=AuthConfig)
    amf: AmfConfig | None = None
    # How each VM is launched: what a host that never had it is sent when the VM is
    # re-created there (evacuation, ADR 0011).
    vm_launch: list[VmLaunch] = Field(default_factory=list)
    # Embedded SQLite (default) or etcd + PostgreSQL; ``cluster``: one of N controllers
    # (ADR 0013), which needs the cluster store.
    store: StoreConfig = Field(default_factory=StoreConfig)
    cluster: ClusterConfig | None = None
    # What the API (and a cluster member's front) takes: body sizes, header size,
    # keep-alive, concurrent connections (ADR 0016).
    api: ApiLimits = Field(default_factory=ApiLimits)

    @model_validator(mode="after")
    def _cluster_needs_cluster_store(self) -> ControllerConfig:
        if self.cluster is not None and self.store.kind != "cluster":
            raise ValueError("a cluster of controllers needs store kind 'cluster'")
        return self

    @model_validator(mode="after")
    def _one_front(self) -> ControllerConfig:
        if self.cluster is not None and self.api_internal_port is not None:
            raise ValueError("api_internal_port is for a single controller's front process;"
                             " a cluster member has its front inside it (cluster.front_port)")
        if self.api_internal_port is not None and self.api_internal_port == self.api_port:
            raise ValueError("api_internal_port must differ from api_port")
        return self

    def api_listen(self) -> tuple[str, int]:
        """Where the controller's own API listens: loopback behind its front, else the
        public address."""
        if self.api_internal_port is not None:
            return "127.0.0.1", self.api_internal_port
        return self.api_host, self.api_port

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        return cls.model_validate_json(path.read_bytes())
