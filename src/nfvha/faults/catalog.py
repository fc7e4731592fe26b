"""Which events raise, update and clear which alarms.

An alarm is identified by its *key*: alarm type (``faultType``), entity, and for
per-part faults the part (the process, link or sensor). A second fault with the
same key while the alarm is active updates it (counted in ``faultDetails``)
instead of raising another: storms collapse. VM, hypervisor (agent) and physical
host failures are distinct types (REC-3); so are host software and host hardware
failures (FM-8).
"""

from __future__ import annotations

from dataclasses import dataclass

from nfvha.faults.model import FaultyResourceType
from nfvha.model.events import Event, Kind


@dataclass(frozen=True)
class AlarmType:
    name: str
    part: str | None = None  # the Event.details key naming the faulty part
    resource_type: FaultyResourceType = FaultyResourceType.COMPUTE


VNFC_FAILURE = AlarmType("vnfc-failure")
VM_FAILURE = AlarmType("vm-failure")
VM_HANG = AlarmType("vm-hang")
VM_BOOT_FAILURE = AlarmType("vm-boot-failure")
VM_WATCHDOG_EXPIRED = AlarmType("vm-watchdog-expired")
HYPERVISOR_FAILURE = AlarmType("hypervisor-failure")
HOST_FAILURE = AlarmType("host-failure")
HOST_SOFTWARE_FAILURE = AlarmType("host-software-failure", part="process")
LINK_FAILURE = AlarmType("link-failure", part="link", resource_type=FaultyResourceType.NETWORK)
HOST_HARDWARE_FAILURE = AlarmType("host-hardware-failure", part="sensor")
LATENT_HOST_FAULT = AlarmType("suspected-latent-host-fault")
# A controller, etcd member or PostgreSQL failed (FM-2): the entity names the part.
CONTROL_PLANE_FAILURE = AlarmType("control-plane-failure")

RAISES: dict[Kind, AlarmType] = {
    Kind.VNFC_CRASHED: VNFC_FAILURE,
    Kind.VM_CRASHED: VM_FAILURE,
    Kind.VM_HUNG: VM_HANG,
    Kind.VM_BOOT_TIMEOUT: VM_BOOT_FAILURE,
    Kind.VM_WATCHDOG: VM_WATCHDOG_EXPIRED,
    Kind.AGENT_LOST: HYPERVISOR_FAILURE,
    Kind.HOST_SUSPECT: HOST_FAILURE,
    Kind.HOST_DOWN: HOST_FAILURE,
    Kind.HOST_PROCESS_FAILED: HOST_SOFTWARE_FAILURE,
    Kind.LINK_DOWN: LINK_FAILURE,
    Kind.SENSOR: HOST_HARDWARE_FAILURE,
    Kind.CONTROL_SERVICE_FAILED: CONTROL_PLANE_FAILURE,
}

CLEARS: dict[Kind, tuple[AlarmType, ...]] = {
    Kind.VNFC_STARTED: (VNFC_FAILURE,),
    # A VM that starts again is neither failed nor hung any more.
    Kind.VM_STARTED: (VM_FAILURE, VM_HANG, VM_BOOT_FAILURE, VM_WATCHDOG_EXPIRED),
    # Also for a failover: the standby VM took the failed one's place (ADR 0010).
    Kind.VM_REPAIRED: (VM_FAILURE, VM_HANG, VM_BOOT_FAILURE, VM_WATCHDOG_EXPIRED),
    Kind.VM_RESPONSIVE: (VM_HANG,),
    Kind.AGENT_CONNECTED: (HYPERVISOR_FAILURE,),
    Kind.HOST_UP: (HOST_FAILURE,),
    Kind.HOST_PROCESS_RESTARTED: (HOST_SOFTWARE_FAILURE,),
    Kind.LINK_UP: (LINK_FAILURE,),
    Kind.SENSOR: (HOST_HARDWARE_FAILURE,),
    Kind.CONTROL_SERVICE_RESTORED: (CONTROL_PLANE_FAILURE,),
}

# Alarm types that can be the root cause of alarms of the entities they contain.
ROOT_TYPES = (HOST_FAILURE, VM_FAILURE, VM_HANG)


def alarm_key(t: AlarmType, entity: str, part: str | None) -> str:
    return f"{t.name}|{entity}|{part or ''}"


def part_of(t: AlarmType, ev: Event) -> str | None:
    if t.part is None:
        return None
    value = ev.details.get(t.part)
    return None if value is None else str(value)
