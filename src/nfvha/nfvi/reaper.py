"""A child subreaper for a daemon whose grandchildren outlive it (libvirtd and its QEMUs).

libvirtd starts QEMU daemonized: QEMU is orphaned at once and reparented to the nearest
child subreaper, or to pid 1. Where pid 1 reaps orphans lazily (this machine's reaps
them up to ~2 s late), libvirt waits for the dead QEMU's zombie to go before it reports
the domain STOPPED, and every VM-crash detection pays that delay. On the test bed the
host supervisor (``nfvha hostd``) is the host's subreaper; where there is none, run the
daemon under this helper:

    python -I -S reaper.py EXITS_DIR -- argv...

It makes itself a child subreaper, starts ``argv`` as its child, reaps every process
that ends under it at once (recording each wait status as ``EXITS_DIR/<pid>.json``, the
way hostd does, so a QEMU's end can be told), and exits when nothing is left below it:
while a QEMU started by the daemon lives, the reaper stays, even after the daemon died.
Standard library only; it holds no state worth keeping, so SIGKILL is a clean stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
REAPER_SCRIPT = os.path.abspath(__file__)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    if os.WIFEXITED(status):
        return f"exit {os.WEXITSTATUS(status)}"
    return f"status {status}"


def _record(exits_dir: str, pid: int, status: int) -> None:
    rec = {"pid": pid, "status": status, "how": _describe(status), "at": time.time()}
    tmp = os.path.join(exits_dir, f".{pid}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(rec))
        os.replace(tmp, os.path.join(exits_dir, f"{pid}.json"))
    except OSError:
        pass  # the record is a courtesy; reaping is the job


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: reaper.py EXITS_DIR -- argv...\n")
        return 2
    exits_dir, cmd = argv[0], argv[2:]
    os.makedirs(exits_dir, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.stderr.write(f"reaper: prctl: {os.strerror(ctypes.get_errno())}\n")
        return 1
    # Stopping the reaper (SIGTERM) is passed on to the daemon; the reaper then stays
    # until its last descendant is gone, as always.
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    def forward(sig: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    daemon_status = 0
    while True:
        try:
            done, status = os.wait()
        except ChildProcessError:
            break
        _record(exits_dir, done, status)
        if done == pid:
            daemon_status = status
    return os.waitstatus_to_exitcode(daemon_status) & 0xFF


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
