"""Managing the API tokens through the API (VNFHA-12), admin role only.

A new token's secret is in the answer to its ``POST`` and nowhere else: the store
keeps its SHA-256 only. Every route goes to the controller's ``TokenStore``: SQLite
beside the controller's other files (one controller: it survives a restart) or
PostgreSQL (a cluster: a token added through one member is accepted at once by every
member, since unknown tokens are always looked up). A deletion is refused at once by
the replica that served it; the others keep accepting the token for up to their
``TokenCheck`` cache time (2 s), and a replica whose store does not answer still
accepts its cached and its configured tokens. A deleted token that is in a
controller's configuration is put back when that controller starts: remove it there
too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nfvha.model.auth import TokenEntry, new_token, token_hash
from nfvha.store.base import StoreUnavailable
from nfvha.store.tokens import TokenCheck

T = TypeVar("T")

SHA256 = r"^[0-9a-f]{64}$"


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["reader", "operator", "admin"]
    name: str = Field("", max_length=64,
                      description="a short label: who or what the token is for")

    @field_validator("name")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in v):
            raise ValueError("a label is one line of printable characters")
        return v


class TokenInfo(BaseModel):
    sha256: str = Field(description="the SHA-256 of the secret, hex: the token's id")
    role: Literal["reader", "operator", "admin"]
    name: str


class NewToken(TokenInfo):
    token: str = Field(description="the secret; shown this once, never stored")


def _info(e: TokenEntry) -> TokenInfo:
    return TokenInfo.model_validate(e.model_dump())


def tokens_router(check: TokenCheck, *, store_timeout_s: float = 5.0) -> APIRouter:
    """``store_timeout_s``: how long a request waits for the store (PostgreSQL's own
    statement timeout is 5 s); no answer in time is a 503."""
    router = APIRouter()
    store = check.store
    # The last-admin check and the delete must not interleave with another delete.
    deleting = asyncio.Lock()

    async def call(fn: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, *args), store_timeout_s)
        except (StoreUnavailable, TimeoutError) as e:
            raise HTTPException(503, f"the token store does not answer: {e or 'timed out'};"
                                     " it may or may not have been changed",
                                headers={"Retry-After": "1"}) from None

    @router.post("", status_code=201)
    async def add_token(body: TokenRequest) -> NewToken:
        """A new token with the given role. The secret is in this answer only."""
        secret = new_token()
        entry = TokenEntry(sha256=token_hash(secret), role=body.role, name=body.name)
        if not await call(store.put, entry):  # 256 random bits: a clash is a broken RNG
            raise HTTPException(500, "a token with this hash exists already")
        return NewToken(token=secret, **_info(entry).model_dump())

    @router.get("")
    async def list_tokens() -> list[TokenInfo]:
        """Every token: hash, role, label (never a secret)."""
        return [_info(e) for e in await call(store.all)]

    @router.delete("/{sha256}", status_code=204, response_class=Response)
    async def delete_token(sha256: Annotated[str, Path(pattern=SHA256)]) -> Response:
        """Delete a token (by its SHA-256). The last admin token cannot be deleted:
        nobody could manage tokens any more. This replica refuses the token at once;
        other API replicas may accept it for up to their token cache time (2 s). A
        token in a controller's configuration comes back when that controller starts."""
        async with deleting:
            entries = await call(store.all)
            entry = next((e for e in entries if e.sha256 == sha256), None)
            if entry is None:
                raise HTTPException(404, f"no token with SHA-256 {sha256}")
            if entry.role == "admin" and sum(e.role == "admin" for e in entries) == 1:
                raise HTTPException(409, "this is the last admin token: add another admin"
                                         " token before deleting it")
            if not await call(store.delete, sha256):
                raise HTTPException(404, f"no token with SHA-256 {sha256}")
            check.forget(sha256)
        return Response(status_code=204)

    return router
