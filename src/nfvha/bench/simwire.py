"""The bench's control channel to a host simulator (``nfvha.bench.hostsim``): one JSON
object per line on the simulator's stdin (requests) and stdout (replies).

The simulator first binds every host's UDP socket and says where (``Bound``), so the
controller's configuration names real ports; ``start`` then powers the hosts on
(heartbeats, agent streams). Faults are requests, answered with the CLOCK_MONOTONIC
time the simulator injected them at (one clock machine-wide).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- bench -> simulator ---------------------------------------------------------------------
class Start(_Msg):
    """Power every host on: heartbeats, witnesses, agent streams."""

    t: Literal["start"] = "start"
    id: int = 0
    # The controller's address (heartbeats, agent streams; the director's is the same),
    # known only once its configuration - which names the hosts' ports - is written.
    controller_ip: str
    controller_port: int = Field(ge=1, le=65_535)


class Crash(_Msg):
    """The VM dies: its agent reports ``vm.crashed`` (and its VNFCs lost with it)."""

    t: Literal["crash"] = "crash"
    id: int
    host: str
    vm: str


class PowerOff(_Msg):
    """The host stops: no heartbeat, no answer to pings or probe requests, its agent
    stream goes silent (no FIN: a machine without power sends nothing)."""

    t: Literal["power_off"] = "power_off"
    id: int
    host: str


class PowerOn(_Msg):
    """The host boots again: a new boot id and agent incarnation, its VMs stopped."""

    t: Literal["power_on"] = "power_on"
    id: int
    host: str


class GetStats(_Msg):
    t: Literal["stats"] = "stats"
    id: int
    reset: bool = False  # start a new measuring window after this answer


class Stop(_Msg):
    t: Literal["stop"] = "stop"
    id: int = 0


AnyRequest = Start | Crash | PowerOff | PowerOn | GetStats | Stop
SimRequest = Annotated[AnyRequest, Field(discriminator="t")]
SIM_REQUEST: TypeAdapter[AnyRequest] = TypeAdapter(SimRequest)


# -- simulator -> bench ---------------------------------------------------------------------
class Bound(_Msg):
    """Ready: the supervisors' simulator has bound every host's UDP socket (host ->
    port, on the host's own address); the agents' says so with no ports."""

    t: Literal["bound"] = "bound"
    pid: int
    ports: dict[str, int]
    nice: int  # the simulator's scheduling niceness (lower: served first)


class SimStats(_Msg):
    """Since the last reset (``window_s`` long)."""

    window_s: float
    hosts: int
    powered: int
    agents_connected: int
    heartbeats_sent: int
    # The longest time between two heartbeats of one powered host: what the simulator
    # itself added to the controller's view of silence (a false suspect with this near
    # the suspect time would be the simulator's fault, not the controller's).
    max_heartbeat_gap_ms: float
    late_heartbeats: int  # gaps longer than two intervals
    pings_answered: int
    probes_witnessed: int
    events_sent: int
    commands: int
    cpu_s: float  # this process's CPU time


@dataclass
class SimCounters:
    """What a simulator counts between two resets."""

    started: float = field(default_factory=time.monotonic)
    cpu_start: float = field(default_factory=time.process_time)
    heartbeats: int = 0
    max_gap_s: float = 0.0
    late: int = 0
    pings: int = 0
    probes: int = 0
    events: int = 0
    commands: int = 0

    def stats(self, *, hosts: int, powered: int, agents_connected: int = 0) -> SimStats:
        return SimStats(
            window_s=round(time.monotonic() - self.started, 3), hosts=hosts, powered=powered,
            agents_connected=agents_connected, heartbeats_sent=self.heartbeats,
            max_heartbeat_gap_ms=round(self.max_gap_s * 1000, 2), late_heartbeats=self.late,
            pings_answered=self.pings, probes_witnessed=self.probes, events_sent=self.events,
            commands=self.commands, cpu_s=round(time.process_time() - self.cpu_start, 3))


class Reply(_Msg):
    t: Literal["reply"] = "reply"
    id: int
    ok: bool = True
    error: str | None = None
    at_mono_ns: int = 0  # when the fault was injected (crash: the event's detected time)
    stats: SimStats | None = None


SimOutput = Annotated[Bound | Reply, Field(discriminator="t")]
SIM_OUTPUT: TypeAdapter[Bound | Reply] = TypeAdapter(SimOutput)
