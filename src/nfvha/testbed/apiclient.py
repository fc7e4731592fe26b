"""API clients that move between the controllers' front addresses by themselves (VIM-2).

Every member of a controller cluster answers on its front address; a client given
all of them sends to the one that answered last and, when it does not answer (no
connection, or 503: it has no leader to pass the request to), tries the next one,
up to ``rounds`` times round the list. A request that went out and got no answer is
not sent again unless its method is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _moved(request: httpx.Request, base: httpx.URL) -> httpx.Request:
    url = request.url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
    headers = httpx.Headers(request.headers)
    headers["host"] = url.netloc.decode()
    return httpx.Request(request.method, url, headers=headers, content=request.content,
                         extensions=request.extensions)


class FailoverTransport(httpx.AsyncBaseTransport):
    def __init__(self, urls: Sequence[str], *, rounds: int = 3, pause_s: float = 0.2,
                 inner: httpx.AsyncBaseTransport | None = None) -> None:
        if not urls:
            raise ValueError("no API address")
        self.urls = [httpx.URL(u) for u in urls]
        self._rounds = rounds
        self._pause_s = pause_s
        self._inner = inner or httpx.AsyncHTTPTransport(retries=0)
        self.current = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        last: Exception | None = None
        for attempt in range(self._rounds * len(self.urls)):
            if attempt and attempt % len(self.urls) == 0:
                await asyncio.sleep(self._pause_s)  # a whole round failed: an election
            i = (self.current + attempt) % len(self.urls)
            try:
                resp = await self._inner.handle_async_request(_moved(request, self.urls[i]))
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last = e  # never sent: safe to send elsewhere
                continue
            except httpx.TransportError as e:
                if request.method not in IDEMPOTENT:
                    raise
                last = e
                continue
            if resp.status_code == 503 and "retry-after" in resp.headers:
                await resp.aread()
                await resp.aclose()
                last = httpx.HTTPStatusError("no leader", request=request, response=resp)
                continue
            self.current = i
            return resp
        assert last is not None
        if isinstance(last, httpx.HTTPStatusError):
            return last.response
        raise last

    async def aclose(self) -> None:
        await self._inner.aclose()


def failover_client(urls: Sequence[str], **kwargs: object) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` over every front address (``base_url``: the first)."""
    return httpx.AsyncClient(base_url=urls[0], transport=FailoverTransport(urls),
                             **kwargs)  # type: ignore[arg-type]


def member_state(front_url: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """A member's own view (``/v1/cluster/self``); None if it does not answer."""
    try:
        r = httpx.get(f"{front_url}/v1/cluster/self", timeout=timeout_s)
        body: dict[str, Any] = r.json()
        return body
    except (httpx.HTTPError, ValueError):
        return None


# The inventory listings (``/v1/hosts``, ``/v1/vms``, ``/v1/vnfcs``) are paged: this
# many per request, the most the API gives.
PAGE_LIMIT = 2000


async def get_all(client: httpx.AsyncClient, path: str,
                  params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of a paged listing: one page after another, following the
    ``Link: rel="next"`` header, until the last. Raises httpx.HTTPStatusError."""
    items: list[Any] = []
    r = await client.get(path, params={"limit": PAGE_LIMIT, **(params or {})})
    while True:
        r.raise_for_status()
        items.extend(r.json())
        following = r.links.get("next", {}).get("url")
        if not following:
            return items
        r = await client.get(following)


async def full_status(client: httpx.AsyncClient) -> dict[str, Any]:
    """``/v1/status`` (the summary) with every host, VM and VNFC listed under
    ``hosts``, ``vms`` and ``vnfcs`` beside it (as ``status``, ``hosts``, ...): for
    tests and tools that look at small deployments item by item."""
    r = await client.get("/v1/status")
    r.raise_for_status()
    status: dict[str, Any] = r.json()
    hosts, vms, vnfcs = await asyncio.gather(get_all(client, "/v1/hosts"),
                                             get_all(client, "/v1/vms"),
                                             get_all(client, "/v1/vnfcs"))
    return {"status": status, "run_id": status["run_id"],
            "last_event_id": status["last_event_id"], "hosts": hosts, "vms": vms,
            "vnfcs": vnfcs}
