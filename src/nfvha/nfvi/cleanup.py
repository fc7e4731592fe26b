"""``nfvha down``: find and remove everything a run left behind, even after a crash.

A run is recognised by its tag ``nfvha-<run>`` on namespaces, root-namespace links,
cgroups and its run directory. Teardown order matters: processes die first (a live
process would keep a namespace or cgroup alive), then the network, then the cgroups,
then the files. Processes are killed by pid only: the run's cgroup subtree, the
processes inside the run's namespaces, the pids recorded in run.json (only while
their start time still matches, so a reused pid is never hit), and the private libvirt
daemons with their QEMUs, from their pid files under ``hosts/*/libvirt``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time

from nfvha.nfvi.cgroups import CgroupDriver, CgroupError, detect_cgroups
from nfvha.nfvi.fabric import destroy_fabric, list_fabric_objects, list_netns, list_root_links
from nfvha.nfvi.libvirtd import leftover_pids as libvirt_leftover_pids
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process, kill_pid, start_ticks
from nfvha.util.runpaths import RunPaths, run_root

_TAGGED_RE = re.compile(r"^nfvha-([a-z0-9]{5})(?:$|[-md])")
_RUN_DIR_RE = re.compile(r"^nfvha-([a-z0-9]{5})$")
KILL_TIMEOUT = 10.0


def _cgroups() -> CgroupDriver | None:
    try:
        return detect_cgroups()
    except CgroupError:
        return None  # no usable cgroup layout: nothing of ours can be there either


def find_runs() -> set[str]:
    """Run ids that have anything left on this machine."""
    runs: set[str] = set()
    for name in list_netns() + list_root_links():
        m = _TAGGED_RE.match(name)
        if m:
            runs.add(m.group(1))
    cg = _cgroups()
    if cg is not None:
        runs |= {name.removeprefix("nfvha-") for name in cg.list_runs()}
    with contextlib.suppress(FileNotFoundError):
        for p in run_root().iterdir():
            m = _RUN_DIR_RE.match(p.name)
            if m and p.is_dir():
                runs.add(m.group(1))
    return runs


def _netns_pids(netns: str) -> list[int]:
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(w) for w in done.stdout.split() if w.isdigit()]


def _recorded_pids(run: RunPaths) -> list[tuple[int, int]]:
    try:
        info = read_json(run.run_file)
    except (FileNotFoundError, ValueError):
        return []
    found: list[tuple[int, int]] = []
    for entry in info.get("pids", []) if isinstance(info, dict) else []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            found.append((int(entry["pid"]), int(entry["start_ticks"])))
    return found


RUN_MARKER = "NFVHA_RUN"


def _marked_pids(run_id: str) -> list[int]:
    """Processes whose environment carries ``NFVHA_RUN=<run_id>``: every process a run
    starts inherits the marker, so this finds them even without cgroups (the loopback
    test bed) and after the run's records are gone."""
    marker = f"{RUN_MARKER}={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env:
            found.append(int(entry.name))
    return found


def _kill_outside_cgroups(run: RunPaths, netnses: list[str]) -> int:
    """Kill the run's processes found by namespace or in run.json; wait until they are gone."""
    me = os.getpid()
    deadline = time.monotonic() + KILL_TIMEOUT
    killed: dict[int, int] = {}
    while True:
        targets = [(p, t) for p, t in _recorded_pids(run) if is_same_process(p, t)]
        # Private libvirt daemons, their reapers and their QEMUs, by their pid files.
        targets += libvirt_leftover_pids(run.root)
        for ns in netnses:
            for pid in _netns_pids(ns):
                ticks = start_ticks(pid)
                if ticks is not None:
                    targets.append((pid, ticks))
        for pid in _marked_pids(run.run_id):
                ticks = start_ticks(pid)
                if ticks is not None:
                    targets.append((pid, ticks))
        targets = [(p, t) for p, t in targets if p != me]
        if not targets:
            return len(killed)
        if time.monotonic() >= deadline:
            pids = sorted(p for p, _ in targets)
            raise RuntimeError(f"run {run.run_id}: processes {pids} survive SIGKILL")
        for pid, ticks in targets:
            if kill_pid(pid, signal.SIGKILL, ticks=ticks):
                killed[pid] = ticks
        while time.monotonic() < deadline and any(is_same_process(p, t) for p, t in targets):
            time.sleep(0.01)


def teardown_run(run_id: str, *, keep_files: bool = False) -> list[str]:
    """Remove everything of run ``run_id``; returns what was removed, for people."""
    run = RunPaths(run_id)
    removed: list[str] = []
    cg = _cgroups()

    if cg is not None and cg.exists(run.tag):
        n = len(cg.pids(run.tag))
        cg.kill_all(run.tag, timeout=KILL_TIMEOUT)
        if n:
            removed.append(f"killed {n} process(es) in cgroup {run.tag}")
    netnses, links = list_fabric_objects(run_id)
    n = _kill_outside_cgroups(run, netnses)
    if n:
        removed.append(f"killed {n} process(es) in namespaces of {run.tag} or from run.json")

    destroy_fabric(run_id)
    removed += [f"deleted netns {ns}" for ns in netnses]
    removed += [f"deleted link {link}" for link in links]

    if cg is not None and cg.exists(run.tag):
        cg.remove(run.tag, timeout=KILL_TIMEOUT)
        removed.append(f"removed cgroup {run.tag}")

    if not keep_files and run.root.exists():
        shutil.rmtree(run.root)
        removed.append(f"removed {run.root}")
    return removed
