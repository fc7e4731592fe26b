"""A private libvirt daemon per test-bed host (ADR 0018).

Debian 12's libvirt 9.0 ships the monolithic ``libvirtd`` (no modular ``virtqemud``).
Run as root it uses fixed system paths (/etc/libvirt, /run/libvirt, /var/lib/libvirt,
/var/log/libvirt, /var/cache/libvirt) that its config cannot move. So each daemon runs
in a private mount namespace (``unshare --mount``) in which those five directories are
bind mounts of the host's own tree ``<run>/hosts/<host>/libvirt/{etc,run,lib,log,cache}``,
and in the host's network namespace (``spawn_detached(netns=…)``, i.e. setns(2)). Inside,
every path libvirt makes is the short system one (no socket-length worries); outside,
the same files are under the host's dir: ``run/libvirt-sock`` (the connect URI),
``run/qemu/<domain>.pid`` (each QEMU's pid), ``log/qemu/<domain>.log``.

Our config, not the package's: QEMU runs as root with no security driver, no dynamic
ownership, no cgroups (QEMU stays in the daemon's cgroup, i.e. the host's) and no
private /dev; QEMU's stdio goes to a file (no virtlogd). Only the QEMU driver is loaded
(``LIBVIRT_DRIVER_DIR`` names a directory holding just ``libvirt_driver_qemu.so``): no
network, nwfilter, storage, nodedev, interface or secret driver, hence no default
network, no bridge, no firewall rule on the machine, ever.

The daemon is started detached (it outlives its starter) and tells it is ready by the
sd_notify protocol (``READY=1`` on ``$NOTIFY_SOCKET``, which libvirtd sends without
systemd running): the start waits on that datagram, not on a poll. It is stopped by pid
(SIGTERM, then SIGKILL); its QEMUs keep running either way, and a new daemon on the same
directories re-attaches to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nfvha.nfvi.reaper import REAPER_SCRIPT
from nfvha.nfvi.spawn import spawn_detached
from nfvha.util.files import atomic_write, read_json
from nfvha.util.procs import is_same_process, kill_pid, read_stat
from nfvha.util.runpaths import RunPaths

LIBVIRTD = "/usr/sbin/libvirtd"
QEMU_DRIVER_SO = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
QEMU_SYSTEM = "/usr/bin/qemu-system-x86_64"
# The QEMU driver looks up its compiled-in default user before it reads qemu.conf (which
# then says root), so the user must exist (Debian's libvirt-daemon-system would create
# it; scripts/bootstrap does, without that package's systemd units).
QEMU_USER = "libvirt-qemu"
# Inside the daemon's mount namespace: system path -> subdirectory of the host's tree.
SYSTEM_DIRS = {
    "/etc/libvirt": "etc",
    "/run/libvirt": "run",
    "/var/lib/libvirt": "lib",
    "/var/log/libvirt": "log",
    "/var/cache/libvirt": "cache",
}
SOCKET_MAX = 107  # sun_path without the terminating NUL
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class LibvirtdError(Exception):
    """The daemon could not be set up, started or stopped (the message says why)."""


def missing_prerequisites() -> str | None:
    """Why a private libvirtd cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (mount and network namespaces, QEMU as root)"
    for path, pkg in (
        (LIBVIRTD, "libvirt-daemon"),
        (QEMU_DRIVER_SO, "libvirt-daemon-driver-qemu"),
        (QEMU_SYSTEM, "qemu-system-x86"),
    ):
        if not os.path.exists(path):
            return f"{path} missing: install {pkg} (scripts/bootstrap)"
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} missing: install util-linux / mount"
    try:
        import pwd

        pwd.getpwnam(QEMU_USER)
    except KeyError:
        return f"user {QEMU_USER} missing (libvirt's QEMU driver needs it): run scripts/bootstrap"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "the libvirt Python binding (libvirt-python) is not installed: scripts/bootstrap"
    return None


