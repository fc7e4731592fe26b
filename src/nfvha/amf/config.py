"""Where an availability manager listens for its components, and where each lives.

The manager's configuration (ADR 0008): the generic one in the HA director (ADR 0014)
and a VNF's own (``nfvha.amf.own``) are told the same. ``nfvha.controller.config``
embeds it in the controller's configuration.
"""

from __future__ import annotations

from pydantic import Field

from nfvha.model.settings import Strict


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
    """The availability manager's listener for the components' SDK connections (ADR 0008)."""

    listen_ip: str
    port: int
    components: list[ComponentEndpoint] = Field(default_factory=list)
    vips: dict[str, str] = Field(default_factory=dict)  # VNF -> "address/prefixlen"
    # IF-2: load-balancer VNF -> the VNF it balances, whose components are its members
    # (from whose active SU a ``member_failed`` is taken).
    balancers: dict[str, str] = Field(default_factory=dict)
