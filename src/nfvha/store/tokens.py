"""API tokens in a store, so that every API replica can check every token (VNFHA-12).

Only hashes are stored (``model.auth.token_hash``); the secret is shown once when
the token is made. One controller keeps them in SQLite (``SqliteTokenStore``,
``<run>/controller/tokens.db``: a token added through the API survives a restart),
seeded from its configuration at every start; a cluster keeps them in PostgreSQL
(``store.pg_stores.PgTokenStore``), where a token added through one replica is
known to all of them at once. ``MemoryTokenStore`` is for tests and tools.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from nfvha.model.auth import Role, TokenEntry, token_hash
from nfvha.store.base import StoreUnavailable
from nfvha.store.schema import open_store
from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


class TokenStore(Protocol):
    def put(self, entry: TokenEntry) -> bool:
        """Add a token; False if its hash is stored already (it is left as it is)."""
        ...

    def get(self, sha256: str) -> TokenEntry | None: ...

    def delete(self, sha256: str) -> bool: ...

    def all(self) -> list[TokenEntry]:
        """Every token, ordered by hash."""
        ...

    def close(self) -> None: ...


class MemoryTokenStore:
    def __init__(self, entries: Iterable[TokenEntry] = ()) -> None:
        self._lock = threading.Lock()
        self._tokens = {e.sha256: e for e in entries}

    def put(self, entry: TokenEntry) -> bool:
        with self._lock:
            if entry.sha256 in self._tokens:
                return False
            self._tokens[entry.sha256] = entry
            return True

    def get(self, sha256: str) -> TokenEntry | None:
        with self._lock:
            return self._tokens.get(sha256)

    def delete(self, sha256: str) -> bool:
        with self._lock:
            return self._tokens.pop(sha256, None) is not None

    def all(self) -> list[TokenEntry]:
        with self._lock:
            return [self._tokens[k] for k in sorted(self._tokens)]

    def close(self) -> None:
        pass


class SqliteTokenStore:
    """One controller's tokens, in their own SQLite file (schema ``tokens``). Thread-safe:
    ``TokenCheck`` and the API call it from worker threads."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self._lock = threading.Lock()
        self._db = open_store(path, "tokens", fsync=fsync)

    def put(self, entry: TokenEntry) -> bool:
        with self._lock:
            try:
                cur = self._db.execute(
                    "INSERT INTO tokens(sha256, role, name) VALUES (?, ?, ?)"
                    " ON CONFLICT(sha256) DO NOTHING", (entry.sha256, entry.role, entry.name))
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e
            return cur.rowcount == 1

    def get(self, sha256: str) -> TokenEntry | None:
        rows = self._select("WHERE sha256 = ?", (sha256,))
        return rows[0] if rows else None

    def delete(self, sha256: str) -> bool:
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM tokens WHERE sha256 = ?", (sha256,))
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e
            return cur.rowcount == 1

    def all(self) -> list[TokenEntry]:
        return self._select("ORDER BY sha256", ())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _select(self, tail: str, params: tuple[str, ...]) -> list[TokenEntry]:
        with self._lock:
            try:
                rows = self._db.execute(f"SELECT sha256, role, name FROM tokens {tail}",
                                        params).fetchall()
            except sqlite3.Error as e:
                raise StoreUnavailable(str(e)) from e
        return [TokenEntry(sha256=r[0], role=r[1], name=r[2]) for r in rows]


def seed_tokens(store: TokenStore, entries: Iterable[TokenEntry]) -> int:
    """Put the configuration's tokens in the store (those not there yet); how many
    were added. Raises StoreUnavailable."""
    return sum(store.put(e) for e in entries)


class TokenCheck:
    """Which role a presented token has, by the shared store (VNFHA-12): a token put
    there through any replica is accepted by every replica at its next request.

    Known tokens are cached for ``cache_s`` (a deletion takes that long to reach every
    replica); unknown ones are asked again each time, so that a new token works at
    once. While the store does not answer (within ``lookup_timeout_s``), a token is
    checked against the cache, stale or not, and the ``fallback`` tokens (the
    configuration's): the API stays usable by its operators through a database
    outage."""

    def __init__(self, store: TokenStore, fallback: Iterable[TokenEntry] = (),
                 clock: Clock = SYSTEM_CLOCK, *, cache_s: float = 2.0,
                 lookup_timeout_s: float = 1.0) -> None:
        self._store = store
        self._fallback = {e.sha256: e for e in fallback}
        self._clock = clock
        self._cache_ns = int(cache_s * 1e9)
        self._timeout_s = lookup_timeout_s
        self._cache: dict[str, tuple[TokenEntry, int]] = {}  # hash -> (entry, until)

    @property
    def store(self) -> TokenStore:
        return self._store

    def forget(self, sha256: str) -> None:
        """Drop a token from this replica's cache (it was deleted through this replica:
        refused here at once; other replicas take up to ``cache_s``)."""
        self._cache.pop(sha256, None)

    async def role_of(self, token: str | None) -> Role | None:
        if not token:
            return None
        digest = token_hash(token)
        now = self._clock.mono_ns()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[1]:
            return _role(cached[0])
        try:
            entry = await asyncio.wait_for(asyncio.to_thread(self._store.get, digest),
                                           self._timeout_s)
        except (StoreUnavailable, TimeoutError) as e:
            log.warning("token store unavailable, checking cached and configured tokens: %s",
                        e or "timed out")
            known = cached[0] if cached is not None else self._fallback.get(digest)
            return _role(known) if known is not None else None
        if entry is None:
            self._cache.pop(digest, None)
            return None
        self._cache[digest] = (entry, now + self._cache_ns)
        return _role(entry)


def _role(entry: TokenEntry) -> Role:
    return Role[entry.role.upper()]