@dataclass(frozen=True)
class LibvirtdPaths:
    """The files of one private daemon, all under ``base``."""

    base: Path

    @classmethod
    def for_host(cls, run: RunPaths, host: str) -> LibvirtdPaths:
        return cls(run.host_dir(host) / "libvirt")

    def sub(self, system_dir: str) -> Path:
        return self.base / SYSTEM_DIRS[system_dir]

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def log(self) -> Path:
        return self.base / "log"

    @property
    def drivers(self) -> Path:
        return self.base / "drivers"

    @property
    def exits(self) -> Path:
        """Wait statuses recorded by the reaper (when the daemon runs under one)."""
        return self.base / "exits"

    @property
    def socket(self) -> Path:
        return self.run / "libvirt-sock"

    @property
    def notify_socket(self) -> Path:
        return self.base / "notify"

    @property
    def pidfile(self) -> Path:
        """libvirtd's own pid file (the plain pid)."""
        return self.run / "libvirtd.pid"

    @property
    def spawn_pidfile(self) -> Path:
        """What we started (libvirtd, or the reaper above it): pid + start ticks as JSON."""
        return self.base / "spawned.json"

    @property
    def daemon_log(self) -> Path:
        return self.log / "libvirtd.log"

    @property
    def stdout_log(self) -> Path:
        return self.log / "libvirtd.stdout"

    @property
    def uri(self) -> str:
        """The connect URI of this daemon."""
        return f"qemu+unix:///system?socket={self.socket}"

    def qemu_pidfile(self, domain: str) -> Path:
        return self.run / "qemu" / f"{domain}.pid"

    def qemu_log(self, domain: str) -> Path:
        return self.log / "qemu" / f"{domain}.log"

    def check_lengths(self) -> None:
        for p in (self.socket, self.notify_socket):
            if len(os.fsencode(p)) > SOCKET_MAX:
                raise LibvirtdError(f"socket path too long for a unix socket: {p}")


@dataclass(frozen=True)
class LibvirtdSettings:
    """What we choose in libvirtd.conf; every field has the value the test bed uses."""

    log_level: int = 3  # 1 debug … 4 error; 3 = warnings
    min_workers: int = 2
    max_workers: int = 8
    prio_workers: int = 2
    keepalive_interval_s: int = 5
    keepalive_count: int = 5


def libvirtd_conf(paths: LibvirtdPaths, s: LibvirtdSettings) -> str:
    return "\n".join(
        [
            "# written by nfvha (src/nfvha/nfvi/libvirtd.py); root-only unix sockets",
            f'unix_sock_dir = "{paths.run}"',
            'unix_sock_ro_perms = "0700"',
            'unix_sock_rw_perms = "0700"',
            'unix_sock_admin_perms = "0700"',
            'auth_unix_ro = "none"',
            'auth_unix_rw = "none"',
            f'log_outputs = "{s.log_level}:file:{paths.daemon_log}"',
            f"min_workers = {s.min_workers}",
            f"max_workers = {s.max_workers}",
            f"prio_workers = {s.prio_workers}",
            f"keepalive_interval = {s.keepalive_interval_s}",
            f"keepalive_count = {s.keepalive_count}",
            "",
        ]
    )


QEMU_CONF = "\n".join(
    [
        "# written by nfvha (src/nfvha/nfvi/libvirtd.py): QEMU as root, nothing confined",
        'user = "root"',
        'group = "root"',
        "dynamic_ownership = 0",
        "remember_owner = 0",
        'security_driver = "none"',
        # No cgroups: QEMU stays in the daemon's cgroup (the test-bed host's); nfvha's own
        # cgroup code may move a QEMU into a VM cgroup by pid.
        "cgroup_controllers = [ ]",
        # No private /dev (mount namespace) per QEMU: devices as the host has them.
        "namespaces = [ ]",
        # QEMU's stdout/stderr to log/qemu/<name>.log directly, no virtlogd daemon.
        'stdio_handler = "file"',
        "set_process_name = 1",
        "",
    ]
)


def write_config(paths: LibvirtdPaths, settings: LibvirtdSettings | None = None) -> None:
    """Create the directory tree and write libvirtd.conf, qemu.conf and the driver dir."""
    paths.check_lengths()
    for sub in SYSTEM_DIRS.values():
        (paths.base / sub).mkdir(parents=True, exist_ok=True)
    paths.drivers.mkdir(parents=True, exist_ok=True)
    paths.exits.mkdir(parents=True, exist_ok=True)
    atomic_write(paths.etc / "libvirtd.conf",
                 libvirtd_conf(paths, settings or LibvirtdSettings()).encode(), fsync=False)
    atomic_write(paths.etc / "qemu.conf", QEMU_CONF.encode(), fsync=False)
    link = paths.drivers / os.path.basename(QEMU_DRIVER_SO)
    if not link.is_symlink():
        link.symlink_to(QEMU_DRIVER_SO)


