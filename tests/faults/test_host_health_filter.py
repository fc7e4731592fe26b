"""HostHealthChangeNotification is an extension: only subscriptions naming it get it."""

from __future__ import annotations

import pytest

from nfvha.faults.filters import matches
from nfvha.faults.model import FmNotificationsFilter, NotificationType

HEALTH = NotificationType.HOST_HEALTH_CHANGE


@pytest.mark.req("FM-9")
@pytest.mark.parametrize(("flt", "expected"), [
    (None, False),  # a plain ETSI subscription (no filter) never sees it
    (FmNotificationsFilter(), False),
    (FmNotificationsFilter(perceivedSeverities=["CRITICAL"]), False),  # type: ignore[list-item]
    (FmNotificationsFilter(notificationTypes=[NotificationType.ALARM]), False),
    (FmNotificationsFilter(notificationTypes=[HEALTH]), True),
    (FmNotificationsFilter(notificationTypes=[NotificationType.ALARM, HEALTH]), True),
])
def test_host_health_notifications_are_opt_in(flt: FmNotificationsFilter | None,
                                              expected: bool) -> None:
    assert matches(flt, HEALTH, None) is expected
