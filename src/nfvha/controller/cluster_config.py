"""How a controller stores its state and, in a cluster, who its peers are (ADR 0012, 0013).

``store.kind``: ``embedded`` (the default: SQLite files beside ``db_path``, one
controller) or ``cluster`` (etcd for assignments, checkpoints and the leader lease;
PostgreSQL for events, alarms, notifications). A cluster controller also has a
``cluster`` section: its own name, every member's addresses, and the lease timing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from nfvha.model.settings import Strict
from nfvha.store.etcd import DEFAULT_PREFIX


class StoreConfig(Strict):
    kind: Literal["embedded", "cluster"] = "embedded"
    etcd_endpoints: list[str] = Field(default_factory=list)
    etcd_prefix: str = DEFAULT_PREFIX
    etcd_op_timeout_s: float = Field(2.0, gt=0, le=60)
    pg_conninfo: str | None = None
    pg_schema: str = "nfvha"

    @model_validator(mode="after")
    def _cluster_has_servers(self) -> StoreConfig:
        if self.kind == "cluster" and (not self.etcd_endpoints or not self.pg_conninfo):
            raise ValueError("store kind 'cluster' needs etcd_endpoints and pg_conninfo")
        return self


class ControllerMember(Strict):
    """One controller of the cluster, as its peers, agents and clients reach it."""

    name: str
    agent_ip: str  # its event-stream (TCP) and heartbeat (UDP) address
    agent_port: int
    api_url: str  # its own API, served while it leads (the fronts proxy to it)
    front_url: str  # the API address clients use: every member answers there


class ClusterConfig(Strict):
    name: str  # this controller's member name (the leader key's holder)
    members: list[ControllerMember]
    front_host: str = "127.0.0.1"
    front_port: int
    leader_key: str = "controller"
    # Timing of the leader lease (ADR 0013): renew + 2 x retry < TTL, checked at start.
    # etcd grants whole seconds, at least 1.5 election timeouts.
    lease_ttl_s: float = Field(1.0, gt=0, le=600)
    renew_interval_s: float = Field(0.2, gt=0, le=600)
    retry_timeout_s: float = Field(0.3, gt=0, le=600)
    follow_interval_s: float = Field(0.25, gt=0, le=600)
    margin_s: float = Field(0.1, ge=0, le=600)
    # How long a new leader's work may take to start before it gives the term up.
    start_timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _self_is_a_member(self) -> ClusterConfig:
        if self.name not in {m.name for m in self.members}:
            raise ValueError(f"cluster member {self.name!r} is not in the member list")
        return self

    def member(self, name: str) -> ControllerMember | None:
        return next((m for m in self.members if m.name == name), None)
