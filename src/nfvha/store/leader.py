"""The leader lease: at most one controller decides recovery, for a bounded time.

Contract (Patroni's): ``acquire``/``renew`` return False when someone else holds the
lease or ours is gone (an answer), and raise ``StoreUnavailable`` when the store
cannot be reached (no answer). A holder may decide only while ``is_leader()``:
until ``valid_until_ns``, which is counted from the moment the acquiring or
renewing request was *sent* plus the TTL the store granted, so it always ends
before the store's own expiry (which starts later, on arrival). A store that
cannot be reached does not end the holder's term at once, but nothing extends it.

Every term has an ``epoch`` that is greater than every earlier term's, the
fencing token the leader's orders carry (etcd: the leader key's create revision).

``LocalLeaderLease`` is the embedded (single-controller) implementation: holders in
one process share a ``LocalLeaseBoard``; time is the injected clock's.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

from nfvha.util.clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True)
class LeaderTerm:
    holder: str
    epoch: int


class LeaderLease(Protocol):
    holder: str
    ttl_s: float

    @property
    def term(self) -> LeaderTerm | None:
        """Our term while we believe we hold the lease (None: not leader)."""
        ...

    @property
    def valid_until_ns(self) -> int:
        """Monotonic time (the clock's) at which our term must be taken as over; 0 if none."""
        ...

    def is_leader(self) -> bool: ...

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (renew it if we do). False: someone else does."""
        ...

    def renew(self) -> bool:
        """Extend our term. False: we do not hold the lease (any more); the term is over."""
        ...

    def release(self) -> None:
        """Give the lease up now (a clean shutdown: the next leader need not wait the TTL)."""
        ...

    def leader(self) -> LeaderTerm | None:
        """Who holds the lease, as the store says now."""
        ...

    def close(self) -> None: ...


def check_lease_timing(ttl_s: float, renew_interval_s: float, retry_timeout_s: float) -> None:
    """A leader must be able to miss a renewal and retry before its term runs out:
    ``renew_interval + 2 x retry_timeout < TTL`` (else ValueError, at start-up)."""
    if renew_interval_s <= 0 or retry_timeout_s <= 0:
        raise ValueError("renew interval and retry timeout must be positive")
    if renew_interval_s + 2 * retry_timeout_s >= ttl_s:
        raise ValueError(
            f"leader lease timing: renew interval {renew_interval_s} s + 2 x retry timeout"
            f" {retry_timeout_s} s must be below the TTL {ttl_s} s")


def whole_seconds(ttl_s: float) -> int:
    """etcd grants leases in whole seconds: round up, never below one."""
    return max(1, math.ceil(ttl_s - 1e-9))


class HeldTerm:
    """The holder's side of a lease, shared by the implementations: the term it holds
    and until when (its own clock: it stops counting on the lease before it can expire)."""

    _clock: Clock
    _term: LeaderTerm | None
    _valid_until_ns: int

    @property
    def term(self) -> LeaderTerm | None:
        return self._term

    @property
    def valid_until_ns(self) -> int:
        return self._valid_until_ns if self._term else 0

    def is_leader(self) -> bool:
        return self._term is not None and self._clock.mono_ns() < self._valid_until_ns


@dataclass
class _Held:
    holder: str
    epoch: int
    expires_ns: int


class LocalLeaseBoard:
    """The lease table of one process (the embedded store's stand-in for etcd)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.leases: dict[str, _Held] = {}
        self.last_epoch = 0


class LocalLeaderLease(HeldTerm):
    def __init__(self, board: LocalLeaseBoard, name: str, holder: str, ttl_s: float,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._board = board
        self.name = name
        self.holder = holder
        self.ttl_s = ttl_s
        self._clock = clock
        self._term: LeaderTerm | None = None
        self._valid_until_ns = 0

    def _live(self, now: int) -> _Held | None:
        held = self._board.leases.get(self.name)
        return held if held is not None and held.expires_ns > now else None

    def acquire(self) -> bool:
        now = self._clock.mono_ns()
        with self._board.lock:
            held = self._live(now)
            if held is not None and not self._mine(held):
                self._lose()
                return False
            if held is None:
                self._board.last_epoch += 1
                held = _Held(self.holder, self._board.last_epoch, 0)
                self._board.leases[self.name] = held
            held.expires_ns = now + int(self.ttl_s * 1e9)
            self._term = LeaderTerm(self.holder, held.epoch)
            self._valid_until_ns = held.expires_ns
            return True

    def renew(self) -> bool:
        if self._term is None:
            return False
        now = self._clock.mono_ns()
        with self._board.lock:
            held = self._live(now)
            if held is None or not self._mine(held):
                self._lose()
                return False
            held.expires_ns = now + int(self.ttl_s * 1e9)
            self._valid_until_ns = held.expires_ns
            return True

    def release(self) -> None:
        with self._board.lock:
            held = self._board.leases.get(self.name)
            if held is not None and self._mine(held):
                del self._board.leases[self.name]
        self._lose()

    def leader(self) -> LeaderTerm | None:
        with self._board.lock:
            held = self._live(self._clock.mono_ns())
            return LeaderTerm(held.holder, held.epoch) if held else None

    def close(self) -> None:
        pass

    def _mine(self, held: _Held) -> bool:
        return self._term is not None and held.epoch == self._term.epoch

    def _lose(self) -> None:
        self._term = None
        self._valid_until_ns = 0
