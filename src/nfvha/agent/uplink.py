"""The agent's connection to the controller: events up, commands down.

Reconnects with backoff; on every (re)connect sends ``hello``, learns from
``welcome`` what the controller already has, and re-sends the rest of the
spool. Events are sent the moment they are spooled; the stream is never
blocked by a slow disk because the spool write goes to the page cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pydantic import ValidationError

from nfvha.agent.spool import EventSpool
from nfvha.model.events import Event
from nfvha.util.tasks import background
from nfvha.wire.frames import (
    CONTROLLER_FRAME,
    MAX_FRAME_BYTES,
    Ack,
    Command,
    EventFrame,
    Frame,
    Hello,
    Inventory,
    Reply,
    Welcome,
    encode,
)

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], Awaitable[Reply]]


class ControllerLink:
    def __init__(
        self,
        host: str,
        address: tuple[str, int],
        spool: EventSpool,
        hello: Hello,
        on_command: CommandHandler,
        inventory: Callable[[], Inventory],
        backoff_initial_s: float,
        backoff_max_s: float,
    ) -> None:
        self._host = host
        self._address = address
        self._spool = spool
        self._hello = hello
        self._on_command = on_command
        self._inventory = inventory
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._writer: asyncio.StreamWriter | None = None
        self._ready = False  # welcome received, spool replayed
        self.connected = asyncio.Event()
        self._inventory_dirty = asyncio.Event()

    def send_event(self, event: Event) -> None:
        """Spool, then send if connected; otherwise it goes out after reconnect."""
        self._spool.append(event)
        if self._ready:
            self._write(EventFrame(event=event))

    def inventory_changed(self) -> None:
        self._inventory_dirty.set()

    def _write(self, frame: Frame) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        w.write(encode(frame))

    async def run(self) -> None:
        backoff = self._backoff_initial
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    *self._address, limit=MAX_FRAME_BYTES
                )
            except OSError as e:
                log.debug("controller %s unreachable: %s", self._address, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            backoff = self._backoff_initial
            try:
                await self._session(reader, writer)
            except (OSError, asyncio.IncompleteReadError, ValidationError) as e:
                log.info("controller link lost: %s", e)
            finally:
                self._ready = False
                self._writer = None
                self.connected.clear()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(self._backoff_initial)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write(self._hello)
        await writer.drain()
        line = await reader.readline()
        if not line:
            raise ConnectionResetError("controller closed before welcome")
        welcome = CONTROLLER_FRAME.validate_json(line)
        if not isinstance(welcome, Welcome):
            raise ConnectionResetError(f"expected welcome, got {welcome.t}")
        self._spool.resync(welcome.last_seq)
        for ev in self._spool.pending():
            self._write(EventFrame(event=ev))
        self._ready = True
        self.connected.set()
        self._write(self._inventory())
        await writer.drain()
        pusher = asyncio.create_task(self._push_inventory(writer))
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("controller closed the stream")
                frame = CONTROLLER_FRAME.validate_json(line)
                if isinstance(frame, Ack):
                    self._spool.ack(frame.seq)
                elif isinstance(frame, Command):
                    background(self._run_command(frame))
        finally:
            pusher.cancel()

    async def _run_command(self, cmd: Command) -> None:
        try:
            reply = await self._on_command(cmd)
        except Exception as e:  # a failing command must not kill the link
            log.exception("command %s failed", cmd.op)
            reply = Reply(id=cmd.id, ok=False, error=f"{type(e).__name__}: {e}")
        self._write(reply)

    async def _push_inventory(self, writer: asyncio.StreamWriter) -> None:
        # Coalesce bursts: at most ten inventory frames a second.
        while True:
            await self._inventory_dirty.wait()
            self._inventory_dirty.clear()
            self._write(self._inventory())
            await writer.drain()
            await asyncio.sleep(0.1)
