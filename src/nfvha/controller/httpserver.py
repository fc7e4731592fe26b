"""The HTTP server of the API and its fronts: uvicorn's h11 protocol with the bounds
uvicorn lacks (ADR 0014 "The API front", ADR 0016).

uvicorn times out idle keep-alive connections and nothing else: a client that sends
its request line and headers a byte at a time, or declares a body and trickles it,
holds its connection for as long as it likes, and a few hundred of them take every
connection there is. And past ``limit_concurrency`` uvicorn still reads and parses
every request, on every connection, to answer it 503 - at whatever rate the clients
send, which is work for the event loop that the limit was meant to spare it.

``BoundedH11Protocol`` (uvicorn's ``H11Protocol`` with four additions):

- **connections beyond ``max_connections``** are answered a fixed 503 (Retry-After)
  the moment they are made, nothing of them is parsed, and they are closed; the
  connections already open go on as before;
- **the request head** (line and headers) must be complete ``header_timeout_s`` after
  the connection was made or, on a kept-alive connection, after its first byte;
- **the body** must be complete ``body_timeout_s`` after the head; either late, the
  answer is 408 (if no answer has started) and the connection is closed;
- **a client that does not take its answer** (the server's send buffer full) for
  ``body_timeout_s`` has its connection aborted: a slow reader holds no response
  and no handler for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from nfvha.model.api import ApiLimits

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
           b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s")
_REFUSED_BODY = (b'{"title": "Service Unavailable", "status": 503, "detail": "too many'
                 b' connections to this API; try again"}')
REFUSED_ANSWER = REFUSED % (len(_REFUSED_BODY), _REFUSED_BODY)
_LATE_BODY = (b'{"title": "Request Timeout", "status": 408, "detail": "the request did not'
              b' arrive in time"}')
LATE_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
               b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
               % (len(_LATE_BODY), _LATE_BODY))


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, bounded (see the module). The bounds are class attributes:
    ``bounded_protocol`` makes a subclass with those of an ``ApiLimits``."""

    max_connections = 256
    header_timeout_s = 5.0
    body_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._awaiting: object = None  # the h11 state the read timer runs for
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # -- connections beyond the limit ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Not counted, not parsed: the answer, then the connection's end once the
            # client has read it (its EOF: the transport closes itself) or after the
            # header timeout.
            self._refused = True
            self.connections.discard(self)
            transport.write(REFUSED_ANSWER)
            if transport.can_write_eof():
                transport.write_eof()
            self._read_timer = self.loop.call_later(self.header_timeout_s, transport.abort)
            return
        self._watch_reading()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # whatever it sends is dropped: it has its answer
        super().data_received(data)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    # -- slow requests ----------------------------------------------------------------------
    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reading()

    def _watch_reading(self) -> None:
        """Time what the connection is waiting for: the rest of a request head that has
        begun (or the first one), the rest of a body; nothing while the request is being
        answered or the connection is idle between requests (the keep-alive timeout's)."""
        state = self.conn.their_state
        awaiting: object = None
        if self.transport.is_closing():
            self._stop_timer()
            return
        if state is h11.IDLE:
            # The connection's first request, or a next one whose first bytes are here.
            if self.cycle is None or self.conn.trailing_data[0]:
                awaiting = h11.IDLE
        elif state is h11.SEND_BODY:
            awaiting = h11.SEND_BODY
        if awaiting is self._awaiting:
            return
        self._stop_timer()
        if awaiting is not None:
            timeout = self.header_timeout_s if awaiting is h11.IDLE else self.body_timeout_s
            self._awaiting = awaiting
            self._read_timer = self.loop.call_later(timeout, self._too_late)

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._awaiting = None

    def _too_late(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._awaiting is h11.SEND_BODY else None
        if cycle is None or not cycle.response_started:
            self.transport.write(LATE_ANSWER)
        if cycle is not None:
            # For the handler the client has gone: it stops reading, and what it sends
            # goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # -- slow readers -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.body_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None


def bounded_protocol(limits: ApiLimits) -> type[BoundedH11Protocol]:
    """``BoundedH11Protocol`` with the bounds of ``limits``."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {
        "max_connections": limits.max_concurrency, "header_timeout_s": limits.header_timeout_s,
        "body_timeout_s": limits.body_timeout_s})


def server_config(app: Any, host: str, port: int, limits: ApiLimits,
                  **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API (or a front) on ``host:port``: the bounded
    protocol, ``limits``' server options, quiet, no lifespan; ``options`` on top."""
    return uvicorn.Config(app, host=host, port=port, **{
        "log_level": "warning", "lifespan": "off", **limits.server_options(),
        "http": bounded_protocol(limits), **options})


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
