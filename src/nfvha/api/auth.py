"""API tokens with roles: reader < operator < admin. No anonymous writes.

Tokens are random 256-bit secrets, shown once (``<run>/controller/tokens.json``,
mode 0600) and configured as SHA-256 hashes, so the controller's config leaks no
credential. Reads need ``reader``, writes need ``operator``; managing tokens
(``/v1/tokens``) needs ``admin``. A token goes in
``Authorization: Bearer <token>`` (or ``X-Auth-Token``, which keystoneauth-based
clients send).

Existing Masakari and Doctor monitors are configured without credentials
(openstacksdk ``auth_type='none'``); they may write to the intake endpoints only
from trusted networks (by default loopback and the run's management fabric, where
the hosts' monitors live). Set ``intake_trusted_networks`` to ``[]`` to require a
token there too.

Behind a front (ADR 0014 "The API front") every request comes from the front's
address; the front puts the client's own in ``X-Forwarded-For``, replacing whatever
the client sent there. The header is believed only from the fronts' addresses
(``front_networks``, by default loopback), and only as one address: from there, a
header the front did not write (two of them, a list, not an address) makes the
source unknown, which no network trusts.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from fastapi import Request, Response

from nfvha.api.problems import problem
from nfvha.model.auth import AuthConfig, Role, token_hash
from nfvha.store.tokens import TokenCheck

PUBLIC_PATHS = frozenset({"/v1/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"})
# What Masakari and Doctor monitors use: notifications, and the segment/host reads.
INTAKE_PREFIXES = ("/v1/notifications", "/v1/segments", "/doctor/events")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PATHS = ("/v1/tokens",)  # and what is under them


class Authenticator:
    def __init__(self, cfg: AuthConfig, store: TokenCheck | None = None) -> None:
        """``store``: in a cluster, tokens are checked against the shared store
        (VNFHA-12: one added through any replica is accepted by all); otherwise
        against the configuration's."""
        self._tokens = [(t.sha256, Role[t.role.upper()]) for t in cfg.tokens]
        self._trusted = [ipaddress.ip_network(n) for n in cfg.intake_trusted_networks]
        self._fronts = [ipaddress.ip_network(n) for n in cfg.front_networks]
        self._store = store

    def role_of(self, token: str | None) -> Role | None:
        if not token:
            return None
        digest = token_hash(token)
        for known, role in self._tokens:
            if hmac.compare_digest(known, digest):
                return role
        return None

    def trusted_source(self, host: str | None) -> bool:
        return _within(host, self._trusted)

    def source(self, request: Request) -> str | None:
        """The client's address: the peer's, or from one of the fronts, the one it
        forwards (None: not known)."""
        peer = request.client.host if request.client else None
        forwarded = request.headers.getlist("x-forwarded-for")
        if not forwarded or not _within(peer, self._fronts):
            return peer
        if len(forwarded) != 1:
            return None
        claimed = forwarded[0].strip()
        return claimed if _within(claimed, ANY_ADDRESS) else None

    async def middleware(self, request: Request,
                         call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if path in PUBLIC_PATHS:
            return await call_next(request)
        token = _token(request)
        role = self.role_of(token) if self._store is None else \
            await self._store.role_of(token)
        needed = Role.READER if request.method in READ_METHODS else Role.OPERATOR
        if any(path == p or path.startswith(p + "/") for p in ADMIN_PATHS):
            needed = Role.ADMIN
        if role is None:
            intake = path.startswith(INTAKE_PREFIXES) or path in ("/v1", "/v1/")
            client = self.source(request)
            # keystoneauth's no-auth plugin sends "X-Auth-Token: notused": from a trusted
            # network an unknown token on the intake counts as no token.
            if intake and self.trusted_source(client):
                return await call_next(request)
            resp = problem(401, "missing or unknown API token: send 'Authorization: Bearer"
                                " <token>'", "Unauthorized")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="nfvha"'
            return resp
        if role < needed:
            return problem(403, f"this needs the {needed.name.lower()} role; the token has"
                                f" {role.name.lower()}", "Forbidden")
        return await call_next(request)


ANY_ADDRESS = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]


def _within(host: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
            ) -> bool:
    if host is None:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in networks)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-auth-token") or None
