"""Alarm notifications as Server-Sent Events, for live consumers (dashboards, CLIs).

This is the best-effort companion of the webhook subscriptions (``notifier.py``):
nothing is stored, a consumer sees what is published while it is connected.
Each consumer has its own bounded queue. ``publish`` never waits for a consumer;
one that falls more than ``queue_limit`` frames behind is sent a final
``event: overflow`` frame and disconnected - it must re-read the alarm list
(``GET /alarms``) and reconnect. A comment line (``: keep-alive``) is sent after
``heartbeat_s`` without a frame, so that proxies keep the connection open and a
consumer notices a dead controller.

Frames::

    id: <n>                      (one counter per AlarmStream, from 1)
    event: <notificationType>    (AlarmNotification, AlarmClearedNotification, ...)
    data: <json>

Everything here runs on the event loop thread: call ``publish`` from it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import AsyncGenerator, Callable

from starlette.responses import StreamingResponse

from nfvha.faults.filters import matches
from nfvha.faults.model import Alarm, FmNotificationsFilter, NotificationType

DEFAULT_QUEUE_LIMIT = 10_000
DEFAULT_HEARTBEAT_S = 15.0
KEEP_ALIVE = b": keep-alive\n\n"
CONNECTED = b": connected\n\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _Consumer:
    def __init__(self, filter: FmNotificationsFilter | None) -> None:
        self.filter = filter
        self.frames: deque[bytes] = deque()
        self.ready = asyncio.Event()
        self.overflowed = False
        self.dropped_at_id = 0


class AlarmStream:
    def __init__(
        self, *, queue_limit: int = DEFAULT_QUEUE_LIMIT, heartbeat_s: float = DEFAULT_HEARTBEAT_S
    ) -> None:
        self._queue_limit = queue_limit
        self._heartbeat_s = heartbeat_s
        self._consumers: set[_Consumer] = set()
        self._last_id = 0

    @property
    def consumers(self) -> int:
        return len(self._consumers)

    def publish(
        self, notification_type: NotificationType, payload_json: str | Callable[[], str],
        alarm: Alarm | None
    ) -> int:
        """Send ``payload_json`` to every consumer whose filter admits it (filters
        see ``alarm``, as for subscriptions); return the frame id. A callable payload
        is serialised only if some consumer wants the frame."""
        self._last_id += 1
        frame: bytes | None = None
        for c in list(self._consumers):
            if not matches(c.filter, notification_type, alarm):
                continue
            if frame is None:
                payload = payload_json if isinstance(payload_json, str) else payload_json()
                frame = _frame(self._last_id, notification_type.value, payload)
            if len(c.frames) >= self._queue_limit:
                # Behind by more than the limit: drop it rather than slow down
                # publishing or grow without bound.
                c.overflowed = True
                c.dropped_at_id = self._last_id
                c.frames.clear()
                self._consumers.discard(c)
            else:
                c.frames.append(frame)
            c.ready.set()
        return self._last_id

    async def subscribe(
        self, filter: FmNotificationsFilter | None
    ) -> AsyncGenerator[bytes, None]:
        """SSE frames for one consumer, until it disconnects or overflows.

        The consumer is registered when iteration starts; the first item is a
        ``: connected`` comment, so a caller that has received it knows that
        every later publish reaches it.
        """
        consumer = _Consumer(filter)
        self._consumers.add(consumer)
        try:
            yield CONNECTED
            while True:
                while consumer.frames:
                    yield consumer.frames.popleft()
                if consumer.overflowed:
                    detail = {
                        "detail": f"consumer fell more than {self._queue_limit} frames behind;"
                        " re-read the alarm list and reconnect",
                        "lastEventId": consumer.dropped_at_id,
                    }
                    yield _frame(None, "overflow", json.dumps(detail))
                    return
                consumer.ready.clear()
                try:
                    async with asyncio.timeout(self._heartbeat_s):
                        await consumer.ready.wait()
                except TimeoutError:
                    yield KEEP_ALIVE
        finally:
            self._consumers.discard(consumer)


def _frame(frame_id: int | None, event: str, data: str) -> bytes:
    lines = [f"id: {frame_id}"] if frame_id is not None else []
    lines.append(f"event: {event}")
    # A data line may not contain a line break (SSE knows CR, LF, CRLF); the
    # client joins several data lines with "\n". (Not str.splitlines: it also
    # splits on U+2028 and others, which JSON strings may hold raw.)
    lines.extend(f"data: {part}" for part in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode()


def sse_response(stream: AlarmStream, filter: FmNotificationsFilter | None) -> StreamingResponse:
    return StreamingResponse(
        stream.subscribe(filter),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-cache, no-store",
            "X-Accel-Buffering": "no",  # no buffering in a reverse proxy either
        },
    )
