"""Control groups for the local NFVI: limits, freezing, accounting and killing a subtree.

A cgroup is named by a path relative to the cgroup root, like ``nfvha-ab1cd/host1/vm-vm1``
(the first component is always the run's tag, so nothing here can touch a cgroup that
is not ours). The same relative path exists in every hierarchy we use: with cgroup v1
that is one directory per controller hierarchy (memory, cpu, cpuacct, freezer, pids),
with pure cgroup v2 it is one directory in the unified tree.

Only the standard library is used: small, fast processes (the spawner, the host
supervisor) import this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUN_DIR_RE = re.compile(r"^nfvha-[a-z0-9]{5}$")
CFS_PERIOD_US = 100_000
# v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (about 2**63); anything this
# large is not a real limit.
_UNLIMITED_THRESHOLD = 1 << 60


class CgroupError(RuntimeError):
    """A cgroup operation failed (bad layout, refused write, processes that do not die)."""


class CgroupDriver(Protocol):
    version: int

    def create(
        self, rel: str, *, memory_bytes: int | None = None, cpu_cores: float | None = None,
        cpu_weight: int | None = None,
    ) -> None:
        """Create ``rel`` (and its parents). ``cpu_weight``: its share of the CPU among
        its siblings when they all want one, as cgroup v2's ``cpu.weight`` (1..10000,
        100 is the default)."""
        ...

    def add_pid(self, rel: str, pid: int) -> None: ...

    def procs_files(self, rel: str) -> list[str]: ...

    def pids(self, rel: str, *, recursive: bool = True) -> list[int]: ...

    def exists(self, rel: str) -> bool: ...

    def freeze(self, rel: str, *, timeout: float = 5.0) -> None: ...

    def thaw(self, rel: str) -> None: ...

    def is_frozen(self, rel: str) -> bool: ...

    def memory_usage_bytes(self, rel: str) -> int | None: ...

    def memory_limit_bytes(self, rel: str) -> int | None: ...

    def cpu_usage_ns(self, rel: str) -> int | None: ...

    def oom_kill_count(self, rel: str) -> int | None: ...

    def kill_all(self, rel: str, *, timeout: float = 5.0) -> None: ...

    def remove(self, rel: str, *, timeout: float = 5.0) -> None: ...

    def list_runs(self) -> set[str]: ...


def detect_cgroups(root: Path = CGROUP_ROOT) -> CgroupDriver:
    """The driver for this machine: pure v2 if the root is a cgroup2 mount, else v1."""
    if (root / "cgroup.controllers").exists():
        return CgroupV2(root)
    return CgroupV1(root)


def cgroup_procs_paths(driver: CgroupDriver, rel: str) -> list[str]:
    """Absolute ``cgroup.procs`` paths a new process writes its pid to (see spawn.py)."""
    return driver.procs_files(rel)


def _check_weight(weight: int) -> int:
    if not 1 <= weight <= 10_000:
        raise ValueError(f"cpu_weight must be 1..10000, not {weight}")
    return weight


# --- small file helpers -------------------------------------------------------------


def check_rel(rel: str) -> str:
    """``rel`` normalised; refuses anything outside an ``nfvha-<run>`` subtree."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or not RUN_DIR_RE.match(parts[0]):
        raise ValueError(f"cgroup path {rel!r} is not inside an nfvha-<run> cgroup")
    return "/".join(parts)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):  # cgroup removed while reading
            return None
        raise


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _read_keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed file like memory.events or cpu.stat."""
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files act on each write, and a refused value shows
    # as an errno on that write.
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError as e:
        raise CgroupError(f"{path} does not exist") from e
    try:
        os.write(fd, value.encode())
    except OSError as e:
        if e.errno == errno.ESRCH:
            raise ProcessLookupError(f"no such process writing {value!r} to {path}") from e
        raise CgroupError(f"writing {value!r} to {path}: {e.strerror}") from e
    finally:
        os.close(fd)


def _poll_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Re-check ``condition`` with a short back-off until it holds or ``deadline`` passes."""
    delay = 0.001
    while True:
        if condition():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, 0.05)


def _subtree_dirs(top: Path) -> Iterator[Path]:
    """``top`` and every cgroup below it, children before parents."""
    if not top.is_dir():
        return
    for dirpath, _dirnames, _files in os.walk(top, topdown=False):
        yield Path(dirpath)


