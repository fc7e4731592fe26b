"""Webhook delivery of alarm notifications: ETSI shape, signature, retries,
order, isolation of bad subscribers, restart from the outbox, unsubscribe."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from notify_testutil import (
    API_ROOT,
    NotifierFactory,
    Receiver,
    Request,
    make_alarm,
    poll_until,
    refused_url,
)

import nfvha.faults.notifier as notifier_module
from nfvha.faults.model import (
    Alarm,
    AlarmClearedNotification,
    AlarmListRebuiltNotification,
    AlarmNotification,
    FmNotificationsFilter,
    FmSubscriptionRequest,
    NotificationType,
    SubscriptionAuthentication,
)
from nfvha.faults.notifier import SIGNATURE_HEADER, Notifier
from nfvha.faults.outbox import Outbox
from nfvha.model.events import EventType, Severity

MakeReceiver = Callable[..., Awaitable[Receiver]]
ALARM = NotificationType.ALARM


def request(url: str, flt: FmNotificationsFilter | None = None,
            secret: str | None = None) -> FmSubscriptionRequest:
    auth = SubscriptionAuthentication(secret=secret) if secret else None
    return FmSubscriptionRequest(callbackUri=url, filter=flt, authentication=auth)


def accepted_count(rx: Receiver, k: int) -> Callable[[], bool]:
    return lambda: len(rx.accepted()) == k


def publish_alarms(n: Notifier, count: int, prefix: str = "a") -> list[str]:
    ids: list[str] = []
    for i in range(count):
        ids += n.publish(ALARM, make_alarm(f"{prefix}{i}"), api_root=API_ROOT)
    return ids


async def test_notifications_are_etsi_objects_with_links_and_ids(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    rx = await receivers()
    n = await notifiers()
    sub = n.subscribe(request(rx.url), API_ROOT + "/")
    assert sub.links.self_.href == f"{API_ROOT}/subscriptions/{sub.id}"
    assert n.get_subscription(sub.id, API_ROOT) == sub
    assert n.subscriptions(API_ROOT) == [sub]

    alarm = make_alarm("a1")
    cleared_at = datetime(2027, 1, 15, 13, 0, tzinfo=UTC)
    ids = n.publish(ALARM, alarm, api_root=API_ROOT)
    ids += n.publish(NotificationType.ALARM_CLEARED, alarm, alarm_cleared_time=cleared_at,
                     api_root=API_ROOT)
    ids += n.publish(NotificationType.ALARM_LIST_REBUILT, None, api_root=API_ROOT)
    assert len(ids) == 3
    await rx.wait_for_accepted(ids, within=5)

    reqs = rx.accepted()
    assert [r.notification_id for r in reqs] == ids
    assert all(r.method == "POST" and r.path == "/notify" for r in reqs)
    assert all(r.headers["content-type"] == "application/json" for r in reqs)
    assert all(SIGNATURE_HEADER.lower() not in r.headers for r in reqs)  # no authentication

    raised = AlarmNotification.model_validate_json(reqs[0].body)
    assert raised.id == ids[0] and raised.subscriptionId == sub.id
    assert raised.alarm == alarm
    assert raised.links.subscription.href == sub.links.self_.href
    cleared = AlarmClearedNotification.model_validate_json(reqs[1].body)
    assert (cleared.alarmId, cleared.alarmClearedTime) == ("a1", cleared_at)
    assert cleared.links.alarm is not None
    assert cleared.links.alarm.href == f"{API_ROOT}/alarms/a1"
    rebuilt = AlarmListRebuiltNotification.model_validate_json(reqs[2].body)
    assert rebuilt.links.alarms is not None
    assert rebuilt.links.alarms.href == f"{API_ROOT}/alarms"
    # exclude_none: no nulls on the wire
    assert "null" not in reqs[0].body.decode()
    assert json.loads(reqs[0].body)["_links"]["subscription"]["href"] == sub.links.self_.href


async def test_signature_is_hmac_sha256_of_the_exact_body(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    secret = "s3cret-s3cret-s3cret"
    verified: list[bool] = []

    async def verify(req: Request, _n: int) -> int:
        header = req.headers.get(SIGNATURE_HEADER.lower(), "")
        expected = hmac.new(secret.encode(), req.body, hashlib.sha256).hexdigest()
        ok = header.startswith("sha256=") and hmac.compare_digest(header[7:], expected)
        verified.append(ok)
        return 204 if ok else 401

    rx = await receivers(verify)
    n = await notifiers()
    n.subscribe(request(rx.url, secret=secret), API_ROOT)
    ids = publish_alarms(n, 3)
    await rx.wait_for_accepted(ids, within=5)
    assert verified == [True, True, True]

    # A receiver with another secret rejects them, so they are retried, not lost.
    wrong: list[bool] = []

    async def verify_wrong(req: Request, _n: int) -> int:
        expected = hmac.new(b"another-secret-xxxx", req.body, hashlib.sha256).hexdigest()
        wrong.append(req.headers[SIGNATURE_HEADER.lower()] == f"sha256={expected}")
        return 401

    rx2 = await receivers(verify_wrong)
    n.subscribe(request(rx2.url, secret=secret), API_ROOT)
    n.publish(ALARM, make_alarm("x"), api_root=API_ROOT)
    await rx2.wait_until(lambda: len(rx2.requests) >= 2, within=5)
    assert not any(wrong)
    assert rx2.requests[0].notification_id == rx2.requests[1].notification_id


async def test_failed_deliveries_are_retried_with_exponential_backoff(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    async def fail_three_times(_req: Request, n: int) -> int:
        return 500 if n < 3 else 204

    rx = await receivers(fail_three_times)
    n = await notifiers(backoff_initial_s=0.05, backoff_max_s=1.0)
    sub = n.subscribe(request(rx.url), API_ROOT)
    [nid] = n.publish(ALARM, make_alarm(), api_root=API_ROOT)
    await rx.wait_for_accepted([nid], within=5)

    assert [r.notification_id for r in rx.requests] == [nid] * 4  # same id every time
    assert [r.status for r in rx.requests] == [500, 500, 500, 204]
    gaps = [b.mono - a.mono for a, b in zip(rx.requests, rx.requests[1:], strict=False)]
    for gap, nominal in zip(gaps, [0.05, 0.1, 0.2], strict=True):
        assert nominal * 0.9 <= gap < nominal * 1.1 + 0.15, gaps
    s = n.stats()["subscriptions"][sub.id]
    assert s["failed_attempts_since_start"] == 3
    assert s["last_error"] == "HTTP 500"
    await poll_until(lambda: n.stats()["subscriptions"][sub.id]["delivered_total"] == 1)
    assert n.stats()["subscriptions"][sub.id]["pending"] == 0


async def test_backoff_is_capped_and_a_timeout_counts_as_failure(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    async def stall_first_then_fail_then_accept(_req: Request, n: int) -> int:
        if n == 0:
            await asyncio.sleep(3)  # longer than timeout_s: the notifier gives up
        return 503 if n < 4 else 204

    rx = await receivers(stall_first_then_fail_then_accept)
    n = await notifiers(timeout_s=0.2, backoff_initial_s=0.04, backoff_max_s=0.06)
    sub = n.subscribe(request(rx.url), API_ROOT)
    [nid] = n.publish(ALARM, make_alarm(), api_root=API_ROOT)
    await rx.wait_for_accepted([nid], within=5)
    assert len(rx.requests) == 5
    assert rx.requests[1].mono - rx.requests[0].mono >= 0.2  # waited for the timeout
    gaps = [b.mono - a.mono for a, b in zip(rx.requests[1:], rx.requests[2:], strict=False)]
    assert all(g < 0.06 * 1.1 + 0.1 for g in gaps), gaps  # capped at backoff_max_s
    assert gaps[-1] >= 0.06 * 0.9
    s = n.stats()["subscriptions"][sub.id]
    assert (s["failed_attempts_since_start"], s["last_error"]) == (4, "HTTP 503")


async def test_order_per_subscriber_is_kept_across_retries(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    async def flaky(_req: Request, n: int) -> int:
        return 500 if n % 3 == 1 else 204

    rx = await receivers(flaky)
    n = await notifiers(backoff_initial_s=0.005, backoff_max_s=0.02)
    n.subscribe(request(rx.url), API_ROOT)
    ids = publish_alarms(n, 30)
    await rx.wait_for_accepted(ids, within=10)
    assert rx.accepted_ids() == ids
    # Never ahead of an unacknowledged one: the attempts' positions never go back.
    position = {nid: i for i, nid in enumerate(ids)}
    attempted = [position[r.notification_id] for r in rx.requests]
    assert attempted == sorted(attempted)
    assert len(rx.requests) > len(ids)  # there were retries


async def test_pipelined_delivery_when_more_in_flight_is_allowed(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    active = 0
    peak = 0

    async def slowish(_req: Request, _n: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return 204

    rx = await receivers(slowish)
    n = await notifiers(max_in_flight_per_subscriber=4)
    n.subscribe(request(rx.url), API_ROOT)
    ids = publish_alarms(n, 12)
    await rx.wait_for_accepted(ids, within=5)
    assert 1 < peak <= 4
    assert [r.notification_id for r in rx.requests] == ids  # first attempts in order


@pytest.mark.req("FM-6")
async def test_dead_and_slow_subscribers_do_not_delay_twenty_healthy_ones(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    async def sleepy(_req: Request, _n: int) -> int:
        await asyncio.sleep(5)
        return 204

    slow = await receivers(sleepy)
    healthy = [await receivers() for _ in range(20)]
    n = await notifiers(timeout_s=2.0, backoff_initial_s=0.05)
    # The bad ones subscribe first, so they are first in every publish.
    dead_sub = n.subscribe(request(refused_url()), API_ROOT)
    slow_sub = n.subscribe(request(slow.url), API_ROOT)
    for rx in healthy:
        n.subscribe(request(rx.url), API_ROOT)

    latencies: list[float] = []
    for i in range(10):
        t0 = time.monotonic()
        ids = n.publish(ALARM, make_alarm(f"a{i}"), api_root=API_ROOT)
        assert len(ids) == 22
        for rx in healthy:
            await rx.wait_until(accepted_count(rx, i + 1), within=2)
            latencies.append(rx.accepted()[-1].mono - t0)
    latencies.sort()
    print(f"\n20 healthy + dead + slow: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms,"
          f" max {latencies[-1] * 1000:.1f} ms")
    assert max(latencies) < 0.1, f"max {max(latencies) * 1000:.1f} ms"
    for rx in healthy:
        assert len(rx.accepted_ids()) == 10
    # The bad ones are still on their first notification, all ten kept for them.
    assert [r.notification_id for r in slow.requests] == [slow.requests[0].notification_id]
    stats = n.stats()["subscriptions"]
    assert stats[dead_sub.id]["pending"] == 10
    assert stats[dead_sub.id]["failed_attempts_since_start"] >= 1
    assert "ConnectionRefused" in (stats[dead_sub.id]["last_error"] or "")
    assert stats[slow_sub.id]["pending"] == 10


@pytest.mark.req("FM-6")
async def test_subscribers_get_only_what_their_filter_selects(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    """Filtering by resource, type and severity through the subscription."""
    everything, by_resource, by_type, by_severity, cleared_only = [
        await receivers() for _ in range(5)
    ]
    n = await notifiers()
    n.subscribe(request(everything.url), API_ROOT)
    n.subscribe(request(by_resource.url, FmNotificationsFilter(resourceIds=["vm/b"])),
                API_ROOT)
    n.subscribe(request(by_type.url, FmNotificationsFilter(
        eventTypes=[EventType.COMMUNICATIONS_ALARM])), API_ROOT)
    n.subscribe(request(by_severity.url, FmNotificationsFilter(
        perceivedSeverities=[Severity.MINOR, Severity.WARNING])), API_ROOT)
    n.subscribe(request(cleared_only.url, FmNotificationsFilter(
        notificationTypes=[NotificationType.ALARM_CLEARED])), API_ROOT)

    a = make_alarm("a", resource_id="vm/a", severity=Severity.CRITICAL)
    b = make_alarm("b", resource_id="vm/b", severity=Severity.WARNING)
    c = make_alarm("c", resource_id="link/h1/eth0", event_type=EventType.COMMUNICATIONS_ALARM)
    for alarm in (a, b, c):
        n.publish(ALARM, alarm, api_root=API_ROOT)
    n.publish(NotificationType.ALARM_CLEARED, b, api_root=API_ROOT)
    await everything.wait_until(lambda: len(everything.accepted()) == 4, within=5)
    await cleared_only.wait_until(lambda: len(cleared_only.accepted()) == 1, within=5)

    def got(rx: Receiver) -> list[tuple[str, str]]:
        out = []
        for r in rx.accepted():
            body = json.loads(r.body)
            out.append((body["notificationType"], body.get("alarm", {}).get("id")
                        or body.get("alarmId")))
        return out

    # Everything was published before the last one reached `everything`; the
    # others were matched at publish time, so their queues are final - but wait
    # for their deliveries too.
    await by_resource.wait_until(lambda: len(by_resource.accepted()) == 2, within=5)
    await by_type.wait_until(lambda: len(by_type.accepted()) == 1, within=5)
    await by_severity.wait_until(lambda: len(by_severity.accepted()) == 2, within=5)
    assert got(by_resource) == [("AlarmNotification", "b"), ("AlarmClearedNotification", "b")]
    assert got(by_type) == [("AlarmNotification", "c")]
    assert got(by_severity) == [("AlarmNotification", "b"), ("AlarmClearedNotification", "b")]
    assert got(cleared_only) == [("AlarmClearedNotification", "b")]


@pytest.mark.req("HW-3")
async def test_vnf_gets_direct_notice_of_hardware_faults_of_its_own_hosts_only(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    """The VNF on h1 and h3 subscribes to the hardware alarms of those hosts."""
    vnf, operator = await receivers(), await receivers()
    n = await notifiers()
    n.subscribe(request(vnf.url, FmNotificationsFilter(
        managedObjectIds=["host/h1", "host/h3"], eventTypes=[EventType.EQUIPMENT_ALARM])),
        API_ROOT)
    n.subscribe(request(operator.url), API_ROOT)

    def hw(alarm_id: str, host: str) -> Alarm:
        return make_alarm(alarm_id, managed_object=f"host/{host}", resource_id=f"host/{host}",
                          event_type=EventType.EQUIPMENT_ALARM,
                          probable_cause="host-hardware-failure")

    alarms = [hw("h1-temp", "h1"), hw("h2-temp", "h2"), hw("h3-ecc", "h3"), hw("h4-fan", "h4")]
    for alarm in alarms:
        n.publish(ALARM, alarm, api_root=API_ROOT)
    n.publish(NotificationType.ALARM_CLEARED, alarms[0], api_root=API_ROOT)
    n.publish(NotificationType.ALARM_CLEARED, alarms[1], api_root=API_ROOT)
    await operator.wait_until(accepted_count(operator, 6), within=5)
    await vnf.wait_until(accepted_count(vnf, 3), within=5)
    got = [json.loads(r.body) for r in vnf.accepted()]
    assert [(g["notificationType"], g.get("alarm", {}).get("id") or g.get("alarmId"))
            for g in got] == [("AlarmNotification", "h1-temp"), ("AlarmNotification", "h3-ecc"),
                              ("AlarmClearedNotification", "h1-temp")]


async def test_restart_resumes_every_unacknowledged_notification(
    notifiers: NotifierFactory, receivers: MakeReceiver, outbox_path: Path
) -> None:
    gate = asyncio.Event()

    async def accept_five_then_wait_for_gate(_req: Request, n: int) -> int:
        return 204 if n < 5 or gate.is_set() else 503

    rx = await receivers(accept_five_then_wait_for_gate)
    first = await notifiers(backoff_initial_s=0.02, backoff_max_s=0.05)
    first.subscribe(request(rx.url, secret="0123456789abcdef"), API_ROOT)
    # More than a worker keeps in memory, so the rest is read back from the outbox.
    ids = publish_alarms(first, notifier_module.MEMORY_QUEUE_LIMIT + 50)
    await rx.wait_until(lambda: any(r.status == 503 for r in rx.requests), within=5)
    await first.close()  # the controller goes away mid-backlog
    assert len(rx.accepted_ids()) == 5

    gate.set()
    second = await notifiers(backoff_initial_s=0.02)  # same outbox file
    await rx.wait_for_accepted(ids, within=15)
    assert rx.accepted_ids() == ids  # all of them, in order, duplicates aside
    await poll_until(lambda: second.stats()["pending"] == 0)
    assert second.stats()["delivered_total"] == len(ids)


async def test_worker_spills_to_the_outbox_without_losing_or_reordering(
    notifiers: NotifierFactory, receivers: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiny memory queue and pages: publishes race with reads from the outbox."""
    monkeypatch.setattr(notifier_module, "MEMORY_QUEUE_LIMIT", 3)
    monkeypatch.setattr(notifier_module, "OUTBOX_PAGE", 4)

    async def jittery(_req: Request, n: int) -> int:
        if n % 5 == 0:
            await asyncio.sleep(0.002)
        return 204

    rx = await receivers(jittery)
    n = await notifiers()
    n.subscribe(request(rx.url), API_ROOT)
    ids: list[str] = []
    for burst in range(40):
        ids += publish_alarms(n, 1 + burst % 7, prefix=f"b{burst}-")
        await asyncio.sleep(0)  # let the worker run between bursts
    await rx.wait_for_accepted(ids, within=15)
    assert rx.accepted_ids() == ids


