"""Component <-> availability manager messages (ADR 0008), as the AM validates them.

The component side (``nfvha.amf.sdk``) is standard library only and speaks the same
JSON lines with plain dicts; ``tests/amf_sdk`` and the VNFM tests run one against
the other.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_LINE_BYTES = 16 << 20
HaStateName = Literal["active", "standby", "quiescing", "quiesced"]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Held(_In):
    si: str
    ha_state: HaStateName
    epoch: int = Field(ge=0)


class Register(_In):
    op: Literal["register"]
    component: str = Field(min_length=1)
    pid: int
    incarnation: str = Field(min_length=1)
    assignments: list[Held] = Field(default_factory=list)


class Assigned(_In):
    op: Literal["assigned"]
    si: str
    ha_state: HaStateName
    epoch: int


class Removed(_In):
    op: Literal["removed"]
    si: str
    epoch: int


class Refused(_In):
    op: Literal["refused"]
    si: str
    epoch: int
    reason: str = ""


class LeaseRequest(_In):
    """The component asks for its active lease; the grant runs from when it sent this."""

    op: Literal["lease"]
    n: int


class Report(_In):
    op: Literal["report"]
    healthy: bool
    reason: str = ""


class MemberFailed(_In):
    """IF-2: the active load balancer excluded one of its members (by component name)."""

    op: Literal["member_failed"]
    member: str = Field(min_length=1)
    reason: str = ""


class CheckpointWrite(_In):
    op: Literal["checkpoint_write"]
    id: int
    key: str = Field(min_length=1, max_length=200)
    value: Any


class CheckpointRead(_In):
    op: Literal["checkpoint_read"]
    id: int
    key: str = Field(min_length=1, max_length=200)


ComponentMessage = Annotated[
    Register | Assigned | Removed | Refused | LeaseRequest | Report | MemberFailed
    | CheckpointWrite | CheckpointRead,
    Field(discriminator="op"),
]
COMPONENT_MESSAGE: TypeAdapter[
    Register | Assigned | Removed | Refused | LeaseRequest | Report | MemberFailed
    | CheckpointWrite | CheckpointRead
] = TypeAdapter(ComponentMessage)


class PeerRef(BaseModel):
    model_config = ConfigDict(frozen=True)
    component: str
    address: str
    port: int
