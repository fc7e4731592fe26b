"""The VIM's public API as a VNF's own AM uses it: an operator token, JSON answers,
one exception for every way a call can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from nfvha.model.events import StoredEvent

_EVENTS = TypeAdapter(list[StoredEvent])
LISTING_PAGE = 2000  # items per page of an inventory listing: the most the VIM gives


class VimError(RuntimeError):
    """A call that failed: ``status`` is the HTTP status, or None when no answer came
    (``sent`` False: the request never left, so sending it again cannot repeat it)."""

    def __init__(self, message: str, status: int | None = None, *, sent: bool = True
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.sent = sent


def read_token(path: Path) -> str:
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path}: empty token file")
    return token


class VimClient:
    """``base_url``: the VIM's API (``http://ip:port``). The token needs the operator
    role (repairs are writes). ``timeout_s`` bounds a call that is not a long poll or
    a repair (those say how long they may take)."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, transport=transport,
            headers={"Authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      timeout_s: float | None = None) -> Any:
        try:
            r = await self._http.request(method, path, params=params,
                                         timeout=timeout_s or self.timeout_s)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise VimError(f"{method} {path}: the VIM does not answer ({e})", sent=False) from e
        except httpx.HTTPError as e:
            raise VimError(f"{method} {path}: {type(e).__name__} {e}") from e
        if r.status_code >= 400:
            raise VimError(f"{method} {path}: {r.status_code} {_detail(r)}", r.status_code)
        try:
            return r.json()
        except ValueError as e:
            raise VimError(f"{method} {path}: not JSON: {r.text[:200]!r}", r.status_code) from e

    # -- reads -----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        got: dict[str, Any] = await self.request("GET", "/v1/status")
        return got

    async def listing(self, path: str, params: dict[str, Any] | None = None
                      ) -> list[dict[str, Any]]:
        """Every item of a paged inventory listing (``/v1/vms``, ``/v1/vnfcs``): page
        after page, as the ``Link: rel="next"`` header names them."""
        items: list[dict[str, Any]] = []
        page: dict[str, Any] | None = {"limit": LISTING_PAGE, **(params or {})}
        while page is not None:
            try:
                r = await self._http.get(path, params=page)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                raise VimError(f"GET {path}: the VIM does not answer ({e})", sent=False) from e
            except httpx.HTTPError as e:
                raise VimError(f"GET {path}: {type(e).__name__} {e}") from e
            if r.status_code >= 400:
                raise VimError(f"GET {path}: {r.status_code} {_detail(r)}", r.status_code)
            try:
                items.extend(r.json())
            except ValueError as e:
                raise VimError(f"GET {path}: not JSON: {r.text[:200]!r}", r.status_code) from e
            following = r.links.get("next", {}).get("url")
            page = None
            if following:
                url = httpx.URL(following)
                path, page = url.path, dict(url.params)
        return items

    async def vms(self, vnf: str) -> list[dict[str, Any]]:
        """The VMs of ``vnf`` (its components' VMs and their standby VMs)."""
        return await self.listing("/v1/vms", {"vnf": vnf})

    async def vnfcs(self, vnf: str) -> list[dict[str, Any]]:
        return await self.listing("/v1/vnfcs", {"vnf": vnf})

    async def placement(self) -> dict[str, str]:
        got: dict[str, str] = await self.request("GET", "/v1/placement")
        return got

    async def vm_repairs(self) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = await self.request("GET", "/v1/vm-repairs")
        return got

    async def events(self, after: int, *, wait_s: float = 0.0, limit: int = 1000
                     ) -> list[StoredEvent]:
        """Events after id ``after``, in id order; with ``wait_s``, a long poll."""
        raw = await self.request("GET", "/v1/events",
                                 params={"after": after, "wait": wait_s, "limit": limit},
                                 timeout_s=wait_s + self.timeout_s)
        try:
            return sorted(_EVENTS.validate_python(raw), key=lambda e: e.id)
        except ValidationError as e:
            raise VimError(f"GET /v1/events: unreadable events: {e}") from e

    # -- operations --------------------------------------------------------------------
    async def vnfc(self, name: str, action: str) -> dict[str, Any]:
        got: dict[str, Any] = await self.request("POST", f"/v1/vnfcs/{name}/{action}")
        return got

    async def vm(self, name: str, action: str, *, params: dict[str, Any] | None = None,
                 timeout_s: float | None = None) -> dict[str, Any]:
        got: dict[str, Any] = await self.request("POST", f"/v1/vms/{name}/{action}",
                                                 params=params, timeout_s=timeout_s)
        return got


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]