def daemon_argv(paths: LibvirtdPaths) -> list[str]:
    """libvirtd in a private mount namespace over the host's tree (exec'd: one pid)."""
    lines = []
    for system_dir, sub in SYSTEM_DIRS.items():
        lines.append(
            f"mount --bind {shlex.quote(str(paths.base / sub))} {shlex.quote(system_dir)}"
        )
    conf = shlex.quote(str(paths.etc / "libvirtd.conf"))
    lines.append(f"exec {LIBVIRTD} -f {conf} -p {shlex.quote(str(paths.pidfile))}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-ec", "\n".join(lines)]


def _mount_points() -> None:
    # The bind mounts need their mount points; on a machine without
    # libvirt-daemon-system only /etc/libvirt exists. Empty directories, left in place.
    for system_dir in SYSTEM_DIRS:
        os.makedirs(system_dir, exist_ok=True)


@dataclass(frozen=True)
class Libvirtd:
    """A running private daemon."""

    paths: LibvirtdPaths
    pid: int  # libvirtd
    start_ticks: int
    spawned_pid: int  # what we started: libvirtd itself or the reaper above it
    started_in_s: float  # from spawn to READY=1

    @property
    def uri(self) -> str:
        return self.paths.uri

    def alive(self) -> bool:
        return is_same_process(self.pid, self.start_ticks)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _notify_listener(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


async def _wait_ready(sock: socket.socket, spawned_pid: int, timeout_s: float) -> None:
    """Wait for READY=1 from the daemon, or for the process we started to die."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(spawned_pid)
    died = loop.create_future()
    loop.add_reader(pidfd, _set_once, died)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                recv = asyncio.ensure_future(loop.sock_recv(sock, 4096))
                done, _ = await asyncio.wait({recv, died}, return_when=asyncio.FIRST_COMPLETED)
                if recv in done:
                    if b"READY=1" in recv.result().split(b"\n"):
                        return
                    continue
                recv.cancel()
                raise LibvirtdError("libvirtd exited before it was ready")
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _log_tail(paths: LibvirtdPaths, n: int = 5) -> str:
    lines: list[str] = []
    for p in (paths.stdout_log, paths.daemon_log):
        with contextlib.suppress(OSError):
            lines += [ln for ln in p.read_text(errors="replace").splitlines() if ln.strip()][-n:]
    return " | ".join(lines[-n:])


async def start_libvirtd(
    paths: LibvirtdPaths,
    *,
    netns: str | None,
    settings: LibvirtdSettings | None = None,
    cgroup_procs: list[str] | None = None,
    subreaper: bool = False,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Libvirtd:
    """Write the config and start the daemon in ``netns``; returns once it serves.

    ``subreaper``: run it under :mod:`nfvha.nfvi.reaper` (where no host supervisor is the
    subreaper of its QEMUs; see that module). Raises :class:`LibvirtdError`.
    """
    why = missing_prerequisites()
    if why:
        raise LibvirtdError(why)
    old = running_daemon(paths)
    if old is not None:
        raise LibvirtdError(f"a libvirtd (pid {old[0]}) already serves {paths.base}")
    write_config(paths, settings)
    _mount_points()
    with contextlib.suppress(FileNotFoundError):
        paths.pidfile.unlink()
    argv = daemon_argv(paths)
    if subreaper:
        argv = [sys.executable, "-I", "-S", REAPER_SCRIPT, str(paths.exits), "--", *argv]
    env = dict(os.environ)
    env.update(extra_env or {})
    env["NOTIFY_SOCKET"] = str(paths.notify_socket)
    env["LIBVIRT_DRIVER_DIR"] = str(paths.drivers)
    sock = _notify_listener(paths.notify_socket)
    t0 = time.monotonic()
    try:
        spawned = await spawn_detached(
            argv,
            env=env,
            netns=netns,
            cgroup_procs=cgroup_procs,
            log=str(paths.stdout_log),
            pidfile=str(paths.spawn_pidfile),
        )
        try:
            await _wait_ready(sock, spawned.pid, ready_timeout)
        except TimeoutError:
            kill_pid(spawned.pid, signal.SIGKILL, ticks=spawned.start_ticks)
            raise LibvirtdError(
                f"libvirtd not ready in {ready_timeout}s: {_log_tail(paths)}"
            ) from None
        except LibvirtdError as e:
            raise LibvirtdError(f"{e}: {_log_tail(paths)}") from None
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            paths.notify_socket.unlink()
    started_in = time.monotonic() - t0
    pid = _read_pid(paths.pidfile) if subreaper else spawned.pid
    st = read_stat(pid) if pid else None
    if pid is None or st is None:
        raise LibvirtdError(f"libvirtd ready but its pid file {paths.pidfile} is unreadable")
    return Libvirtd(paths, pid, st.start_ticks, spawned.pid, started_in)


def running_daemon(paths: LibvirtdPaths) -> tuple[int, int] | None:
    """(pid, start ticks) of the libvirtd serving ``paths``, if one runs."""
    pid = _read_pid(paths.pidfile)
    if pid is None:
        return None
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    conf = os.fsencode(paths.etc / "libvirtd.conf")
    if not cmdline or not cmdline[0].endswith(b"libvirtd") or conf not in cmdline:
        return None
    return pid, st.start_ticks


async def _wait_gone(pid: int, ticks: int, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    gone = loop.create_future()
    loop.add_reader(fd, _set_once, gone)
    try:
        if not is_same_process(pid, ticks):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone, timeout_s)
        return not is_same_process(pid, ticks)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def stop_libvirtd(
    daemon: Libvirtd | LibvirtdPaths, *, timeout_s: float = STOP_TIMEOUT
) -> None:
    """SIGTERM the daemon (by pid), SIGKILL it after ``timeout_s``. Its QEMUs keep running."""
    if isinstance(daemon, Libvirtd):
        found: tuple[int, int] | None = (daemon.pid, daemon.start_ticks)
    else:
        found = running_daemon(daemon)
    if found is None:
        return
    pid, ticks = found
    if not kill_pid(pid, signal.SIGTERM, ticks=ticks):
        return
    if await _wait_gone(pid, ticks, timeout_s):
        return
    kill_pid(pid, signal.SIGKILL, ticks=ticks)
    if not await _wait_gone(pid, ticks, timeout_s):
        raise LibvirtdError(f"libvirtd pid {pid} survives SIGKILL")


def kill_libvirtd(daemon: Libvirtd) -> bool:
    """SIGKILL the daemon (a fault, or a crash stand-in). True if the signal was sent."""
    return kill_pid(daemon.pid, signal.SIGKILL, ticks=daemon.start_ticks)


def qemu_pid(paths: LibvirtdPaths, domain: str) -> int | None:
    """The pid of ``domain``'s QEMU as libvirt wrote it, if that QEMU still runs."""
    pidfile = paths.qemu_pidfile(domain)
    pid = _read_pid(pidfile)
    if pid is None or not _is_qemu_of(pid, pidfile, domain):
        return None
    return pid


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def _is_qemu_of(pid: int, pidfile: Path, domain: str) -> bool:
    """``pid`` is the QEMU of ``domain`` that wrote ``pidfile`` (not a reuse of its pid)."""
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        written = pidfile.stat().st_mtime
    except OSError:
        return False
    if not cmdline or b"qemu-system" not in os.path.basename(cmdline[0]):
        return False
    if f"guest={domain}".encode() not in b",".join(cmdline):
        return False
    started = _boot_time() + st.start_ticks / os.sysconf("SC_CLK_TCK")
    return started <= written + 1.0  # the process existed when the file was written


def leftover_pids(run_root: Path) -> list[tuple[int, int]]:
    """(pid, start ticks) of every libvirtd, reaper and QEMU a run's daemons left.

    For ``nfvha down``: found from the pid files under ``<run>/hosts/*/libvirt``.
    """
    found: list[tuple[int, int]] = []
    for base in sorted((run_root / "hosts").glob("*/libvirt")):
        paths = LibvirtdPaths(base)
        daemon = running_daemon(paths)
        if daemon is not None:
            found.append(daemon)
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            info = read_json(paths.spawn_pidfile)
            pid, ticks = int(info["pid"]), int(info["start_ticks"])
            if is_same_process(pid, ticks):
                found.append((pid, ticks))
        for pidfile in sorted((paths.run / "qemu").glob("*.pid")):
            qpid = _read_pid(pidfile)
            if qpid is not None and _is_qemu_of(qpid, pidfile, pidfile.stem):
                st = read_stat(qpid)
                if st is not None:
                    found.append((qpid, st.start_ticks))
    return list(dict.fromkeys(found))
