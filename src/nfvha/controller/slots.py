"""A bounded number of slots with a bounded, first-come-first-served queue in front.

The API front (ADR 0014) passes at most ``size`` requests on to the controller at
once; a request beyond that waits for a slot, but only if fewer than ``queue`` wait
already, and only for ``wait_s``. A request refused says why: the queue was full or
its wait ran out. Waiters are served in the order they came; one that gave up (its
client went away, or its wait ran out) is skipped, and a slot handed to it in the
same moment is handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class NoSlot(Exception):
    """No slot in time: ``reason`` is ``QUEUE_FULL`` or ``WAITED_TOO_LONG``; ``what``:
    what the slots are for."""

    QUEUE_FULL = "queue full"
    WAITED_TOO_LONG = "waited too long"

    def __init__(self, reason: str, what: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.reason = reason
        self.what = what


class Slots:
    def __init__(self, size: int, queue: int, wait_s: float, what: str = "requests") -> None:
        if size < 1 or queue < 0 or wait_s <= 0:
            raise ValueError("slots: size >= 1, queue >= 0, wait_s > 0")
        self.what = what
        self.size = size
        self.queue = queue
        self.wait_s = wait_s
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # What happened so far: slots taken (at once or after waiting), refusals.
        self.taken = 0
        self.waited = 0
        self.queue_full = 0
        self.timed_out = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the ``async with`` block; ``NoSlot`` if none comes in time."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Take a slot (``release`` gives it back); ``NoSlot`` if none comes in time."""
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            self.taken += 1
            return
        if len(self._waiters) >= self.queue:
            self.queue_full += 1
            raise NoSlot(NoSlot.QUEUE_FULL, self.what)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            async with asyncio.timeout(self.wait_s):
                await asyncio.shield(granted)
        except TimeoutError:
            if not self._give_up(granted):
                self.timed_out += 1
                raise NoSlot(NoSlot.WAITED_TOO_LONG, self.what) from None
        except BaseException:
            if self._give_up(granted):
                self.release()  # handed to us as we were cancelled: hand it on
            raise
        self.taken += 1
        self.waited += 1

    def _give_up(self, granted: asyncio.Future[None]) -> bool:
        """Leave the queue; True if a slot was handed to us meanwhile (we hold it)."""
        if granted.done():
            return True
        granted.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(granted)
        return False

    def release(self) -> None:
        self.in_use -= 1
        while self._waiters:
            nxt = self._waiters.popleft()
            if not nxt.done():
                nxt.set_result(None)
                self.in_use += 1
                return
