"""Process identity and signalling by pid, never by name.

A pid can be reused after its process dies, so a process is identified by
(pid, start time in clock ticks since boot) from /proc/<pid>/stat.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    start_ticks: int
    exit_code: int | None  # only meaningful for a zombie


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    state = rest[0]
    ppid = int(rest[1])
    start_ticks = int(rest[19])
    exit_code = int(rest[49]) if len(rest) > 49 else None
    return ProcStat(pid=pid, state=state, ppid=ppid, start_ticks=start_ticks, exit_code=exit_code)


def start_ticks(pid: int) -> int | None:
    st = read_stat(pid)
    return None if st is None else st.start_ticks


def is_same_process(pid: int, ticks: int) -> bool:
    """True while the process that had ``ticks`` as start time is alive (not a zombie)."""
    st = read_stat(pid)
    return st is not None and st.start_ticks == ticks and st.state not in ("Z", "X")


def kill_pid(pid: int, sig: int = signal.SIGKILL, *, ticks: int | None = None) -> bool:
    """Send ``sig`` to ``pid`` if it is (still) the expected process. True if sent."""
    if ticks is not None and not is_same_process(pid, ticks):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def describe_wait_status(code: int) -> str:
    """'exit 3' / 'killed by SIGKILL' from a waitpid()-style status."""
    if os.WIFSIGNALED(code):
        sig = os.WTERMSIG(code)
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
        return f"killed by signal {sig}"
    if os.WIFEXITED(code):
        return f"exit {os.WEXITSTATUS(code)}"
    return f"status {code}"


def pidfd_open(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once the process exits), or None if it is gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def pidfd_of_life(pid: int, ticks: int) -> int | None:
    """A pidfd for the process that started at ``ticks`` as ``pid``, or None if that
    life has ended (the pid gone, a zombie, or reused by another process). Checked
    after opening: a pid reused between the check and the open would be watched
    otherwise."""
    fd = pidfd_open(pid)
    if fd is not None and not is_same_process(pid, ticks):
        os.close(fd)
        return None
    return fd
