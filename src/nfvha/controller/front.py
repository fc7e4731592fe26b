"""The API's public address: a front that passes bounded, well-formed requests on to the
controller's own API, a few at a time (ADR 0014 "The API front"; VIM-1, VIM-2).

Two uses. A single controller's front runs in a process of its own
(``nfvha.controller.frontmain``) on the public address, the controller's API on
loopback behind it. A cluster member's front (ADR 0013) runs inside the member and
answers whether it leads or not: ``/v1/cluster`` (who leads, every member's and
every store's state) is answered here; everything else is passed on to the API of the
controller that leads, which is the one with the state. Clients may use any member's
front and move to another when one does not answer; while no leader is elected the
fronts answer 503 with ``Retry-After``.

What reaches the controller through a front:

- **bounded and well-formed** bodies: the body limit (``BodyLimit``, 413) and the
  JSON guard (``json_problem``, 400) of ADR 0016 are applied here, and the body is
  read whole (a slow one for at most ``body_timeout_s``: the HTTP server's) before
  anything is passed on;
- **a few at a time**: at most ``forward_concurrency`` requests are passed on at once
  (``Slots``); more wait in a queue of at most ``forward_queue`` for at most
  ``forward_queue_timeout_s``, else 503 with Retry-After (when the queue is full,
  after Retry-After: a flood is not answered as fast as it asks). The controller's
  event loop never interleaves more than that much API work with the agents' event
  streams. A slot is held until the controller's answer is read whole, not while the client
  takes it: a slow reader holds no slot. Requests that mostly wait (``waits``: the
  SSE streams, long polls, operations on VMs and VNFCs) hold a slot only until the
  controller's answer begins, at most ``forward_start_s``, and count against
  ``forward_waiting`` while they last; their answers are streamed;
- **the client's address** in ``X-Forwarded-For``, which the front sets: whatever a
  client sent in it (or in ``Forwarded``) is dropped, never appended to. The
  controller believes the header only from its fronts (``api/auth.py``).

A plain ASGI application over httpx; hop-by-hop headers are dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from nfvha.controller.slots import NoSlot, Slots
from nfvha.model.api import ApiLimits, is_masakari, waits
from nfvha.util.bodylimit import (
    BodyLimit,
    Receive,
    Scope,
    Send,
    reject_as,
    send_openstack_fault,
    send_problem,
)
from nfvha.util.jsonguard import json_problem

log = logging.getLogger(__name__)


HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
# Set by the front alone: a client's own are dropped.
FORWARDING = frozenset({"x-forwarded-for", "forwarded"})
# An answer of a request that holds a slot is read whole before it is passed back (the
# slot is free while the client takes it); one larger than this is streamed instead.
BUFFERED_ANSWER_MAX = 4 * 1024 * 1024

reject = reject_as(is_masakari)


async def _anyone(_: str | None) -> bool:
    return True


class FrontApp:
    """``upstream_url()``: the API requests are passed on to (None: none now - in a
    cluster, nobody leads). A cluster member's front also answers ``/v1/cluster``
    (``cluster_status()``) and ``/v1/cluster/self`` (``local_status()``: this member
    only, what the members ask each other)."""

    def __init__(self, upstream_url: Callable[[], str | None],
                 cluster_status: Callable[[], dict[str, Any]] | None = None,
                 local_status: Callable[[], dict[str, Any]] | None = None, *,
                 reader: Callable[[str | None], Awaitable[bool]] = _anyone,
                 connect_timeout_s: float = 0.5, limits: ApiLimits | None = None,
                 upstream: str = "the leading controller") -> None:
        """``reader(token)``: may this API token read ``/v1/cluster`` (the passed-on
        requests are checked by the controller's API itself). ``/v1/cluster/self`` is
        public, like ``/v1/health``: the members ask it of each other. ``limits``: the
        request bodies taken, as the controllers' API takes them (ADR 0016), and how
        many requests are passed on at once. ``upstream``: what the answers call the
        API passed on to."""
        lim = limits or ApiLimits()
        self._upstream_url = upstream_url
        self._upstream = upstream
        self._retry_after_s = lim.retry_after_s
        self._bounded = BodyLimit(self._serve, lim.body_limit, reject)
        self._local: dict[str, Callable[[], dict[str, Any]]] = {}
        if cluster_status is not None:
            self._local["/v1/cluster"] = cluster_status
        if local_status is not None:
            self._local["/v1/cluster/self"] = local_status
        self._reader = reader
        self.slots = Slots(lim.forward_concurrency, lim.forward_queue,
                           lim.forward_queue_timeout_s)
        self.waiting = Slots(lim.forward_waiting, lim.forward_queue,
                             lim.forward_queue_timeout_s, "requests that wait")
        self._start_s = lim.forward_start_s
        connections = lim.forward_concurrency + lim.forward_waiting
        self._timeout = httpx.Timeout(lim.forward_timeout_s, connect=connect_timeout_s)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=connect_timeout_s), trust_env=False,
            limits=httpx.Limits(max_connections=connections,
                                max_keepalive_connections=connections,
                                # Before the controller's server closes them idle.
                                keepalive_expiry=lim.keep_alive_timeout_s / 2),
            transport=httpx.AsyncHTTPTransport(retries=0))
        self.proxied = 0
        self._unanswered = 0  # requests the controller did not answer since it last did

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan, websocket: none here
            return
        await self._bounded(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        local = self._local.get(scope["path"])
        if local is not None and scope["method"] == "GET":
            if scope["path"] != "/v1/cluster/self" and not await self._reader(_bearer(scope)):
                await _json(send, 401, {"detail": "missing or unknown API token: send"
                                                  " 'Authorization: Bearer <token>'"},
                            [(b"www-authenticate", b'Bearer realm="nfvha"')])
                return
            await _json(send, 200, local())
            return
        await self._proxy(scope, receive, send)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        base = self._upstream_url()
        if base is None:
            await _unavailable(scope, send, "no controller leads right now; try again",
                               self._retry_after_s)
            return
        body = bytearray()  # at most the body limit: BodyLimit cuts off the rest
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # gone, or cut off at the body limit (answered 413)
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        if body and (problem := json_problem(bytes(body))) is not None:
            await reject(scope, send, 400, problem)
            return
        req = self._http.build_request(scope["method"], _url(base, scope),
                                       headers=_forwarded_headers(scope),
                                       content=bytes(body))
        waiting = waits(scope["method"], scope["path"], scope.get("query_string", b""))
        try:
            if waiting:
                await self._pass_waiting(req, base, scope, send)
            else:
                await self._pass_bounded(req, base, scope, send)
        except NoSlot as e:
            if e.reason == NoSlot.QUEUE_FULL:
                # Answered when the client is told to ask again anyway: a flood that
                # asks again at once asks once per Retry-After, not as fast as this
                # front can refuse (a request that waited its time is answered now).
                await asyncio.sleep(self._retry_after_s)
            await _unavailable(scope, send, f"the API is busy: too many {e.what} now"
                                            f" ({e.reason}); try again", self._retry_after_s)

    async def _pass_bounded(self, req: httpx.Request, base: str, scope: Scope,
                            send: Send) -> None:
        """Within a slot: pass the request on and read the answer whole (unless it is
        large); then, the slot free again, hand the answer to the client."""
        req.extensions["timeout"] = self._timeout.as_dict()
        async with self.slots.slot():
            resp = await self._send(req, base, scope, send)
            if resp is None:
                return
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in resp.aiter_raw():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > BUFFERED_ANSWER_MAX:
                        break
            except httpx.HTTPError as e:
                await resp.aclose()
                await self._broken(e, base, scope, send)
                return
            if size > BUFFERED_ANSWER_MAX:  # large: passed back while the slot is held
                await _start(send, resp)
                for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
                await self._relay(resp, base, send)
                return
            await resp.aclose()
        await _start(send, resp)
        await send({"type": "http.response.body", "body": b"".join(chunks),
                    "more_body": False})

    async def _pass_waiting(self, req: httpx.Request, base: str, scope: Scope,
                            send: Send) -> None:
        """Within the cap of requests that wait; and in a slot while the controller
        starts on it: until its answer begins, at most ``forward_start_s``. What the
        controller does for it at once (the request read, the token checked, an agent
        asked) is done by then; after, it waits. So a flood of such requests (refused
        for want of a token, say) is no more work at once than one of any other."""
        async with self.waiting.slot():
            await self.slots.acquire()
            sending = asyncio.ensure_future(self._send(req, base, scope, send))
            try:
                await asyncio.wait({sending}, timeout=self._start_s)
            except BaseException:
                sending.cancel()
                raise
            finally:
                self.slots.release()
            resp = await sending  # cancelled with us, if the client goes
            if resp is not None:
                await _start(send, resp)
                await self._relay(resp, base, send)

    async def _send(self, req: httpx.Request, base: str, scope: Scope,
                    send: Send) -> httpx.Response | None:
        try:
            resp = await self._http.send(req, stream=True)
        except httpx.HTTPError as e:
            await self._broken(e, base, scope, send)
            return None
        self.proxied += 1
        if self._unanswered:
            log.info("front: %s at %s answers again (%d requests unanswered)",
                     self._upstream, base, self._unanswered)
            self._unanswered = 0
        return resp

    async def _relay(self, resp: httpx.Response, base: str, send: Send) -> None:
        try:
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as e:  # the controller went away mid-answer
            log.info("front: answer from %s broken: %s", base, e)
        finally:
            await resp.aclose()

    async def _broken(self, e: httpx.HTTPError, base: str, scope: Scope, send: Send) -> None:
        """The controller did not answer (no answer has been passed back yet)."""
        if not self._unanswered:  # logged once per outage, not per request of a flood
            log.warning("front: %s at %s does not answer: %s", self._upstream, base, e)
        self._unanswered += 1
        what = "does not answer in time" if isinstance(e, httpx.TimeoutException) \
            else "does not answer"
        await _unavailable(scope, send, f"{self._upstream} {what}: {e or type(e).__name__}",
                           self._retry_after_s)


def _url(base: str, scope: Scope) -> str:
    raw = scope.get("raw_path")
    url = base.rstrip("/") + str(raw.decode() if raw else scope["path"])
    if query := scope.get("query_string", b"").decode():
        url += "?" + query
    return url


def _forwarded_headers(scope: Scope) -> list[tuple[str, str]]:
    """The request's headers to pass on: without hop-by-hop ones and without any the
    client sent about forwarding; with the client's address (the peer's, as this
    server sees it) in ``X-Forwarded-For``."""
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
               if k.decode("latin-1").lower() not in HOP_BY_HOP | FORWARDING]
    client = scope.get("client")
    if client:
        headers.append(("x-forwarded-for", str(client[0])))
    return headers


async def _start(send: Send, resp: httpx.Response) -> None:
    await send({"type": "http.response.start", "status": resp.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in resp.headers.multi_items()
                            if k.lower() not in HOP_BY_HOP - {"content-length"}]})


async def _unavailable(scope: Scope, send: Send, detail: str, retry_after_s: int) -> None:
    """503 with Retry-After, in the shape of the route's other errors; the connection
    stays open."""
    retry = [(b"retry-after", str(retry_after_s).encode())]
    if is_masakari(scope["path"]):
        await send_openstack_fault(send, 503, detail, headers=retry, close=False)
    else:
        await send_problem(send, 503, detail, headers=retry, close=False)


def _bearer(scope: Scope) -> str | None:
    for k, v in scope["headers"]:
        if k.lower() == b"authorization" and v[:7].lower() == b"bearer ":
            return v[7:].decode().strip() or None
        if k.lower() == b"x-auth-token":
            return v.decode() or None
    return None


async def _json(send: Send, status: int, body: Any,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data, "more_body": False})
