"""Events from the NFVI level, as the controller receives and stores them.

The fields are chosen so that the fault-management layer can turn an event into
an ETSI SOL002/003-shaped alarm without guessing: ``entity`` is the managed
object (and the candidate root-cause faulty resource), ``event_type`` maps to
eventType, ``severity`` to perceivedSeverity, ``probable_cause`` to
probableCause, ``clears`` marks the recovery that clears an earlier fault, and
the two times are eventTime (at detection) and the controller's receipt.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Severity(StrEnum):
    CRITICAL = "CRITICAL"
    MAJOR = "MAJOR"
    MINOR = "MINOR"
    WARNING = "WARNING"
    INDETERMINATE = "INDETERMINATE"
    CLEARED = "CLEARED"


class EventType(StrEnum):
    """ETSI eventType (alarm category)."""

    COMMUNICATIONS_ALARM = "COMMUNICATIONS_ALARM"
    PROCESSING_ERROR_ALARM = "PROCESSING_ERROR_ALARM"
    ENVIRONMENTAL_ALARM = "ENVIRONMENTAL_ALARM"
    QOS_ALARM = "QOS_ALARM"
    EQUIPMENT_ALARM = "EQUIPMENT_ALARM"


class Kind(StrEnum):
    """What happened. Failures of the VM, the hypervisor (agent) and the physical
    host are distinct kinds (REC-3), and so are host software (agent, host
    processes) and host hardware (sensors) failures (FM-8)."""

    VNFC_CRASHED = "vnfc.crashed"
    VNFC_STARTED = "vnfc.started"
    VNFC_STOPPED = "vnfc.stopped"
    VM_CRASHED = "vm.crashed"
    VM_HUNG = "vm.hung"
    # Its guest did not report it is up within the VM's boot time (not a hang: hang
    # detection starts after boot).
    VM_BOOT_TIMEOUT = "vm.boot_timeout"
    VM_RESPONSIVE = "vm.responsive"
    # The VM's watchdog timer, armed by a VNFC, ran out (VNFHA-1): the VNFC stopped
    # kicking it. Its action (reset, power off, none) follows.
    VM_WATCHDOG = "vm.watchdog"
    VM_STARTED = "vm.started"
    VM_STOPPED = "vm.stopped"
    VM_LAST_WORDS = "vm.last_words"
    VM_ADOPTED = "vm.adopted"
    # The VIM repaired a failed VM by its repair policy (REC-2, ADR 0010).
    VM_REPAIRED = "vm.repaired"
    HOST_PROCESS_FAILED = "host.process.failed"
    HOST_PROCESS_RESTARTED = "host.process.restarted"
    AGENT_STARTED = "agent.started"
    AGENT_LOST = "agent.lost"
    AGENT_CONNECTED = "agent.connected"
    HOST_SUSPECT = "host.suspect"
    HOST_DOWN = "host.down"
    HOST_UP = "host.up"
    LINK_DOWN = "link.down"
    LINK_UP = "link.up"
    SENSOR = "host.sensor"
    HOST_CONDITION = "host.condition"
    # Host repair by the VIM (REC-1, UC-9, ADR 0011).
    HOST_REPAIR_STARTED = "host.repair_started"
    HOST_FENCED = "host.fenced"
    HOST_FENCE_FAILED = "host.fence_failed"
    VM_EVACUATED = "vm.evacuated"
    # A part of the control plane (a controller, an etcd member, PostgreSQL) failed or
    # is back, as the leading controller sees it (FM-2, VIM-4; ADR 0013).
    CONTROL_SERVICE_FAILED = "control.service.failed"
    CONTROL_SERVICE_RESTORED = "control.service.restored"


class Event(BaseModel):
    """One event. ``host``/``seq`` identify it for exactly-once storage: ``seq`` is
    the agent's sequence number; events the controller makes itself (agent lost,
    host down) carry ``origin='controller'`` and seq 0."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    seq: int = Field(ge=0)
    origin: str = "agent"
    kind: Kind
    entity: str  # EntityRef text, e.g. "vm/gw-vm1"
    severity: Severity
    event_type: EventType
    probable_cause: str
    description: str = ""
    clears: bool = False  # this event ends the fault that ``entity`` had
    informational: bool = False  # a record (started, last words), not a fault or a clear
    event_time: float  # wall clock at detection (ETSI eventTime)
    detected_mono_ns: int  # CLOCK_MONOTONIC at detection, same clock machine-wide
    details: dict[str, Any] = Field(default_factory=dict)


class StoredEvent(Event):
    id: int
    received_time: float
    received_mono_ns: int