def _procs_in(directory: Path, recursive: bool) -> set[int]:
    found: set[int] = set()
    dirs = list(_subtree_dirs(directory)) if recursive else [directory]
    for d in dirs:
        text = _read(d / "cgroup.procs")
        if text:
            found.update(int(x) for x in text.split())
    return found


def _rmdir_tree(top: Path, deadline: float) -> None:
    for d in _subtree_dirs(top):

        def removed(d: Path = d) -> bool:
            try:
                d.rmdir()
            except FileNotFoundError:
                return True
            except OSError as e:
                # EBUSY right after the last process exits: the kernel is still
                # tearing the cgroup down.
                if e.errno != errno.EBUSY:
                    raise CgroupError(f"rmdir {d}: {e.strerror}") from e
                return False
            return True

        if not _poll_until(removed, deadline):
            raise CgroupError(f"rmdir {d}: still busy")


# --- shared logic ---------------------------------------------------------------------


class _CgroupBase:
    """What v1 and v2 share: everything is expressed over a list of hierarchy roots."""

    version: int = 0

    def __init__(self, hierarchies: list[Path]) -> None:
        self._hierarchies = hierarchies

    def _dirs(self, rel: str) -> list[Path]:
        rel = check_rel(rel)
        return [h / rel for h in self._hierarchies]

    def procs_files(self, rel: str) -> list[str]:
        return [str(d / "cgroup.procs") for d in self._dirs(rel)]

    def add_pid(self, rel: str, pid: int) -> None:
        for d in self._dirs(rel):
            _write(d / "cgroup.procs", str(pid))

    def pids(self, rel: str, *, recursive: bool = True) -> list[int]:
        # A process could have been put in only some hierarchies: take the union.
        found: set[int] = set()
        for d in self._dirs(rel):
            found |= _procs_in(d, recursive)
        return sorted(found)

    def exists(self, rel: str) -> bool:
        return any(d.is_dir() for d in self._dirs(rel))

    def list_runs(self) -> set[str]:
        runs: set[str] = set()
        for h in self._hierarchies:
            with contextlib.suppress(FileNotFoundError):
                runs.update(p.name for p in h.iterdir() if p.is_dir() and RUN_DIR_RE.match(p.name))
        return runs

    # Hooks for kill_all.
    def freeze(self, rel: str, *, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def _thaw_subtree(self, rel: str) -> None:
        raise NotImplementedError

    def _kill_whole_tree(self, rel: str) -> bool:
        """Kill the subtree atomically if the kernel can (v2 cgroup.kill). True if done."""
        return False

    def kill_all(self, rel: str, *, timeout: float = 5.0) -> None:
        """SIGKILL every process in the subtree and wait until it is empty.

        Freezing first stops processes from forking new ones between listing the pids and
        killing them; a frozen process only dies once thawed, so the whole subtree is
        thawed again (including children frozen on their own, e.g. a frozen VM).
        """
        if not self.exists(rel):
            return
        deadline = time.monotonic() + timeout
        if self._kill_whole_tree(rel) and _poll_until(lambda: not self.pids(rel), deadline):
            return
        while True:
            with contextlib.suppress(CgroupError):
                # A process stuck in uninterruptible sleep can keep the freeze from
                # completing; kill what we can anyway.
                self.freeze(rel, timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            for pid in self.pids(rel):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._thaw_subtree(rel)
            round_deadline = min(deadline, time.monotonic() + 0.5)
            if _poll_until(lambda: not self.pids(rel), round_deadline):
                return
            if time.monotonic() >= deadline:
                raise CgroupError(f"cgroup {rel}: processes {self.pids(rel)} survive SIGKILL")

    def remove(self, rel: str, *, timeout: float = 5.0) -> None:
        """Kill everything in the subtree, then remove its directories in every hierarchy."""
        deadline = time.monotonic() + timeout
        self.kill_all(rel, timeout=timeout)
        for d in self._dirs(rel):
            _rmdir_tree(d, deadline)


# --- cgroup v1 --------------------------------------------------------------------------


class CgroupV1(_CgroupBase):
    """One directory per controller hierarchy under ``root`` (memory, cpu, freezer, ...)."""

    version: int = 1

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        for name in ("memory", "cpu", "freezer"):
            if not (root / name / "cgroup.procs").exists():
                raise CgroupError(f"cgroup v1 hierarchy {root / name} is not mounted")
        self.memory = root / "memory"
        self.cpu = root / "cpu"
        self.freezer = root / "freezer"
        # cpuacct is its own hierarchy on some machines and co-mounted with cpu
        # ("cpu,cpuacct") on others.
        cpuacct = root / "cpuacct"
        if (cpuacct / "cpuacct.usage").exists():
            self.cpuacct: Path | None = cpuacct
        elif (self.cpu / "cpuacct.usage").exists():
            self.cpuacct = self.cpu
        else:
            self.cpuacct = None
        candidates = [self.memory, self.cpu, self.cpuacct, self.freezer]
        if (root / "pids" / "cgroup.procs").exists():
            candidates.append(root / "pids")
        seen: set[str] = set()
        hierarchies: list[Path] = []
        for c in candidates:
            if c is None:
                continue
            real = os.path.realpath(c)
            if real not in seen:
                seen.add(real)
                hierarchies.append(c)
        super().__init__(hierarchies)

    def create(
        self, rel: str, *, memory_bytes: int | None = None, cpu_cores: float | None = None,
        cpu_weight: int | None = None,
    ) -> None:
        rel = check_rel(rel)
        for d in self._dirs(rel):
            d.mkdir(parents=True, exist_ok=True)
        if cpu_weight is not None:
            # v1 shares: 1024 is the default, as weight 100 is on v2.
            _write(self.cpu / rel / "cpu.shares", str(_check_weight(cpu_weight) * 1024 // 100))
        if memory_bytes is not None:
            self._set_memory_limit(self.memory / rel, memory_bytes)
        if cpu_cores is not None:
            if cpu_cores <= 0:
                raise ValueError(f"cpu_cores must be positive, not {cpu_cores}")
            _write(self.cpu / rel / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            _write(
                self.cpu / rel / "cpu.cfs_quota_us", str(max(1000, int(cpu_cores * CFS_PERIOD_US)))
            )

    @staticmethod
    def _set_memory_limit(d: Path, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"memory limit must be positive, not {limit}")
        memsw = d / "memory.memsw.limit_in_bytes"
        if not memsw.exists():
            _write(d / "memory.limit_in_bytes", str(limit))
            return
        # memory+swap is limited too, so swapping cannot hide a leak. The kernel insists
        # on memsw >= mem at every step, so the order of the two writes depends on
        # whether the limit goes up or down.
        current_memsw = _read_int(memsw)
        if current_memsw is not None and limit > current_memsw:
            _write(memsw, str(limit))
            _write(d / "memory.limit_in_bytes", str(limit))
        else:
            _write(d / "memory.limit_in_bytes", str(limit))
            _write(memsw, str(limit))

    def _freezer_state(self, rel: str) -> str | None:
        text = _read(self.freezer / check_rel(rel) / "freezer.state")
        return None if text is None else text.strip()

    def freeze(self, rel: str, *, timeout: float = 5.0) -> None:
        _write(self.freezer / check_rel(rel) / "freezer.state", "FROZEN")
        # Reading freezer.state makes the kernel re-check FREEZING -> FROZEN.
        ok = _poll_until(lambda: self._freezer_state(rel) == "FROZEN", time.monotonic() + timeout)
        if not ok:
            raise CgroupError(f"cgroup {rel}: still {self._freezer_state(rel)} after {timeout}s")

    def thaw(self, rel: str) -> None:
        _write(self.freezer / check_rel(rel) / "freezer.state", "THAWED")

    def _thaw_subtree(self, rel: str) -> None:
        for d in _subtree_dirs(self.freezer / check_rel(rel)):
            with contextlib.suppress(CgroupError):
                _write(d / "freezer.state", "THAWED")

    def is_frozen(self, rel: str) -> bool:
        """True while a freeze is in force (FROZEN, or FREEZING not yet complete)."""
        return self._freezer_state(rel) in ("FROZEN", "FREEZING")

    def memory_usage_bytes(self, rel: str) -> int | None:
        return _read_int(self.memory / check_rel(rel) / "memory.usage_in_bytes")

    def memory_limit_bytes(self, rel: str) -> int | None:
        value = _read_int(self.memory / check_rel(rel) / "memory.limit_in_bytes")
        return None if value is None or value >= _UNLIMITED_THRESHOLD else value

    def cpu_usage_ns(self, rel: str) -> int | None:
        if self.cpuacct is None:
            return None
        return _read_int(self.cpuacct / check_rel(rel) / "cpuacct.usage")

    def oom_kill_count(self, rel: str) -> int | None:
        return _read_keyed(self.memory / check_rel(rel) / "memory.oom_control", "oom_kill")


# --- cgroup v2 --------------------------------------------------------------------------


class CgroupV2(_CgroupBase):
    """The unified hierarchy mounted at ``root``."""

    version: int = 2
    _CONTROLLERS = ("memory", "cpu", "pids")

    def __init__(self, root: Path = CGROUP_ROOT) -> None:
        if not (root / "cgroup.controllers").exists():
            raise CgroupError(f"{root} is not a cgroup v2 mount")
        self.root = root
        super().__init__([root])

    def _enable_controllers(self, d: Path) -> None:
        """Let the children of ``d`` use memory/cpu/pids, as far as ``d`` has them."""
        available = (_read(d / "cgroup.controllers") or "").split()
        enabled = (_read(d / "cgroup.subtree_control") or "").split()
        for c in self._CONTROLLERS:
            if c in available and c not in enabled:
                # Refused when d has processes of its own ("no internal processes"),
                # e.g. a container's root: the limits below then report what is missing.
                with contextlib.suppress(CgroupError):
                    _write(d / "cgroup.subtree_control", f"+{c}")

    def create(
        self, rel: str, *, memory_bytes: int | None = None, cpu_cores: float | None = None,
        cpu_weight: int | None = None,
    ) -> None:
        rel = check_rel(rel)
        parts = rel.split("/")
        parent = self.root
        for part in parts:
            self._enable_controllers(parent)
            parent = parent / part
            parent.mkdir(exist_ok=True)
        d = self.root / rel
        if memory_bytes is not None:
            if memory_bytes <= 0:
                raise ValueError(f"memory limit must be positive, not {memory_bytes}")
            if not (d / "memory.max").exists():
                raise CgroupError(f"cgroup {rel}: the memory controller is not available")
            _write(d / "memory.max", str(memory_bytes))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
        if cpu_cores is not None:
            if cpu_cores <= 0:
                raise ValueError(f"cpu_cores must be positive, not {cpu_cores}")
            if not (d / "cpu.max").exists():
                raise CgroupError(f"cgroup {rel}: the cpu controller is not available")
            quota = max(1000, int(cpu_cores * CFS_PERIOD_US))
            _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
        if cpu_weight is not None:
            if not (d / "cpu.weight").exists():
                raise CgroupError(f"cgroup {rel}: the cpu controller is not available")
            _write(d / "cpu.weight", str(_check_weight(cpu_weight)))

    def _frozen_event(self, rel: str) -> bool:
        return _read_keyed(self.root / check_rel(rel) / "cgroup.events", "frozen") == 1

    def freeze(self, rel: str, *, timeout: float = 5.0) -> None:
        _write(self.root / check_rel(rel) / "cgroup.freeze", "1")
        if not _poll_until(lambda: self._frozen_event(rel), time.monotonic() + timeout):
            raise CgroupError(f"cgroup {rel}: not frozen after {timeout}s")

    def thaw(self, rel: str) -> None:
        _write(self.root / check_rel(rel) / "cgroup.freeze", "0")

    def _thaw_subtree(self, rel: str) -> None:
        for d in _subtree_dirs(self.root / check_rel(rel)):
            with contextlib.suppress(CgroupError):
                _write(d / "cgroup.freeze", "0")

    def is_frozen(self, rel: str) -> bool:
        """True while a freeze is in force on this cgroup or an ancestor."""
        d = self.root / check_rel(rel)
        return _read_int(d / "cgroup.freeze") == 1 or self._frozen_event(rel)

    def _kill_whole_tree(self, rel: str) -> bool:
        kill_file = self.root / check_rel(rel) / "cgroup.kill"
        if not kill_file.exists():  # before Linux 5.14
            return False
        _write(kill_file, "1")
        return True

    def memory_usage_bytes(self, rel: str) -> int | None:
        return _read_int(self.root / check_rel(rel) / "memory.current")

    def memory_limit_bytes(self, rel: str) -> int | None:
        return _read_int(self.root / check_rel(rel) / "memory.max")  # "max" reads as None

    def cpu_usage_ns(self, rel: str) -> int | None:
        usec = _read_keyed(self.root / check_rel(rel) / "cpu.stat", "usage_usec")
        return None if usec is None else usec * 1000

    def oom_kill_count(self, rel: str) -> int | None:
        return _read_keyed(self.root / check_rel(rel) / "memory.events", "oom_kill")
