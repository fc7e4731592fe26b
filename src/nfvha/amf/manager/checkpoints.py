"""The checkpoint service for components (IF-3, UC-3/4): state kept in the manager's
store, per VNF, so the component that restarts, or replaces this one, reads it."""

from __future__ import annotations

from typing import Any

from nfvha.amf.manager.roster import Roster
from nfvha.store.assignments import AssignmentStore
from nfvha.store.base import StoreUnavailable
from nfvha.wire.amf import CheckpointRead, CheckpointWrite


class Checkpoints:
    def __init__(self, roster: Roster, store: AssignmentStore) -> None:
        self._roster = roster
        self._store = store

    def answer(self, su: str, msg: CheckpointWrite | CheckpointRead) -> dict[str, Any]:
        """Carry out ``su``'s request; the reply to send it."""
        owner = self._roster.group_of[su]
        try:
            if isinstance(msg, CheckpointWrite):
                self._store.checkpoint_write(owner, msg.key, msg.value)
                reply: dict[str, Any] = {"ok": True, "value": None, "error": None}
            else:
                got = self._store.checkpoint_read(owner, msg.key)
                reply = {"ok": True, "value": got[1] if got else None, "error": None}
        except (StoreUnavailable, ValueError, TypeError) as e:
            reply = {"ok": False, "value": None, "error": str(e)}
        return {"op": "checkpoint", "id": msg.id, **reply}
