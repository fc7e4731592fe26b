"""How a process that the agent watched (but did not parent) ended.

VMs and host processes are started detached, so their parent is the host
supervisor (a child subreaper) which reaps them and records the wait status in
``<host dir>/exits/<pid>.json``. A zombie's status can also be read from
/proc before it is reaped; whichever is there first wins.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from nfvha.util.procs import describe_wait_status, read_stat


def exit_record_path(exits_dir: Path, pid: int) -> Path:
    return exits_dir / f"{pid}.json"


def zombie_status(pid: int, start_ticks: int) -> int | None:
    st = read_stat(pid)
    if st is not None and st.start_ticks == start_ticks and st.state == "Z":
        return st.exit_code
    return None


async def wait_exit_status(
    exits_dir: Path, pid: int, start_ticks: int, timeout_s: float = 1.0
) -> tuple[int | None, str]:
    """(wait status, description); (None, 'unknown') if nobody recorded it in time."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    path = exit_record_path(exits_dir, pid)
    while True:
        status = zombie_status(pid, start_ticks)
        if status is not None:
            return status, describe_wait_status(status)
        try:
            rec = json.loads(path.read_text())
            if rec.get("start_ticks") in (None, start_ticks):
                return int(rec["status"]), describe_wait_status(int(rec["status"]))
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if asyncio.get_running_loop().time() >= deadline:
            return None, "unknown (not reaped by the host supervisor in time)"
        # Only diagnostics wait here; the failure itself was already reported.
        await asyncio.sleep(0.01)
