"""The agent's on-disk spool of events not yet acknowledged by the controller.

Append-only JSON lines; an event is written (to the OS, so it survives the
agent's own crash) as it is sent, right after it went on the stream (``uplink``
says why that order loses nothing). ``sync()`` fsyncs what was written; the
agent calls it from a worker thread every ``fsync_interval_s``, never on the send
path (an fsync can take tens of milliseconds), so a machine crash loses at most
that window. The
acknowledged watermark lives in a small side file; the log is compacted when
everything in it is acknowledged.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from nfvha.model.events import Event
from nfvha.util.clock import Clock
from nfvha.util.files import atomic_write


class EventSpool:
    def __init__(self, directory: Path, clock: Clock) -> None:
        self._dir = directory
        self._log_path = directory / "spool.jsonl"
        self._acked_path = directory / "spool.acked"
        self._clock = clock
        self._unsynced = False
        self._pending: deque[Event] = deque()
        self.acked_seq = 0
        self.last_seq = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._load()
        self._log = open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the spool

    def _load(self) -> None:
        try:
            self.acked_seq = int(self._acked_path.read_text().strip() or 0)
        except FileNotFoundError:
            self.acked_seq = 0
        self.last_seq = self.acked_seq
        try:
            raw = self._log_path.read_bytes()
        except FileNotFoundError:
            return
        if raw and not raw.endswith(b"\n"):
            # A crash mid-write left half a line: cut it, or the next event would be
            # appended to the fragment and lost with it.
            raw = raw[: raw.rfind(b"\n") + 1]
            atomic_write(self._log_path, raw, fsync=True)
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                ev = Event.model_validate_json(line)
            except ValueError:
                continue  # a torn last line from a crash mid-write
            self.last_seq = max(self.last_seq, ev.seq)
            if ev.seq > self.acked_seq:
                self._pending.append(ev)

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def append(self, event: Event) -> None:
        self._log.write(event.model_dump_json().encode() + b"\n")
        self._log.flush()
        self._unsynced = True
        self._pending.append(event)

    def sync(self) -> None:
        """fsync what was appended (safe to call from a worker thread)."""
        if self._unsynced:
            self._unsynced = False
            os.fsync(self._log.fileno())

    def pending(self) -> list[Event]:
        return list(self._pending)

    def resync(self, controller_last_seq: int) -> None:
        """Align with the controller's ``welcome``. If it has more of this host's events
        than the spool knows (the spool was lost, or a machine crash took its last
        unsynced events), the events numbered since are renumbered after the
        controller's, or it would take them for duplicates and drop them."""
        if controller_last_seq > self.last_seq:
            renumbered = [ev.model_copy(update={"seq": controller_last_seq + i + 1})
                          for i, ev in enumerate(self._pending)]
            self._pending = deque(renumbered)
            self.last_seq = controller_last_seq + len(renumbered)
            self._log.close()
            atomic_write(self._log_path, b"".join(
                ev.model_dump_json().encode() + b"\n" for ev in renumbered), fsync=True)
            self._log = open(self._log_path, "ab")  # noqa: SIM115
        self.ack(controller_last_seq)

    def ack(self, seq: int) -> None:
        if seq <= self.acked_seq:
            return
        self.acked_seq = min(seq, self.last_seq)
        while self._pending and self._pending[0].seq <= self.acked_seq:
            self._pending.popleft()
        atomic_write(self._acked_path, str(self.acked_seq).encode(), fsync=False)
        if not self._pending and self._log.tell() > 1 << 20:
            self._compact()

    def _compact(self) -> None:
        self._log.close()
        atomic_write(self._log_path, b"", fsync=True)
        self._log = open(self._log_path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._log.flush()
        os.fsync(self._log.fileno())
        self._log.close()
