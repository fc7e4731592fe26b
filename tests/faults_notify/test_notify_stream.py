"""Server-Sent Events for live consumers: frames, filters, heartbeat, overflow,
and the HTTP response over a real server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncGenerator

import httpx
import uvicorn
from notify_testutil import LOOPBACK, make_alarm, poll_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nfvha.faults.model import FmNotificationsFilter, NotificationType
from nfvha.faults.stream import CONNECTED, KEEP_ALIVE, AlarmStream, sse_response
from nfvha.model.events import Severity

ALARM = NotificationType.ALARM


async def connect(stream: AlarmStream, flt: FmNotificationsFilter | None = None
                  ) -> AsyncGenerator[bytes, None]:
    frames = stream.subscribe(flt)
    assert await anext(frames) == CONNECTED  # registered from here on
    return frames


async def next_frame(frames: AsyncGenerator[bytes, None]) -> bytes:
    async with asyncio.timeout(2):
        return await anext(frames)


async def test_frames_carry_id_type_and_payload_and_follow_the_filter() -> None:
    stream = AlarmStream()
    everything = await connect(stream)
    minor_only = await connect(stream, FmNotificationsFilter(perceivedSeverities=[Severity.MINOR]))
    critical = make_alarm("a1", severity=Severity.CRITICAL)
    minor = make_alarm("a2", severity=Severity.MINOR)
    assert stream.publish(ALARM, '{"n": 1}', critical) == 1
    assert stream.publish(NotificationType.ALARM_CLEARED, '{"n": 2}', minor) == 2
    assert stream.publish(NotificationType.ALARM_LIST_REBUILT, '{"n": 3}', None) == 3

    assert await next_frame(everything) == b'id: 1\nevent: AlarmNotification\ndata: {"n": 1}\n\n'
    assert await next_frame(everything) == (
        b'id: 2\nevent: AlarmClearedNotification\ndata: {"n": 2}\n\n')
    assert await next_frame(everything) == (
        b'id: 3\nevent: AlarmListRebuiltNotification\ndata: {"n": 3}\n\n')
    assert await next_frame(minor_only) == (
        b'id: 2\nevent: AlarmClearedNotification\ndata: {"n": 2}\n\n')
    assert await next_frame(minor_only) == (  # list rebuilt: no alarm to filter on
        b'id: 3\nevent: AlarmListRebuiltNotification\ndata: {"n": 3}\n\n')
    assert stream.consumers == 2
    for frames in (everything, minor_only):
        await frames.aclose()
    assert stream.consumers == 0


async def test_line_breaks_in_the_payload_become_several_data_lines() -> None:
    stream = AlarmStream()
    frames = await connect(stream)
    stream.publish(ALARM, '{\n "a": "x\u2028y"\r\n}', None)
    assert await next_frame(frames) == (
        'id: 1\nevent: AlarmNotification\ndata: {\ndata:  "a": "x\u2028y"\ndata: }\n\n'
    ).encode()
    await frames.aclose()


async def test_heartbeat_comment_when_nothing_happens() -> None:
    stream = AlarmStream(heartbeat_s=0.05)
    frames = await connect(stream)
    t0 = time.monotonic()
    assert await next_frame(frames) == KEEP_ALIVE
    assert await next_frame(frames) == KEEP_ALIVE
    assert time.monotonic() - t0 >= 0.09
    stream.publish(ALARM, "{}", None)
    assert (await next_frame(frames)).startswith(b"id: 1\n")
    await frames.aclose()


async def test_a_consumer_too_far_behind_is_dropped_with_an_overflow_frame() -> None:
    stream = AlarmStream()  # the default limit: 10,000 frames
    laggard = await connect(stream)
    at_limit = await connect(stream)
    t0 = time.monotonic()
    for i in range(10_000):
        stream.publish(ALARM, f'{{"i": {i}}}', None)
    # at_limit catches up exactly at the limit: it stays.
    for i in range(10_000):
        assert (await next_frame(at_limit)).startswith(f"id: {i + 1}\n".encode())
    stream.publish(ALARM, '{"i": 10000}', None)  # the laggard is now 10,001 behind
    publish_s = time.monotonic() - t0
    assert stream.consumers == 1
    overflow = await next_frame(laggard)
    head, data = overflow.decode().split("data: ")
    assert head == "event: overflow\n"
    assert json.loads(data)["lastEventId"] == 10_001
    with contextlib.suppress(StopAsyncIteration):
        await next_frame(laggard)
        raise AssertionError("the laggard must be disconnected")
    assert (await next_frame(at_limit)).startswith(b"id: 10001\n")
    # Publishing never waited for anyone: 10,001 frames for two consumers.
    assert publish_s < 2.0
    await at_limit.aclose()


async def test_sse_response_streams_over_http_and_cleans_up_on_disconnect() -> None:
    stream = AlarmStream()

    async def events(request: Request) -> Response:
        severities = request.query_params.getlist("severity")
        flt = FmNotificationsFilter.model_validate(
            {"perceivedSeverities": severities}) if severities else None
        return sse_response(stream, flt)

    app = Starlette(routes=[Route("/alarms/stream", events)])
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=1))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await poll_until(lambda: server.started)
        url = f"http://{LOOPBACK}:{port}/alarms/stream?severity=MAJOR"
        async with (httpx.AsyncClient(trust_env=False) as client,
                    client.stream("GET", url, timeout=5) as resp):
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert "no-cache" in resp.headers["cache-control"]
            lines = resp.aiter_lines()
            assert await anext(lines) == ": connected"
            stream.publish(ALARM, '{"skip": true}', make_alarm("m", severity=Severity.MINOR))
            stream.publish(ALARM, '{"take": true}', make_alarm("j", severity=Severity.MAJOR))
            got = [await anext(lines) for _ in range(3)]
            assert got == ["", "id: 2", "event: AlarmNotification"]
            assert await anext(lines) == 'data: {"take": true}'
        # The client went away: its consumer is removed.
        await poll_until(lambda: stream.consumers == 0)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 5)
        sock.close()
