"""Messages between a controller (the VIM process) and its HA director (ADR 0014).

The director is the controller's real-time core in a process of its own: host
liveness and the generic availability manager. The two talk over one unix-domain
stream socket (the director listens, the controller connects and reconnects),
one JSON object per line, at most ``MAX_LINE_BYTES``; each side keeps a bounded
queue of what it has not written yet and drops the connection rather than grow it.

Agents also tell the director directly (UDP, ``Notice``) about the failures that
move service-instance roles, so a failover never waits for the VIM process; the
stored event follows on the channel and is what repairs act on.

Controller -> director:
- ``events``: stored events the availability manager acts on, in id order;
- ``term`` (cluster, ADR 0013): this member leads ``epoch`` and may decide until
  ``decide_until_mono_ns`` (CLOCK_MONOTONIC: one clock machine-wide); renewed with
  every lease renewal, ``epoch`` 0 ends the term;
- ``placed``: the VIM re-created ``vm`` on ``host`` (evacuation, ADR 0011);
- ``repair_update``: progress of a repair the director asked for;
- ``answer``: the answer to a director's ``ask``; ``query``: a request for state
  (the API's ``/v1/availability``, ``/v1/hosts``).

Director -> controller:
- ``hello``: first on every connection; ``after``: the last stored event id the
  director saw (the controller replays the ones after it from its store; None: a
  fresh director, only new events from now on);
- ``publish``: events the director makes (host liveness transitions), to be
  stored; the controller answers ``published`` once they are;
- ``host_state``: a host's liveness changed (the controller's mirror of it: the
  inventory, host health, where VMs may go), and all of them after ``hello``;
- ``repair``: a repair the availability manager asks of the VIM; ``ask``: a question
  it needs answered (``host_repair``: would the VIM repair the VM's host instead);
- ``answer`` to a ``query``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from nfvha.model.events import Event, StoredEvent

MAX_LINE_BYTES = 4 << 20
NOTICE_MAX_BYTES = 1024
SOCKET_NAME = "director.sock"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- controller -> director ---------------------------------------------------------------
class Events(_Msg):
    t: Literal["events"] = "events"
    events: list[StoredEvent] = Field(max_length=1000)


class Term(_Msg):
    t: Literal["term"] = "term"
    epoch: int = Field(ge=0)  # 0: no term (this member does not lead)
    decide_until_mono_ns: int = Field(ge=0)
    leader_key: str = ""  # the etcd key whose create revision is the epoch (write fence)


class Placed(_Msg):
    t: Literal["placed"] = "placed"
    vm: str
    host: str


RepairPhase = Literal["stopped", "done", "failed"]


class RepairUpdate(_Msg):
    t: Literal["repair_update"] = "repair_update"
    id: int
    phase: RepairPhase
    # "done" of a repair_vm: the ``RepairOutcome`` as JSON; of the others: {}.
    outcome: dict[str, Any] = Field(default_factory=dict)
    how: Literal["started", "joined", "resolved", ""] = ""
    error: str | None = None


class Answer(_Msg):
    t: Literal["answer"] = "answer"
    id: int
    ok: bool = True
    error: str | None = None
    result: Any = None


class Query(_Msg):
    t: Literal["query"] = "query"
    id: int
    what: Literal["availability", "hosts"]


# -- director -> controller ---------------------------------------------------------------
class Hello(_Msg):
    t: Literal["hello"] = "hello"
    run_id: str
    after: int | None = None


class Publish(_Msg):
    t: Literal["publish"] = "publish"
    id: int
    events: list[Event] = Field(max_length=1000)


class Published(_Msg):
    t: Literal["published"] = "published"
    id: int
    ok: bool
    error: str | None = None


class HostState(_Msg):
    t: Literal["host_state"] = "host_state"
    host: str
    state: Literal["unknown", "up", "suspect", "down"]
    reason: str = ""
    since_mono_ns: int = 0
    boot: int | None = None


RepairKind = Literal["restart_component", "kill_and_restart_component", "stop_vm",
                     "start_vm", "repair_vm"]


class Repair(_Msg):
    t: Literal["repair"] = "repair"
    id: int
    kind: RepairKind
    host: str = ""
    target: str  # the VNFC or VM
    requested_by: str = "vnfm"
    failure: int | None = None  # repair_vm: the failure event it is about


class Ask(_Msg):
    t: Literal["ask"] = "ask"
    id: int
    what: Literal["host_repair"]
    vm: str
    source: str
    failfast: bool = False


ToDirector = Annotated[Events | Term | Placed | RepairUpdate | Answer | Query | Published,
                       Field(discriminator="t")]
ToController = Annotated[Hello | Publish | HostState | Repair | Ask | Answer,
                         Field(discriminator="t")]
TO_DIRECTOR: TypeAdapter[Events | Term | Placed | RepairUpdate | Answer | Query | Published] = \
    TypeAdapter(ToDirector)
TO_CONTROLLER: TypeAdapter[Hello | Publish | HostState | Repair | Ask | Answer] = \
    TypeAdapter(ToController)


def encode(msg: _Msg) -> bytes:
    return msg.model_dump_json().encode() + b"\n"


# -- agent -> director (UDP) -----------------------------------------------------------------
NoticeKind = Literal["vnfc.crashed", "vm.crashed", "vm.hung"]


class Notice(_Msg):
    """An agent's word that a VNFC or VM failed, sent to the director the moment the
    agent detects it, beside the event itself (which is stored and acted on for the
    repair). It only takes the failed components out of their roles: failover must
    not wait for the VIM process. A datagram lost is no loss: the stored event
    follows."""

    t: Literal["notice"] = "notice"
    host: str = Field(max_length=64)
    incarnation: str = Field(max_length=64)  # the agent's (Hello.incarnation)
    seq: int = Field(ge=0)  # the event's sequence number on its agent
    kind: NoticeKind
    entity: str = Field(max_length=128)
    pid: int | None = None  # the process that died (VNFC or VM)
    detected_mono_ns: int = Field(ge=0)
    cause_entity: str | None = Field(None, max_length=128)  # a VNFC lost with its VM
