"""Subscribers on the real test bed: a VM crash reaches a webhook subscriber, signed,
and the live SSE stream (FM-6, FM-1, FM-9's notification half)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import pytest
from bedkit import Bed

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]

SECRET = "an-nfvha-test-secret"


class WebhookReceiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that answers 204 and keeps what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, int]] = []  # headers, body, mono ns
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/notify"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.received.append((headers, body, time.monotonic_ns()))
                self.arrived.set()
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b, _ in self.received]

    async def wait_for(self, pred: Any, timeout_s: float = 10.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            for body in self.bodies():
                if pred(body):
                    return body
            self.arrived.clear()
            remaining = end - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"not received; got {self.bodies()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


@pytest.mark.req("FM-6")
@pytest.mark.req("FM-1")
async def test_vm_crash_reaches_a_filtered_signed_subscriber(bed: Bed) -> None:
    rx = WebhookReceiver()
    url = await rx.start()
    try:
        r = await bed.client.post("/vnffm/v1/subscriptions", json={
            "callbackUri": url, "authentication": {"secret": SECRET},
            "filter": {"perceivedSeverities": ["CRITICAL", "CLEARED"],
                       "vnfInstanceSubscriptionFilter": {"vnfInstanceIds": ["gw"]}}})
        assert r.status_code == 201, r.text
        inj = bed.faults.inject("vm-crash", "vm-b")
        note = await rx.wait_for(lambda b: b.get("alarm", {}).get("faultType") == "vm-failure")
        headers, body, got_ns = next(x for x in rx.received if json.loads(x[1]) == note)
        assert note["notificationType"] == "AlarmNotification"
        assert note["alarm"]["managedObjectId"] == "gw"
        assert headers["x-nfvha-notification-id"] == note["id"]
        want = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-nfvha-signature"], want)
        # Fault to subscriber, end to end, well inside the documents' 1 s.
        assert (got_ns - inj.injected_mono_ns) / 1e6 < 1000
        # The filter kept the MAJOR VNFC alarm away.
        assert all(b.get("alarm", {}).get("perceivedSeverity") != "MAJOR" for b in rx.bodies())
        # Repair: the clearing reaches the subscriber too.
        assert (await bed.client.post("/v1/vms/vm-b/start")).status_code == 200
        cleared = await rx.wait_for(
            lambda b: b["notificationType"] == "AlarmClearedNotification"
            and b["alarmId"] == note["alarm"]["id"])
        assert cleared["alarmClearedTime"]
    finally:
        await rx.close()


async def test_live_stream_of_alarm_changes(bed: Bed) -> None:
    registered = asyncio.Event()

    async def first_alarm_event() -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=bed.tb.api_url, timeout=15,
                                     headers=bed.tb.headers) as c, \
                c.stream("GET", "/v1/alarms/stream") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            event = None
            async for line in resp.aiter_lines():
                if line.startswith(": connected"):
                    registered.set()  # the stream has us: what follows is ours
                elif line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event == "AlarmNotification":
                    return dict(json.loads(line.split(":", 1)[1]))
        raise AssertionError("stream ended")

    watcher = asyncio.create_task(first_alarm_event())
    await asyncio.wait_for(registered.wait(), 10)
    bed.faults.inject("vnfc-crash", "db-1")
    got = await asyncio.wait_for(watcher, 10)
    assert got["alarm"]["faultType"] == "vnfc-failure"


async def test_controller_killed_mid_storm_loses_no_alarm_and_no_notification(
        bed: Bed) -> None:
    rx = WebhookReceiver()
    url = await rx.start()
    try:
        r = await bed.client.post("/vnffm/v1/subscriptions", json={"callbackUri": url})
        assert r.status_code == 201, r.text
        # A storm across hosts, and the controller killed in the middle of it.
        bed.faults.inject("vnfc-crash", "gw-a")
        bed.faults.inject("host-process-crash", "h2")
        bed.faults.inject("vm-crash", "vm-b")
        bed.faults.inject("controller-crash", "controller")
        bed.faults.inject("vnfc-crash", "db-1")
        bed.faults.inject("host-process-crash", "h1")
        bed.tb.start_controller()
        await bed.tb.wait_ready()
        expected = {("vnfc-failure", "vnfc/gw-a"), ("vnfc-failure", "vnfc/db-1"),
                    ("vm-failure", "vm/vm-b"), ("host-software-failure", "host/h1"),
                    ("host-software-failure", "host/h2")}
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:
            alarms = (await bed.client.get("/vnffm/v1/alarms")).json()
            have = {(a["faultType"], a["rootCauseFaultyResource"]["faultyResource"]
                     ["resourceId"]) for a in alarms}
            notified = {b["alarm"]["id"] for b in rx.bodies()
                        if b["notificationType"] == "AlarmNotification"}
            if expected <= have and {a["id"] for a in alarms} <= notified:
                break
            assert loop.time() < end, (f"missing alarms {expected - have}, unnotified"
                                       f" {[a['id'] for a in alarms if a['id'] not in notified]}")
            await asyncio.sleep(0.1)
        # At-least-once, never twice the same alarm under a new identity.
        per_key: dict[tuple[str, str], set[str]] = {}
        for a in alarms:
            key = (a["faultType"], a["rootCauseFaultyResource"]["faultyResource"]["resourceId"])
            if a["perceivedSeverity"] != "CLEARED":
                per_key.setdefault(key, set()).add(a["id"])
        assert all(len(ids) == 1 for ids in per_key.values()), per_key
    finally:
        await rx.close()


@pytest.mark.req("FM-9")
async def test_host_health_published_to_mano_api_and_notification(bed: Bed) -> None:
    rx = WebhookReceiver()
    url = await rx.start()
    try:
        r = await bed.client.post("/vnffm/v1/subscriptions", json={
            "callbackUri": url,
            "filter": {"notificationTypes": ["HostHealthChangeNotification"],
                       "managedObjectIds": ["host/h2"]}})
        assert r.status_code == 201, r.text
        health = {h["hostName"]: h for h in (await bed.client.get("/v1/hosts/health")).json()}
        assert health["h1"]["healthStatus"] == health["h2"]["healthStatus"] == "HEALTHY"
        bed.faults.inject("host-down", "h2")
        failed = await rx.wait_for(lambda b: b["hostHealth"]["healthStatus"] == "FAILED")
        assert failed["notificationType"] == "HostHealthChangeNotification"
        assert failed["previousStatus"] in ("HEALTHY", "DEGRADED")
        assert any(r.startswith("host-failure") for r in failed["hostHealth"]["reasons"])
        h2 = (await bed.client.get("/v1/hosts/h2/health")).json()
        assert h2["healthStatus"] == "FAILED" and h2["alarmIds"]
        bed.faults.inject("host-up", "h2")
        await rx.wait_for(lambda b: b["hostHealth"]["healthStatus"] == "HEALTHY")
        # Only h2 was asked for; and no plain alarm reached this health-only subscriber.
        assert all(b["hostHealth"]["hostName"] == "h2" for b in rx.bodies())
    finally:
        await rx.close()
