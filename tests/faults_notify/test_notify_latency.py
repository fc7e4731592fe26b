"""Publish-to-receipt latency with 100 loopback subscribers, with and without a
dead one. The figures are printed (``pytest -s``); the assertions are loose
sanity bounds, since the receivers share the notifier's event loop and CPU."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from notify_testutil import (
    API_ROOT,
    NotifierFactory,
    Receiver,
    make_alarm,
    percentile,
    refused_url,
)

from nfvha.faults.model import FmSubscriptionRequest, NotificationType
from nfvha.faults.notifier import Notifier

MakeReceiver = Callable[..., Awaitable[Receiver]]
SUBSCRIBERS = 100
ROUNDS = 15


async def _rounds(n: Notifier, rxs: list[Receiver], tag: str) -> list[float]:
    """Publish one alarm at a time; per round, wait for every subscriber to have it."""
    latencies: list[float] = []
    for i in range(ROUNDS):
        before = [len(rx.accepted()) for rx in rxs]
        t0 = time.monotonic()
        n.publish(NotificationType.ALARM, make_alarm(f"{tag}{i}"), api_root=API_ROOT)
        for rx, k in zip(rxs, before, strict=True):
            await rx.wait_until(lambda rx=rx, k=k: len(rx.accepted()) > k, within=5)  # type: ignore[misc]
            latencies.append(rx.accepted()[k].mono - t0)
    return latencies


async def test_publish_to_receipt_latency_with_100_subscribers(
    notifiers: NotifierFactory, receivers: MakeReceiver
) -> None:
    rxs = [await receivers() for _ in range(SUBSCRIBERS)]
    n = await notifiers(backoff_initial_s=0.05)
    for rx in rxs:
        n.subscribe(FmSubscriptionRequest(callbackUri=rx.url), API_ROOT)
    await _rounds(n, rxs, "warm")  # connections made
    healthy = await _rounds(n, rxs, "h")

    n.subscribe(FmSubscriptionRequest(callbackUri=refused_url()), API_ROOT)
    with_dead = await _rounds(n, rxs, "d")

    def fmt(xs: list[float]) -> str:
        return (f"p50 {percentile(xs, 50) * 1000:.1f} ms, p99 {percentile(xs, 99) * 1000:.1f} ms,"
                f" max {max(xs) * 1000:.1f} ms")

    print(f"\n{SUBSCRIBERS} subscribers, {ROUNDS} rounds: {fmt(healthy)}")
    print(f"{SUBSCRIBERS} subscribers + 1 dead: {fmt(with_dead)}")
    assert percentile(healthy, 99) < 1.0
    assert percentile(with_dead, 99) < 1.0
