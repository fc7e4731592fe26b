"""Which notifications a subscription wants (ETSI SOL003 7.5.3.2 FmNotificationsFilter).

Semantics, as the standard gives them for subscription filters:

* an absent attribute matches everything;
* every present attribute must match (AND across attributes, also inside
  ``vnfInstanceSubscriptionFilter``);
* a list attribute matches if the notification has one of its values (OR within
  a list). An *empty* list is treated like an absent one: a consumer sending
  ``"perceivedSeverities": []`` means "no restriction", not "nothing".

How nfvha alarms map onto the attributes:

* ``vnfInstanceSubscriptionFilter.vnfInstanceIds`` and ``.vnfInstanceNames`` match
  ``alarm.managedObjectId`` (nfvha names VNF instances by their name);
  ``.vnfdIds`` matches a ``vnfdId=<id>`` entry of ``alarm.faultDetails`` - an
  alarm that does not say which VNFD it concerns does not match a VNFD filter;
* ``faultyResourceTypes`` and the nfvha extension ``resourceIds`` match the
  alarm's ``rootCauseFaultyResource`` (an alarm without one does not match them);
* ``perceivedSeverities``, ``eventTypes``, ``probableCauses`` match the alarm's
  fields of the same name; the nfvha extension ``managedObjectIds`` matches
  ``alarm.managedObjectId`` (e.g. ``host/<name>`` for a VNF that wants the
  hardware faults of the hosts it runs on, HW-3).

An ``AlarmClearedNotification`` is matched against the alarm it clears; an
``AlarmListRebuiltNotification`` concerns no alarm (``alarm=None``) and is
matched on ``notificationTypes`` alone, so that every consumer whose filter
admits the type learns that its view of the alarm list must be refreshed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TypeVar

from nfvha.faults.model import (
    Alarm,
    FmNotificationsFilter,
    NotificationType,
    VnfInstanceSubscriptionFilter,
)

T = TypeVar("T")

VNFD_ID_DETAIL = "vnfdId="


def matches(
    filter: FmNotificationsFilter | None,
    notification_type: NotificationType,
    alarm: Alarm | None,
) -> bool:
    """True if a subscription with ``filter`` is to receive this notification."""
    if notification_type == NotificationType.HOST_HEALTH_CHANGE:
        # An nfvha extension: only for subscriptions that ask for it by name, so
        # consumers of the standard never see a type they do not know.
        return filter is not None and notification_type in (filter.notificationTypes or [])
    if filter is None:
        return True
    if not _admits(filter.notificationTypes, notification_type):
        return False
    if alarm is None:
        # Only AlarmListRebuiltNotification has no alarm: nothing else to compare.
        return True
    root = alarm.rootCauseFaultyResource
    return (
        _vnf_instance_matches(filter.vnfInstanceSubscriptionFilter, alarm)
        and _admits(filter.perceivedSeverities, alarm.perceivedSeverity)
        and _admits(filter.eventTypes, alarm.eventType)
        and _admits(filter.probableCauses, alarm.probableCause)
        and _admits(filter.managedObjectIds, alarm.managedObjectId)
        and _admits_optional(
            filter.faultyResourceTypes, root.faultyResourceType if root else None
        )
        and _admits_optional(filter.resourceIds, root.faultyResource.resourceId if root else None)
    )


def _vnf_instance_matches(f: VnfInstanceSubscriptionFilter | None, alarm: Alarm) -> bool:
    if f is None:
        return True
    return (
        _admits(f.vnfInstanceIds, alarm.managedObjectId)
        and _admits(f.vnfInstanceNames, alarm.managedObjectId)
        and _any_admitted(f.vnfdIds, _vnfd_ids(alarm))
    )


def _vnfd_ids(alarm: Alarm) -> list[str]:
    return [
        d[len(VNFD_ID_DETAIL):] for d in alarm.faultDetails or [] if d.startswith(VNFD_ID_DETAIL)
    ]


def _admits(allowed: Sequence[T] | None, value: T) -> bool:
    return not allowed or value in allowed


def _admits_optional(allowed: Sequence[T] | None, value: T | None) -> bool:
    if not allowed:
        return True
    return value is not None and value in allowed


def _any_admitted(allowed: Sequence[T] | None, values: Collection[T]) -> bool:
    if not allowed:
        return True
    return any(v in allowed for v in values)
