"""API credentials as configuration: tokens (as hashes) and their roles."""

from __future__ import annotations

import hashlib
import secrets
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field


class Role(IntEnum):
    READER = 1
    OPERATOR = 2
    ADMIN = 3


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: str = Field(pattern=r"^(reader|operator|admin)$")
    name: str = ""


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tokens: list[TokenEntry] = Field(default_factory=list)
    intake_trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8"])
    # Where the API's fronts pass requests on from (ADR 0014 "The API front"): from
    # these addresses ``X-Forwarded-For`` names the client, which the front sets.
    front_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)
