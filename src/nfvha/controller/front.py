"""Every controller's public API address (VIM-1, VIM-2; ADR 0013).

Each member of a cluster answers on its front address, whether it leads or not:
``/v1/cluster`` (who leads, every member's and every store's state) is answered
here; everything else is passed on to the API of the controller that leads, which
is the one with the state (agent sessions, alarms in memory, the VNFM). Clients may
use any member's front and move to another when one does not answer; while no
leader is elected the fronts answer 503 with ``Retry-After``.

A plain ASGI application over httpx: requests and responses are streamed, so the
alarm stream (SSE) and long polls pass through; hop-by-hop headers are dropped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from nfvha.model.api import ApiLimits, is_masakari
from nfvha.util.bodylimit import BodyLimit, Receive, Scope, Send, reject_as

log = logging.getLogger(__name__)


HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


async def _anyone(_: str | None) -> bool:
    return True


class FrontApp:
    """``leader_url()``: the leading controller's API (None: nobody leads);
    ``cluster_status()``: the body of ``/v1/cluster``; ``local_status()``: of
    ``/v1/cluster/self`` (this member only: what the members ask each other)."""

    def __init__(self, leader_url: Callable[[], str | None],
                 cluster_status: Callable[[], dict[str, Any]],
                 local_status: Callable[[], dict[str, Any]], *,
                 reader: Callable[[str | None], Awaitable[bool]] = _anyone,
                 connect_timeout_s: float = 0.5, limits: ApiLimits | None = None) -> None:
        """``reader(token)``: may this API token read ``/v1/cluster`` (the passed-on
        requests are checked by the leader's API itself). ``/v1/cluster/self`` is
        public, like ``/v1/health``: the members ask it of each other. ``limits``: the
        request bodies taken, as the controllers' API takes them (ADR 0016): a body
        too large is refused here, not read and passed on."""
        self._leader_url = leader_url
        self._bounded = BodyLimit(self._serve, (limits or ApiLimits()).body_limit,
                                  reject_as(is_masakari))
        self._local: dict[str, Callable[[], dict[str, Any]]] = {
            "/v1/cluster": cluster_status, "/v1/cluster/self": local_status}
        self._reader = reader
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=connect_timeout_s), trust_env=False,
            transport=httpx.AsyncHTTPTransport(retries=0))
        self.proxied = 0

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
        base = self._leader_url()
        if base is None:
            await _json(send, 503, {"detail": "no controller leads right now; try again"},
                        [(b"retry-after", b"1")])
            return
        body = bytearray()  # at most the body limit: BodyLimit cuts off the rest
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # gone, or cut off at the body limit (answered 413)
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        raw = scope.get("raw_path")
        url = base.rstrip("/") + (raw.decode() if raw else scope["path"])
        if query := scope.get("query_string", b"").decode():
            url += "?" + query
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"]
                   if k.decode().lower() not in HOP_BY_HOP]
        client = scope.get("client")
        if client:
            headers.append(("x-forwarded-for", str(client[0])))
        req = self._http.build_request(scope["method"], url, headers=headers,
                                       content=bytes(body))
        try:
            resp = await self._http.send(req, stream=True)
        except httpx.TransportError as e:
            log.info("front: the leader's API %s does not answer: %s", base, e)
            await _json(send, 503, {"detail": f"the leading controller does not answer: {e}"},
                        [(b"retry-after", b"1")])
            return
        self.proxied += 1
        try:
            await send({"type": "http.response.start", "status": resp.status_code,
                        "headers": [(k.encode(), v.encode())
                                    for k, v in resp.headers.multi_items()
                                    if k.lower() not in HOP_BY_HOP - {"content-length"}]})
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.TransportError as e:  # the leader went away mid-response
            log.info("front: response from %s broken: %s", base, e)
        finally:
            await resp.aclose()


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
