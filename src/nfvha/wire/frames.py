"""Frames of the agent <-> controller stream (TCP, one JSON object per line).

Agent -> controller: ``hello`` then ``event``s (with sequence numbers),
``inventory`` snapshots, ``started`` when the agent begins a command and command
``reply``s (a command's time limit counts from ``started``: a command queued
behind the host's other work is not late). Controller -> agent:
``welcome`` (the highest sequence number already stored, so the agent drops
what is safe and re-sends the rest), cumulative ``ack``s and ``command``s.
An event is acknowledged only after the controller has committed it, so an
agent keeps (on disk) everything a crashing controller may not have stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from nfvha.model.events import Event

MAX_FRAME_BYTES = 1 << 20


class Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hello(Frame):
    t: Literal["hello"] = "hello"
    host: str
    agent_pid: int
    incarnation: str  # new on every agent start: tells a restart from a reconnect
    started_time: float
    restarted_after: str | None = None  # how the previous agent ended, if it crashed


class EventFrame(Frame):
    t: Literal["event"] = "event"
    event: Event


class VmInfo(Frame):
    name: str
    state: Literal["starting", "running", "hung", "crashed", "stopped"]
    pid: int | None = None
    since: float
    memory_bytes: int | None = None
    cpu_usage_ns: int | None = None
    # What runs the VM: "process" or "libvirt" (ADR 0019). Defaulted: an agent from
    # before the field only ran process VMs.
    hypervisor: str = Field("process", max_length=32)


class VnfcInfo(Frame):
    name: str
    vm: str
    state: Literal["running", "exited", "stopped", "unknown"]
    pid: int | None = None
    since: float


class ProcessInfo(Frame):
    name: str
    state: Literal["running", "restarting", "failed"]
    pid: int | None = None
    restarts: int = 0


class Inventory(Frame):
    t: Literal["inventory"] = "inventory"
    host: str
    vms: list[VmInfo] = Field(default_factory=list)
    vnfcs: list[VnfcInfo] = Field(default_factory=list)
    processes: list[ProcessInfo] = Field(default_factory=list)
    links: dict[str, bool] = Field(default_factory=dict)
    sensors: dict[str, float] = Field(default_factory=dict)


class Started(Frame):
    """The agent has begun carrying out command ``id`` (its reply follows)."""

    t: Literal["started"] = "started"
    id: int


class Reply(Frame):
    t: Literal["reply"] = "reply"
    id: int
    ok: bool
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class Welcome(Frame):
    t: Literal["welcome"] = "welcome"
    last_seq: int
    # The leader term of the controller that took the stream (ADR 0013); 0: a single
    # controller, no election. The agent refuses commands of any lower epoch from now on.
    leader_epoch: int = 0


class Ack(Frame):
    t: Literal["ack"] = "ack"
    seq: int


# vm.start takes {"disk": "keep"|"initial"|"snapshot"} (ADR 0010; default "keep") and
# {"spec": <VmLaunch>} for a VM re-created on a host that never had it (ADR 0011);
# vm.snapshot copies a running VM's disk.
CommandOp = Literal["vm.start", "vm.stop", "vm.snapshot", "vnfc.start", "vnfc.stop"]


class Command(Frame):
    t: Literal["command"] = "command"
    id: int
    op: CommandOp
    target: str
    args: dict[str, Any] = Field(default_factory=dict)
    leader_epoch: int = 0  # the deciding leader's term (fencing token, ADR 0013)
    # How long the controller waits for the reply once the agent has started the
    # command: the agent answers within it (a VM still booting: "not ready yet").
    timeout_s: float | None = Field(None, gt=0)


AgentFrame = Annotated[Hello | EventFrame | Inventory | Started | Reply,
                       Field(discriminator="t")]
ControllerFrame = Annotated[Welcome | Ack | Command, Field(discriminator="t")]

AGENT_FRAME: TypeAdapter[Hello | EventFrame | Inventory | Started | Reply] = \
    TypeAdapter(AgentFrame)
CONTROLLER_FRAME: TypeAdapter[Welcome | Ack | Command] = TypeAdapter(ControllerFrame)


def encode(frame: Frame) -> bytes:
    return frame.model_dump_json().encode() + b"\n"

