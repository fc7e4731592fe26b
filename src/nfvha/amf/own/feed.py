"""The VIM's events for a VNF's own AM: ``GET /v1/events?after=<id>&wait=`` in a loop.

The cursor is the id of the last event handed on. Each poll asks for what comes after
it, so a poll that failed - the VIM restarted, the connection broke, an answer was
lost - is simply asked again: nothing is missed, and an event at or below the cursor
is never handed on a second time (the store's ids grow with every commit).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from nfvha.amf.own.vim import VimClient, VimError
from nfvha.model.events import StoredEvent

log = logging.getLogger(__name__)

Sink = Callable[[Sequence[StoredEvent]], None]


class EventFeed:
    """``after``: the id to start after (the VIM's last event id when the AM started:
    what came before is state, read once, not events to act on). ``wait_s``: how long
    one poll waits for news. ``retry_min_s``..``retry_max_s``: the pause after a failed
    poll, doubling while the VIM stays away."""

    def __init__(self, vim: VimClient, sink: Sink, *, after: int, wait_s: float = 10.0,
                 limit: int = 1000, retry_min_s: float = 0.05, retry_max_s: float = 2.0
                 ) -> None:
        self._vim = vim
        self._sink = sink
        self.after = after
        self._wait_s = wait_s
        self._limit = limit
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self.polls = 0
        self.failures = 0
        self.connected = asyncio.Event()
        """Set while the last poll was answered."""

    async def poll_once(self) -> list[StoredEvent]:
        """One poll: hands on (and returns) what came after the cursor. Raises VimError."""
        self.polls += 1
        got = await self._vim.events(self.after, wait_s=self._wait_s, limit=self._limit)
        self.connected.set()
        fresh = [ev for ev in got if ev.id > self.after]
        if fresh:
            self.after = fresh[-1].id  # before the sink: its failure must not repeat them
            try:
                self._sink(fresh)
            except Exception:
                log.exception("handling events %d..%d failed", fresh[0].id, fresh[-1].id)
        return fresh

    async def run(self) -> None:
        delay = self._retry_min_s
        while True:
            try:
                await self.poll_once()
                delay = self._retry_min_s
            except VimError as e:
                self.failures += 1
                if self.connected.is_set():
                    log.warning("event feed: %s; polling again after event %d", e, self.after)
                self.connected.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
