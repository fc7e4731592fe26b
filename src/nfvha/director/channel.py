"""The director's end of the channel to its controller (ADR 0014).

The director listens on a unix-domain socket and serves one controller connection
at a time (a new one replaces the old: a restarted controller). On every connection
it first says where to resume the stored events (``hello.after``). What it writes is
bounded: a controller that does not read is dropped, never buffered for without
limit; requests that were waiting on a dropped connection fail at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nfvha.wire.director import (
    MAX_LINE_BYTES,
    TO_DIRECTOR,
    Answer,
    Events,
    Hello,
    Placed,
    Published,
    Query,
    RepairUpdate,
    Term,
    encode,
)

log = logging.getLogger(__name__)
ToDirectorMsg = Events | Term | Placed | RepairUpdate | Answer | Query | Published


class ControllerChannel:
    def __init__(self, path: Path, run_id: str, resume_after: Callable[[], int | None],
                 on_message: Callable[[ToDirectorMsg], None], *,
                 on_connected: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 max_buffer_bytes: int = 8 << 20) -> None:
        self._path = path
        self._run_id = run_id
        self._resume_after = resume_after
        self._on_message = on_message
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._max_buffer = max_buffer_bytes
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # a previous director's
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, str(self._path),
                                                       limit=MAX_LINE_BYTES)
        os.chmod(self._path, 0o600)  # the controller runs as the same user; nobody else

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def send(self, msg: Any) -> bool:
        """Write ``msg``; False when no controller is connected (or it stopped reading
        and was dropped)."""
        w = self._writer
        if w is None or w.is_closing():
            return False
        if w.transport.get_write_buffer_size() > self._max_buffer:
            log.error("the controller does not read its channel; dropping it")
            w.close()
            return False
        w.write(encode(msg))
        return True

    def hello(self) -> None:
        """Tell the controller (again) where to resume the stored events."""
        self.send(Hello(run_id=self._run_id, after=self._resume_after()))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        old, self._writer = self._writer, writer
        if old is not None:
            log.warning("a new controller connection replaces the previous one")
            old.close()
        log.info("controller connected")
        self.hello()
        if self._on_connected is not None:
            self._on_connected()
        try:
            while line := await reader.readline():
                try:
                    msg = TO_DIRECTOR.validate_json(line)
                except ValidationError as e:
                    log.error("unreadable message from the controller: %s", e)
                    continue
                self._on_message(msg)
        except (OSError, ValueError) as e:
            log.warning("controller channel: %s", e)
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
                log.warning("controller disconnected")
                if self._on_lost is not None:
                    self._on_lost()