async def test_unsubscribe_stops_delivery_and_drops_the_backlog(
    notifiers: NotifierFactory, receivers: MakeReceiver, outbox_path: Path
) -> None:
    async def refuse(_req: Request, _n: int) -> int:
        return 503

    failing = await receivers(refuse)
    other = await receivers()
    n = await notifiers(backoff_initial_s=0.01, backoff_max_s=0.02)
    sub = n.subscribe(request(failing.url), API_ROOT)
    n.subscribe(request(other.url), API_ROOT)
    publish_alarms(n, 3)
    await failing.wait_until(lambda: len(failing.requests) >= 3, within=5)

    assert n.unsubscribe(sub.id) is True
    attempts = len(failing.requests)
    assert n.unsubscribe(sub.id) is False
    assert n.get_subscription(sub.id, API_ROOT) is None
    assert sub.id not in n.stats()["subscriptions"]
    ids = publish_alarms(n, 1, prefix="after")
    assert len(ids) == 1  # only `other`
    await other.wait_for_accepted(ids, within=5)
    # Observe for many backoff periods (≤ 20 ms each): no attempt comes any more.
    await asyncio.sleep(0.3)
    assert len(failing.requests) <= attempts + 1  # at most the one already on the wire
    check = Outbox(outbox_path)
    try:
        assert check.pending(sub.id) == []
        assert check.subscription(sub.id) is None
    finally:
        check.close()


@pytest.mark.parametrize(
    "uri",
    ["ftp://127.0.0.1/cb", "file:///etc/passwd", "http://", "/relative/path", "127.0.0.1:80",
     "http://[::1"],
)
async def test_unusable_callback_uri_is_refused(notifiers: NotifierFactory, uri: str) -> None:
    n = await notifiers()
    with pytest.raises(ValueError, match="callbackUri"):
        n.subscribe(request(uri), API_ROOT)
    assert n.subscriptions(API_ROOT) == []


async def test_publish_needs_an_alarm_and_a_started_notifier(
    notifiers: NotifierFactory, outbox_path: Path
) -> None:
    n = await notifiers()
    with pytest.raises(ValueError):
        n.publish(ALARM, None, api_root=API_ROOT)
    assert n.publish(NotificationType.ALARM_LIST_REBUILT, None, api_root=API_ROOT) == []
    ob = Outbox(outbox_path)
    idle = Notifier(ob, n.clock)
    try:
        with pytest.raises(RuntimeError):
            idle.publish(ALARM, make_alarm(), api_root=API_ROOT)
    finally:
        await idle.close()
        ob.close()

