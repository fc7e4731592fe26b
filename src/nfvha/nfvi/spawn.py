"""Start a process detached from its caller, inside a network namespace and cgroups.

A VM or a host supervisor must outlive the agent that started it, so it is never the
agent's child: this file is run as a tiny helper (``python -I -S spawn.py``, standard
library only, spec as JSON on stdin) that forks the real process and exits without
waiting for it. The orphan is then adopted by the nearest child-subreaper (or init).

In the forked child, before ``execve``: ``setsid()``; join the cgroups by writing its
own pid into each given ``cgroup.procs`` file (so the helper needs no cgroup logic);
``setns()`` into ``/run/netns/<netns>`` (not ``ip netns exec``, which remounts /sys and
would hide /sys/fs/cgroup from the process); stdin from /dev/null, stdout+stderr
appended to the log. A close-on-exec pipe tells the helper whether ``execve`` worked
(EOF) or why it did not (the error text).

The helper prints one JSON line: ``{"pid": N, "start_ticks": T}`` (exit 0) or
``{"error": "..."}`` (exit 1).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
SPAWN_SCRIPT = os.path.abspath(__file__)
HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Spawned:
    pid: int
    start_ticks: int


class SpawnError(Exception):
    """The process could not be started (the message says which step failed)."""


# --- the helper side (runs under ``python -I -S``: standard library only) ----------------


def setns_net(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns = getattr(os, "setns", None)  # Python >= 3.12
        if setns is not None:
            setns(fd, CLONE_NEWNET)
            return
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _proc_start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read().decode(errors="replace")
    # Field 22; comm (field 2) may contain spaces and parentheses.
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def _write_pidfile(path: str, pid: int, ticks: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"pid": pid, "start_ticks": ticks}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _exec_child(spec: dict[str, Any], err_w: int) -> NoReturn:
    """In the forked child: set up, then execve. Never returns."""
    step = "setsid"
    try:
        os.setsid()
        for procs in spec.get("cgroup_procs") or []:
            step = f"joining cgroup {procs}"
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        netns = spec.get("netns")
        if netns:
            step = f"entering netns {netns}"
            setns_net(os.path.join(NETNS_DIR, netns))
        cwd = spec.get("cwd")
        if cwd:
            step = f"chdir {cwd}"
            os.chdir(cwd)
        step = "redirecting stdio"
        null = os.open(os.devnull, os.O_RDONLY)
        log = spec.get("log")
        out = (
            os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if log
            else os.open(os.devnull, os.O_WRONLY)
        )
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        # Everything else is closed; only the error pipe stays until exec (close-on-exec).
        os.closerange(3, err_w)
        os.closerange(err_w + 1, max(65536, os.sysconf("SC_OPEN_MAX")))
        step = "resetting signals"
        # Python ignores SIGPIPE and SIGXFSZ, and ignored signals stay ignored across
        # exec: give the new program the defaults.
        # Whatever the launcher ignored (nohup: SIGHUP; a shell's background job: SIGINT,
        # SIGQUIT) must not stay ignored in a daemon we stop by signal.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM,
                    signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        argv = [str(a) for a in spec["argv"]]
        step = f"exec {argv[0]}"
        env = spec.get("env")
        if env is None:
            os.execvp(argv[0], argv)
        else:
            os.execvpe(argv[0], argv, {str(k): str(v) for k, v in env.items()})
    except BaseException as e:
        msg = f"{step}: {e}"
        try:
            os.write(err_w, msg.encode(errors="replace")[:4000])
        finally:
            os._exit(127)


def spawn_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fork and exec per ``spec``; return the helper's answer (pid + start ticks, or error).

    Meant for the helper process: the child is left running, never waited for.
    """
    argv = spec.get("argv")
    if not isinstance(argv, list) or not argv:
        return {"error": "spec: argv must be a non-empty list"}
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(err_r)
        _exec_child(spec, err_w)
    os.close(err_w)
    chunks = []
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(err_r)
    if chunks:
        os.waitpid(pid, 0)  # it has _exit(127)ed: do not leave a zombie
        return {"error": b"".join(chunks).decode(errors="replace")}
    # The process exists (perhaps already a zombie, which we hold until we exit), so
    # its start time is readable.
    ticks = _proc_start_ticks(pid)
    pidfile = spec.get("pidfile")
    if pidfile:
        try:
            _write_pidfile(pidfile, pid, ticks)
        except OSError as e:
            # Nobody would know about the process: do not leave it running.
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return {"error": f"pidfile {pidfile}: {e}"}
    return {"pid": pid, "start_ticks": ticks}


