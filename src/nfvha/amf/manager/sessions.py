"""The components' connections to the availability manager: the SDK wire (ADR 0008).

One TCP connection per component process, JSON lines (``nfvha.wire.amf``). The first
line must register a component the manager manages; a later registration of the same
SU replaces its session (whatever the old one still says is read, but it is no longer
the SU's). What the messages mean is the handler's business.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from nfvha.amf.config import AmfConfig
from nfvha.model.settings import Settings
from nfvha.wire.amf import (
    COMPONENT_MESSAGE,
    MAX_LINE_BYTES,
    Assigned,
    CheckpointRead,
    CheckpointWrite,
    LeaseRequest,
    MemberFailed,
    Refused,
    Register,
    Removed,
    Report,
)

log = logging.getLogger(__name__)
ComponentMessage = (Register | Assigned | Removed | Refused | LeaseRequest | Report
                    | MemberFailed | CheckpointWrite | CheckpointRead)

# How long a new connection may take to register.
REGISTER_TIMEOUT_S = 5.0


@dataclass
class Session:
    su: str
    incarnation: str
    writer: asyncio.StreamWriter


class SessionHandler(Protocol):
    def accepts(self, su: str) -> bool:
        """Whether ``su`` is one of the manager's components."""
        ...

    def registered(self, session: Session, msg: Register) -> None:
        """A new session of ``msg.component`` (welcomed already)."""
        ...

    def received(self, session: Session, msg: ComponentMessage) -> None:
        """A valid message on ``session``."""
        ...

    def closed(self, su: str) -> None:
        """The SU's current session closed."""
        ...


class ComponentSessions:
    def __init__(self, cfg: AmfConfig, settings: Settings, handler: SessionHandler) -> None:
        self._cfg = cfg
        self._settings = settings
        self._handler = handler
        self._sessions: dict[str, Session] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._cfg.listen_ip, self._cfg.port, limit=MAX_LINE_BYTES,
            reuse_address=True)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for s in list(self._sessions.values()):
            s.writer.close()

    def connected(self, su: str) -> bool:
        return su in self._sessions

    def drop(self, su: str) -> None:
        """Write ``su``'s session off: whatever it still says is from a life the
        manager has counted out."""
        s = self._sessions.pop(su, None)
        if s is not None:
            s.writer.close()

    def send(self, su: str, msg: dict[str, Any]) -> None:
        """To ``su``'s session, if it has one (else it learns when it registers)."""
        s = self._sessions.get(su)
        if s is not None:
            self.write(s, msg)

    def write(self, s: Session, msg: dict[str, Any]) -> None:
        if not s.writer.is_closing():
            s.writer.write(json.dumps(msg).encode() + b"\n")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REGISTER_TIMEOUT_S)
            msg = COMPONENT_MESSAGE.validate_json(line)
        except (TimeoutError, ValidationError, OSError, ValueError):
            writer.close()
            return
        if not isinstance(msg, Register) or not self._handler.accepts(msg.component):
            log.warning("refusing a component connection: %r", line[:200])
            writer.close()
            return
        session = self._register(msg, writer)
        try:
            while line := await reader.readline():
                self._on_line(session, line)
        except (OSError, ValueError):
            pass
        finally:
            writer.close()
            if self._sessions.get(session.su) is session:
                del self._sessions[session.su]
                self._handler.closed(session.su)

    def _register(self, msg: Register, writer: asyncio.StreamWriter) -> Session:
        self.drop(msg.component)
        session = Session(msg.component, msg.incarnation, writer)
        self._sessions[session.su] = session
        self.write(session, {"op": "welcome", "lease_ms": self._settings.amf_active_lease_ms,
                             "ping_interval_ms": self._settings.amf_ping_interval_ms})
        try:
            self._handler.registered(session, msg)
        except BaseException:
            del self._sessions[session.su]  # not registered after all (the store failed)
            writer.close()
            raise
        return session

    def _on_line(self, s: Session, line: bytes) -> None:
        try:
            msg = COMPONENT_MESSAGE.validate_json(line)
        except ValidationError as e:
            log.warning("SU %s sent an unreadable message: %s", s.su, e)
            return
        self._handler.received(s, msg)
