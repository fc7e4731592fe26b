"""What ``nfvha bench abuse`` watches while the API is flooded.

- ``ActiveWatch``: every service unit of the watched VNFs asked over its UDP service
  whether it serves (a thread of its own, so neither the API nor the benchmark's
  event loop stands between it and the components);
- ``AvailabilityPoll``: ``/v1/availability`` every 50 ms, on the benchmark's loop, and
  how long each answer took (a slow API is a finding of its own);
- the controller's memory: VmRSS of the controller and its HA director;
- the lease grants' lateness as the components saw it (the counter's ``GRANTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nfvha.bench.stats import percentile
from nfvha.testbed.observe import serving_round, udp_request
from nfvha.util.files import read_json
from nfvha.util.procs import is_same_process


@dataclass(frozen=True)
class WatchedVnf:
    name: str
    request: str  # what a serving SU answers positively: GET (a counter), STATS (an LB)
    n_sis: int  # an SI per serving SU at most: fewer serving than SIs is an SI without
    addrs: list[tuple[str, int]]


@dataclass
class VnfWatch:
    rounds: int = 0
    unanswered: int = 0  # rounds in which some SU did not answer in time: not counted
    lost: int = 0  # confirmed observations of an SI without an active
    first_lost_ns: int | None = None


class ActiveWatch:
    """Every ``interval_s`` each watched VNF's SUs are asked at once whether they serve.
    An SI lost its active when every SU answered and fewer serve than the VNF has SIs,
    in a round and in a second one sent at once (a handover between two answers of one
    round is no loss). A round in which an SU did not answer within ``timeout_s`` says
    nothing: on a loaded machine late is not the same as not serving."""

    def __init__(self, watched: list[WatchedVnf], *, interval_s: float = 0.02,
                 timeout_s: float = 0.2) -> None:
        self.watched = watched
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.seen: dict[str, VnfWatch] = {w.name: VnfWatch() for w in watched}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="active-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for w in self.watched:
                self._check(w)
            self._stop.wait(self.interval_s)

    def _check(self, w: WatchedVnf) -> None:
        seen = self.seen[w.name]
        seen.rounds += 1
        for _ in range(2):
            serving, answered = serving_round(w.addrs, w.request, self.timeout_s)
            if answered < len(w.addrs):
                seen.unanswered += 1
                return
            if serving >= w.n_sis:
                return
        seen.lost += 1
        if seen.first_lost_ns is None:
            seen.first_lost_ns = time.monotonic_ns()

    def summary(self) -> dict[str, Any]:
        return {name: {"rounds": s.rounds, "unanswered": s.unanswered, "lost": s.lost}
                for name, s in self.seen.items()}


@dataclass
class AvailabilityPoll:
    """``/v1/availability`` polled on the benchmark's loop: which watched VNFs the
    controller showed with an SI without an active, and how long it took to say so."""

    client: httpx.AsyncClient
    vnfs: list[str]
    interval_s: float = 0.05
    timeout_s: float = 10.0
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # polls showing it

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = await self.client.get("/v1/availability", timeout=self.timeout_s)
                r.raise_for_status()
                found = r.json()
            except (httpx.HTTPError, ValueError):
                self.failed += 1
            else:
                self.latencies_ms.append((time.monotonic() - t0) * 1e3)
                for a in found:
                    if a["vnf"] in self.vnfs and any(not si["active"]
                                                     for si in a["service_instances"]):
                        self.lost[a["vnf"]] = self.lost.get(a["vnf"], 0) + 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms

        def pct(p: float) -> float | None:
            return round(percentile(lat, p), 1) if lat else None

        return {"polls": len(lat), "failed": self.failed, "p50_ms": pct(50),
                "p99_ms": pct(99), "max_ms": round(max(lat), 1) if lat else None,
                "lost": dict(self.lost)}


# -- the controller's memory -------------------------------------------------------------


def rss_mb(pid_files: list[Path]) -> float:
    """The summed VmRSS of the processes the pid records name (MB). A process that is
    not running any more is an error: its memory cannot be compared."""
    total_kb = 0
    for path in pid_files:
        rec = read_json(path)
        pid, ticks = int(rec["pid"]), int(rec["start_ticks"])
        if not is_same_process(pid, ticks):
            raise RuntimeError(f"{path.stem} (pid {pid}) is not running")
        status = Path(f"/proc/{pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines()
                  if line.startswith("VmRSS:"))
        total_kb += kb
    return total_kb / 1024


def sched_ms(pid: int) -> tuple[float, float]:
    """(CPU time, time waiting on a run queue) of a process's main thread so far, in ms
    (``/proc/<pid>/schedstat``): over the flood, the second says whether a late
    process was starved of CPU or busy."""
    cpu_ns, wait_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(cpu_ns) / 1e6, int(wait_ns) / 1e6


# -- lease grants, as the components saw them --------------------------------------------


def grants_late_ms(addrs: dict[str, tuple[str, int]], *, reset: bool,
                   timeout_s: float = 0.5, tries: int = 4) -> dict[str, float]:
    """Per counter component: the longest wait from a lease request to its grant since
    the last reset (``GRANTS``; with ``reset`` the measurement starts again). A
    component that does not answer is an error."""
    out: dict[str, float] = {}
    request = "GRANTS RESET" if reset else "GRANTS"
    for name, addr in addrs.items():
        for _ in range(tries):
            answer = udp_request(addr, request, timeout_s)
            if answer is not None:
                break
        words = (answer or "").split()
        if len(words) != 4 or words[0] != "GRANTS":
            raise RuntimeError(f"{name} at {addr[0]}:{addr[1]}: {request} answered"
                               f" {answer!r}")
        out[name] = float(words[1])
    return out
