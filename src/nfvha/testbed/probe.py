"""A service probe: hits a counter service every few milliseconds and records what it
sees, on CLOCK_MONOTONIC (machine-wide, the clock faults are injected on).

Each request is ``INC <session>`` on a fresh connected UDP socket, so a late reply to
an earlier request can never be mistaken for this one's. The counter's value says
whether acknowledged state survived: after a failover it must go on from the last
value the probe was told, never below.

It runs in a thread of its own so that its timing does not depend on the event loop
of the runner that injects faults and waits for events.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    sent_ns: int
    reply_ns: int | None  # None: no (usable) answer within the timeout
    value: int | None = None
    responder: str | None = None


@dataclass(frozen=True)
class Outage:
    start_ns: int  # the first failed request's send time
    end_ns: int  # the first answer after the last failure

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class ServiceProbe:
    def __init__(self, addr: tuple[str, int], session: str, *, interval_s: float = 0.005,
                 timeout_s: float = 0.02, stateful: bool = True) -> None:
        self.addr = addr
        self.session = session
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stateful = stateful
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def _run(self) -> None:
        request = f"INC {self.session}".encode()
        next_at = time.monotonic()
        while not self._stop.is_set():
            sample = self._one(request)
            with self._lock:
                self.samples.append(sample)
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # fell behind (a timeout): do not burst

    def _one(self, request: bytes) -> Sample:
        sent = time.monotonic_ns()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(self.timeout_s)
                s.connect(self.addr)
                s.send(request)
                data = s.recv(4096)
        except OSError:  # timeout, refused (ICMP), unreachable
            return Sample(sent, None)
        now = time.monotonic_ns()
        words = data.decode(errors="replace").split()
        if len(words) == 4 and words[0] == "OK" and words[1] == self.session:
            try:
                return Sample(sent, now, int(words[2]), words[3])
            except ValueError:
                pass
        return Sample(sent, None)  # "ERR not-active ...": not service


def outages_after(samples: list[Sample], fault_ns: int) -> list[Outage]:
    """Every interruption after ``fault_ns``: a run of consecutive failed requests,
    from the first one's send time to the next answer (or the last request sent,
    if the service never came back)."""
    after = [s for s in samples if s.sent_ns >= fault_ns]
    out: list[Outage] = []
    start: int | None = None
    for s in after:
        if s.reply_ns is None:
            if start is None:
                start = s.sent_ns
        elif start is not None:
            out.append(Outage(start, s.reply_ns))
            start = None
    if start is not None:
        out.append(Outage(start, after[-1].sent_ns))
    return out


def outage_after(samples: list[Sample], fault_ns: int) -> Outage | None:
    """The service outage a fault caused: the longest interruption after it (a
    failover, and later a short one while a repaired standby takes its first state
    sync, are two interruptions, not one long one)."""
    return max(outages_after(samples, fault_ns), key=lambda o: o.ms, default=None)


def lost_increments(samples: list[Sample]) -> int:
    """Acknowledged increments the service forgot: every answer must be above the
    highest value acknowledged before it."""
    highest = 0
    lost = 0
    for s in samples:
        if s.value is None:
            continue
        if s.value <= highest:
            lost = max(lost, highest - s.value + 1)
        highest = max(highest, s.value)
    return lost
