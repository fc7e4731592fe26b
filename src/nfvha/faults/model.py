"""ETSI NFV SOL002/003 fault-management data types (VNF FM interface, API 1.3.0).

Field names are the standard's (camelCase) so that existing VNFMs and NFVOs read
them unchanged. Where the standard has no field for something nfvha knows (the
host, the entity kind), it goes into ``faultDetails`` as ``key=value`` strings,
which the standard provides for exactly that.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from nfvha.model.events import EventType, Severity


class FmModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AckState(StrEnum):
    UNACKNOWLEDGED = "UNACKNOWLEDGED"
    ACKNOWLEDGED = "ACKNOWLEDGED"


class FaultyResourceType(StrEnum):
    COMPUTE = "COMPUTE"
    STORAGE = "STORAGE"
    NETWORK = "NETWORK"


class NotificationType(StrEnum):
    ALARM = "AlarmNotification"
    ALARM_CLEARED = "AlarmClearedNotification"
    ALARM_LIST_REBUILT = "AlarmListRebuiltNotification"
    # nfvha extension (FM-9), delivered only to subscriptions that list it explicitly.
    HOST_HEALTH_CHANGE = "HostHealthChangeNotification"


class Link(FmModel):
    href: str


class ResourceHandle(FmModel):
    resourceId: str  # the entity, e.g. "vm/gw-vm1"
    vimConnectionId: str | None = None
    vimLevelResourceType: str | None = None  # "host", "vm", "vnfc", "link", "sensor"


class FaultyResourceInfo(FmModel):
    faultyResource: ResourceHandle
    faultyResourceType: FaultyResourceType


class AlarmLinks(FmModel):
    self_: Link = Field(alias="self")
    objectInstance: Link | None = None


class Alarm(FmModel):
    id: str
    managedObjectId: str  # the VNF instance, or "host/<name>" for NFVI-level alarms
    vnfcInstanceIds: list[str] | None = None
    rootCauseFaultyResource: FaultyResourceInfo | None = None
    alarmRaisedTime: datetime
    alarmChangedTime: datetime | None = None
    alarmClearedTime: datetime | None = None
    alarmAcknowledgedTime: datetime | None = None
    ackState: AckState = AckState.UNACKNOWLEDGED
    perceivedSeverity: Severity
    eventTime: datetime
    eventType: EventType
    faultType: str | None = None  # nfvha: the alarm type, e.g. "vm-failure"
    probableCause: str
    isRootCause: bool
    correlatedAlarmIds: list[str] | None = None
    faultDetails: list[str] | None = None
    links: AlarmLinks = Field(alias="_links")


class AlarmModifications(FmModel):
    """Body of ``PATCH /alarms/{id}`` (application/merge-patch+json)."""

    ackState: AckState


# Bounds on what a subscriber sends (ADR 0016): validation stops at the first value
# too many instead of checking, and reporting on, each of thousands.
MAX_FILTER_VALUES = 256
FilterValue = Annotated[str, Field(max_length=1024)]
FilterValues = Annotated[list[FilterValue], Field(max_length=MAX_FILTER_VALUES)]


class VnfInstanceSubscriptionFilter(FmModel):
    vnfdIds: FilterValues | None = None
    vnfInstanceIds: FilterValues | None = None
    vnfInstanceNames: FilterValues | None = None


class FmNotificationsFilter(FmModel):
    vnfInstanceSubscriptionFilter: VnfInstanceSubscriptionFilter | None = None
    notificationTypes: list[NotificationType] | None = Field(None, max_length=16)
    faultyResourceTypes: list[FaultyResourceType] | None = Field(None, max_length=16)
    perceivedSeverities: list[Severity] | None = Field(None, max_length=16)
    eventTypes: list[EventType] | None = Field(None, max_length=16)
    probableCauses: FilterValues | None = None
    # nfvha extension (HW-3): only alarms of these managed objects / resources, e.g.
    # a VNF subscribing to faults of the hosts it runs on.
    managedObjectIds: FilterValues | None = None
    resourceIds: FilterValues | None = None


class SubscriptionAuthentication(FmModel):
    """nfvha signs every notification body with HMAC-SHA256 over this secret."""

    authType: list[Literal["HMAC_SHA256"]] = Field(
        default_factory=lambda: ["HMAC_SHA256"],  # type: ignore[arg-type]
        max_length=4,
    )
    secret: str = Field(min_length=16, max_length=256)


class FmSubscriptionRequest(FmModel):
    filter: FmNotificationsFilter | None = None
    callbackUri: str = Field(min_length=1, max_length=2048)
    authentication: SubscriptionAuthentication | None = None


class SubscriptionLinks(FmModel):
    self_: Link = Field(alias="self")


class FmSubscription(FmModel):
    id: str
    filter: FmNotificationsFilter | None = None
    callbackUri: str
    links: SubscriptionLinks = Field(alias="_links")


class NotificationLinks(FmModel):
    subscription: Link
    alarm: Link | None = None
    alarms: Link | None = None


class AlarmNotification(FmModel):
    id: str  # idempotent: the same notification keeps its id across retries
    notificationType: Literal["AlarmNotification"] = "AlarmNotification"
    subscriptionId: str
    timeStamp: datetime
    alarm: Alarm
    links: NotificationLinks = Field(alias="_links")


class AlarmClearedNotification(FmModel):
    id: str
    notificationType: Literal["AlarmClearedNotification"] = "AlarmClearedNotification"
    subscriptionId: str
    timeStamp: datetime
    alarmId: str
    alarmClearedTime: datetime
    links: NotificationLinks = Field(alias="_links")


class AlarmListRebuiltNotification(FmModel):
    id: str
    notificationType: Literal["AlarmListRebuiltNotification"] = "AlarmListRebuiltNotification"
    subscriptionId: str
    timeStamp: datetime
    links: NotificationLinks = Field(alias="_links")


class HostHealth(FmModel):
    """The health of a compute node as published to MANO (FM-9)."""

    hostName: str
    healthStatus: Literal["HEALTHY", "DEGRADED", "FAILED", "UNKNOWN"]
    reasons: list[str] = Field(default_factory=list)
    alarmIds: list[str] = Field(default_factory=list)  # the active alarms behind it
    changedTime: datetime


class HostHealthChangeNotification(FmModel):
    id: str
    notificationType: Literal["HostHealthChangeNotification"] = "HostHealthChangeNotification"
    subscriptionId: str
    timeStamp: datetime
    previousStatus: str
    hostHealth: HostHealth
    links: NotificationLinks = Field(alias="_links")


Notification = (AlarmNotification | AlarmClearedNotification | AlarmListRebuiltNotification
                | HostHealthChangeNotification)


class ProblemDetails(FmModel):
    """RFC 7807 problem details, as SOL013 prescribes for every error."""

    type: str | None = None
    title: str | None = None
    status: int
    detail: str
    instance: str | None = None
