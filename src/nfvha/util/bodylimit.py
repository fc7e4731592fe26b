"""A request body limit as plain ASGI middleware (ADR 0016).

A ``Content-Length`` over the limit is answered 413 at once, before the application
runs or a byte of the body is read (the server holds at most what it read ahead:
uvicorn stops reading at 64 KiB). A body without one
(chunked) is counted as the application reads it; the read that passes the limit
is answered 413 there, the application is told the client went away and whatever
it answers afterwards is dropped. Nothing beyond the limit is ever handed on, so
nothing larger is ever allocated for a request. The 413 closes the connection: the
rest of the body is never read.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: that one runs the
application in a task of its own and passes the body through a stream; this is a
wrapper around ``receive`` and ``send`` and nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]
# (scope, send, status, message): answer the request with this status and message.
Reject = Callable[[Scope, Send, int, str], Awaitable[None]]

PROBLEM_JSON = b"application/problem+json"
_TITLES = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
           503: "Service Unavailable"}
# OpenStack's fault names (nova's and masakari's ``api/openstack/wsgi.py``).
_FAULT_NAMES = {400: "badRequest", 413: "overLimit", 503: "serviceUnavailable"}


async def send_problem(send: Send, status: int, detail: str, *,
                       headers: Headers = (), close: bool = True) -> None:
    """RFC 7807 problem details (SOL013)."""
    body = json.dumps({"title": _TITLES.get(status, "Error"), "status": status,
                       "detail": detail}).encode()
    await send_json(send, status, body, PROBLEM_JSON, headers=headers, close=close)


async def send_openstack_fault(send: Send, status: int, message: str, *,
                               headers: Headers = (), close: bool = True) -> None:
    """An OpenStack API's fault, ``{"badRequest": {"code": 400, "message": ...}}``:
    what openstacksdk reads the message from."""
    fault = {_FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}}
    await send_json(send, status, json.dumps(fault).encode(), headers=headers, close=close)


async def send_json(send: Send, status: int, body: bytes,
                    content_type: bytes = b"application/json", *,
                    headers: Headers = (), close: bool = True) -> None:
    """The whole answer, by default closing the connection: a refused body is left
    unread. ``headers``: more of them."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()),
                            *([(b"connection", b"close")] if close else []), *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def reject_as(openstack: Callable[[str], bool]) -> Reject:
    """Refusals as OpenStack faults on the paths ``openstack(path)`` names (an
    OpenStack-compatible API), as problem details on every other."""
    async def reject(scope: Scope, send: Send, status: int, message: str) -> None:
        if openstack(scope["path"]):
            await send_openstack_fault(send, status, message)
        else:
            await send_problem(send, status, message)
    return reject


async def reject_as_problem(scope: Scope, send: Send, status: int, message: str) -> None:
    await send_problem(send, status, message)


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, None if it has none (or one that is no number:
    the HTTP server rejects those before the application sees them)."""
    for k, v in scope.get("headers", ()):
        if k.lower() == b"content-length":
            return int(v) if v.strip().isdigit() else None
    return None


def too_large(limit: int) -> str:
    return f"the request body is larger than this API takes here: at most {limit} bytes"


class BodyLimit:
    """``limit_for(path)``: the largest body, in bytes, a request to ``path`` may have;
    ``reject``: how a 413 is answered (by default problem+json)."""

    def __init__(self, app: App, limit_for: Callable[[str], int],
                 reject: Reject = reject_as_problem) -> None:
        self.app = app
        self._limit_for = limit_for
        self._reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        length = declared_length(scope)
        if length is not None and length > limit:
            await self._reject(scope, send, 413, too_large(limit))
            return
        cut = _Cut()

        async def counted_receive() -> Message:
            if cut.off:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                cut.received += len(msg.get("body", b""))
                if cut.received > limit:
                    cut.off = True
                    if not cut.started:
                        cut.answered = True
                        await self._reject(scope, send, 413, too_large(limit))
                    # For the application the client has gone: it stops reading.
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: Message) -> None:
            if cut.answered:
                return  # answered 413 already; the application's late answer goes nowhere
            if msg["type"] == "http.response.start":
                cut.started = True
            await send(msg)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not cut.answered:
                raise
            # The application failed on the body it was refused: answered already.


class _Cut:
    """One request's count: bytes received; cut off; its response started by the
    application; answered 413 by us."""

    __slots__ = ("answered", "off", "received", "started")

    def __init__(self) -> None:
        self.received = 0
        self.off = False
        self.started = False
        self.answered = False
