"""API tokens in a store, so that every API replica can check every token (VNFHA-12).

Only hashes are stored (``model.auth.token_hash``); the secret is shown once when
the token is made. One controller keeps them in memory, seeded from its
configuration (``MemoryTokenStore``); a cluster keeps them in PostgreSQL
(``store.pg_stores.PgTokenStore``), where a token added through one replica is
known to all of them at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Protocol

from nfvha.model.auth import TokenEntry


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