def main() -> int:
    try:
        spec = json.loads(sys.stdin.read())
        if not isinstance(spec, dict):
            raise ValueError("spec is not a JSON object")
        answer = spawn_from_spec(spec)
    except Exception as e:
        answer = {"error": f"spawn helper: {e}"}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 1 if "error" in answer else 0


# --- the caller side ---------------------------------------------------------------------


def _spec(
    argv: list[str],
    env: dict[str, str] | None,
    cwd: str | None,
    netns: str | None,
    cgroup_procs: list[str],
    log: str | None,
    pidfile: str | None,
) -> bytes:
    if not argv:
        raise ValueError("argv must not be empty")
    spec = {
        "argv": list(argv),
        "env": env,
        "cwd": cwd,
        "netns": netns,
        "cgroup_procs": list(cgroup_procs),
        "log": log,
        "pidfile": pidfile,
    }
    return json.dumps(spec).encode()


def _parse_answer(argv0: str, rc: int | None, out: bytes, err: bytes) -> Spawned:
    line = out.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(line[-1]) if line else {}
    except ValueError:
        answer = {}
    if isinstance(answer, dict) and "error" in answer:
        raise SpawnError(f"spawning {argv0}: {answer['error']}")
    if rc != 0 or not isinstance(answer, dict) or "pid" not in answer:
        detail = err.decode(errors="replace").strip()[-2000:]
        raise SpawnError(f"spawning {argv0}: helper exited {rc}: {detail or out!r}")
    return Spawned(pid=int(answer["pid"]), start_ticks=int(answer["start_ticks"]))


def _helper_argv(python: str) -> list[str]:
    return [python, "-I", "-S", SPAWN_SCRIPT]


async def spawn_detached(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    netns: str | None = None,
    cgroup_procs: list[str] | None = None,
    log: str | None = None,
    pidfile: str | None = None,
    python: str = sys.executable,
    helper_timeout: float = HELPER_TIMEOUT,
) -> Spawned:
    """Start ``argv`` detached (see the module doc); returns once exec has succeeded.

    ``env`` None inherits the caller's environment; otherwise it is the whole
    environment of the new process. ``helper_timeout`` bounds the wait for the helper (the
    child can block before exec, e.g. when it joins a frozen cgroup).
    """
    import asyncio

    spec = _spec(argv, env, cwd, netns, cgroup_procs or [], log, pidfile)
    proc = await asyncio.create_subprocess_exec(
        *_helper_argv(python),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(spec), helper_timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SpawnError(
            f"spawning {argv[0]}: no answer from the helper in {helper_timeout}s"
        ) from None
    return _parse_answer(argv[0], proc.returncode, out, err)


def spawn_detached_sync(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    netns: str | None = None,
    cgroup_procs: list[str] | None = None,
    log: str | None = None,
    pidfile: str | None = None,
    python: str = sys.executable,
    helper_timeout: float = HELPER_TIMEOUT,
) -> Spawned:
    """:func:`spawn_detached` for code that is not async."""
    import subprocess

    spec = _spec(argv, env, cwd, netns, cgroup_procs or [], log, pidfile)
    try:
        done = subprocess.run(
            _helper_argv(python),
            input=spec,
            capture_output=True,
            check=False,
            timeout=helper_timeout,
        )
    except subprocess.TimeoutExpired:
        raise SpawnError(
            f"spawning {argv[0]}: no answer from the helper in {helper_timeout}s"
        ) from None
    return _parse_answer(argv[0], done.returncode, done.stdout, done.stderr)


if __name__ == "__main__":
    sys.exit(main())
