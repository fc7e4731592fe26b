"""The store contract the controller depends on.

Patroni's lesson: keep the contract small and say how it fails. A store that
cannot be reached raises ``StoreUnavailable``; "already there" is an answer
(``False``), not an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from nfvha.model.events import Event, StoredEvent


class StoreUnavailable(Exception):
    """The store cannot be reached or written; the caller must not acknowledge."""


# One arrival: events received together, with the controller's wall and monotonic time.
Arrival = tuple[Sequence[Event], float, int]


class EventStore(Protocol):
    def append(self, events: Sequence[Event], received_time: float,
               received_mono_ns: int) -> list[StoredEvent]:
        """Store events atomically; agent events already stored (same host and seq) are
        skipped. Returns the newly stored ones, with ids."""
        ...

    def append_groups(self, groups: Sequence[Arrival]) -> list[list[StoredEvent]]:
        """``append`` for several arrivals in one transaction (group commit): all or
        nothing. Returns the newly stored events of each arrival, in order."""
        ...

    def last_seq(self, host: str) -> int:
        """The highest agent sequence number stored for ``host`` (0 if none)."""
        ...

    def events(self, *, after: int = 0, limit: int = 1000, kind: str | None = None,
               entity: str | None = None, host: str | None = None) -> list[StoredEvent]: ...

    def max_id(self) -> int: ...

    def latest(self, kind: str, entity: str) -> StoredEvent | None: ...

    def host_conditions(self, host: str, limit: int = 100) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...
