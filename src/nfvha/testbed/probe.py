"""A service probe: hits a counter service every few milliseconds and records what it
sees, on CLOCK_MONOTONIC (machine-wide, the clock faults are injected on).

Each request is ``INC <session>`` on a fresh connected UDP socket, so a late reply to
an earlier request can never be mistaken for this one's. The counter's value says
whether acknowledged state survived: after a failover it must go on from the last
value the probe was told, never below.

A request is sent every interval whatever became of the earlier ones: a request
waits up to the timeout for its answer (none in time, or an ICMP error, is a
failure), but the next one is not held back by it. A probe that sent its next request
only after the previous one timed out would measure its own timeout as outage: a
service back 3 ms after a fault would look 20 ms down.

The probe runs in a process of its own (``python -m nfvha.testbed.probe``), so
neither the runner's event loop nor the interpreter lock of the process that injects
faults and waits for events can delay a send or a receipt time stamp. Finished
samples come back to ``ServiceProbe`` one line each, in send order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    sent_ns: int
    reply_ns: int | None  # None: no (usable) answer within the timeout
    value: int | None = None
    responder: str | None = None
    # Why a request failed: "timeout", "late" (answered after the timeout), "refused"
    # (ICMP port unreachable), "unreachable" (could not be sent), "error" (an answer
    # that is not service, such as ``ERR not-active``).
    failure: str | None = None

    def line(self) -> str:
        """The wire form between the probe process and ``ServiceProbe``."""
        return " ".join("-" if x is None else str(x) for x in (
            "S", self.sent_ns, self.reply_ns, self.value, self.responder, self.failure))

    @classmethod
    def parse(cls, line: str) -> Sample | None:
        words = line.split()
        if len(words) != 6 or words[0] != "S":
            return None
        try:
            sent = int(words[1])
            reply = None if words[2] == "-" else int(words[2])
            value = None if words[3] == "-" else int(words[3])
        except ValueError:
            return None
        return cls(sent, reply, value, None if words[4] == "-" else words[4],
                   None if words[5] == "-" else words[5])


@dataclass(frozen=True)
class Outage:
    start_ns: int  # the first failed request's send time
    end_ns: int  # the first answer after the last failure

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class ServiceProbe:
    """``start()``, ``snapshot()`` while it runs, ``stop()``: the probe process and a
    thread here that collects its samples."""

    def __init__(self, addr: tuple[str, int], session: str, *, interval_s: float = 0.005,
                 timeout_s: float = 0.02, stateful: bool = True) -> None:
        self.addr = addr
        self.session = session
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stateful = stateful
        self.samples: list[Sample] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nfvha.testbed.probe", "--addr",
             f"{self.addr[0]}:{self.addr[1]}", "--session", self.session,
             "--interval-ms", str(self.interval_s * 1e3),
             "--timeout-ms", str(self.timeout_s * 1e3)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._collect, name="probe-samples",
                                        daemon=True)
        self._reader.start()

    def stop(self) -> None:
        """Stop probing; the samples of requests still waiting for an answer are
        flushed first."""
        proc = self._proc
        if proc is None:
            return
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # end of input: the probe flushes and exits
        try:
            proc.wait(timeout=max(2.0, 10 * self.timeout_s))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def _collect(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = Sample.parse(line)
            if sample is not None:
                with self._lock:
                    self.samples.append(sample)


@dataclass
class _Request:
    sent_ns: int
    sock: socket.socket | None
    sample: Sample | None = None  # set once finished


class _Prober:
    """The probe process's loop: one request per interval, each waiting up to the
    timeout on a socket of its own, all watched by one selector."""

    def __init__(self, addr: tuple[str, int], session: str, interval_ns: int,
                 timeout_ns: int, out: _LineOut) -> None:
        self.addr = addr
        self.session = session
        self.request = f"INC {session}".encode()
        self.interval_ns = interval_ns
        self.timeout_ns = timeout_ns
        self.out = out
        self.sel = selectors.DefaultSelector()
        self.open: deque[_Request] = deque()  # in send order, until handed on

    def run(self, stop_fd: int) -> None:
        self.sel.register(stop_fd, selectors.EVENT_READ, None)
        next_ns = time.monotonic_ns()
        while True:
            now = time.monotonic_ns()
            if now >= next_ns:
                self._send()
                next_ns += self.interval_ns
                if next_ns <= now:
                    next_ns = now + self.interval_ns  # fell behind: do not burst
            self._expire(time.monotonic_ns())
            deadline = next_ns
            waiting = [r.sent_ns for r in self.open if r.sample is None]
            if waiting:
                deadline = min(deadline, waiting[0] + self.timeout_ns)
            wait_s = max(0.0, (deadline - time.monotonic_ns()) / 1e9)
            for key, _ in self.sel.select(wait_s):
                if key.data is None:  # stdin: EOF (or anything) ends the probe
                    self.sel.unregister(stop_fd)
                    self._finish()
                    return
                self._receive(key.data)
            self._flush()

    def _send(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        req = _Request(time.monotonic_ns(), sock)
        self.open.append(req)
        try:
            sock.connect(self.addr)
            sock.send(self.request)
        except OSError:
            self._done(req, Sample(req.sent_ns, None, failure="unreachable"))
            return
        self.sel.register(sock, selectors.EVENT_READ, req)

    def _receive(self, req: _Request) -> None:
        if req.sock is None:
            return
        try:
            data = req.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:  # refused (ICMP port unreachable): nobody serves there
            self._done(req, Sample(req.sent_ns, None, failure="refused"))
            return
        now = time.monotonic_ns()
        sample = Sample(req.sent_ns, None, failure="error")  # "ERR not-active ...": not service
        words = data.decode(errors="replace").split()
        if now - req.sent_ns > self.timeout_ns:
            sample = Sample(req.sent_ns, None, failure="late")
        elif len(words) == 4 and words[0] == "OK" and words[1] == self.session:
            with contextlib.suppress(ValueError):
                sample = Sample(req.sent_ns, now, int(words[2]), words[3])
        self._done(req, sample)

    def _expire(self, now: int) -> None:
        for req in self.open:
            if req.sample is None and now - req.sent_ns > self.timeout_ns:
                self._done(req, Sample(req.sent_ns, None, failure="timeout"))

    def _done(self, req: _Request, sample: Sample) -> None:
        req.sample = sample
        if req.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(req.sock)
            req.sock.close()
            req.sock = None

    def _flush(self) -> None:
        """Hand on finished samples in send order."""
        while self.open and (sample := self.open[0].sample) is not None:
            self.open.popleft()
            self.out.write(sample.line())
        self.out.flush()

    def _finish(self) -> None:
        """Stopped: let the requests in flight have their time, then hand them on."""
        while self.open and self.open[-1].sample is None:
            wait_s = (self.open[-1].sent_ns + self.timeout_ns - time.monotonic_ns()) / 1e9
            for key, _ in self.sel.select(max(0.0, wait_s)):
                if key.data is not None:
                    self._receive(key.data)
            self._expire(time.monotonic_ns())
        self._flush()


class _LineOut:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf: list[str] = []

    def write(self, line: str) -> None:
        self.buf.append(line + "\n")

    def flush(self) -> None:
        if self.buf:
            data, self.buf = "".join(self.buf).encode(), []
            while data:
                data = data[os.write(self.fd, data):]


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


def first_answer_after(samples: list[Sample], fault_ns: int) -> int | None:
    """When the service answered first after a fault: the end of the first
    interruption after it; with none, the first answer from a responder other than the
    one that answered last before the fault (the probe fell between two requests);
    None if neither (the fault did not move the service)."""
    outages = outages_after(samples, fault_ns)
    if outages:
        end = outages[0].end_ns
        return end if any(s.reply_ns == end for s in samples) else None
    before = [s.responder for s in samples if s.sent_ns < fault_ns and s.reply_ns is not None]
    for s in samples:
        if s.sent_ns >= fault_ns and s.reply_ns is not None and before \
                and s.responder != before[-1]:
            return s.reply_ns
    return None


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


def _take_priority() -> None:
    """Run ahead of everything else on the machine, as a measuring instrument must: on a
    busy machine a probe that waits for the CPU sends late (a gap looks like service)
    and reads late (an answer in time looks like a timeout). Real-time FIFO at the
    lowest priority where allowed (root), else the highest nice value allowed; the
    probe needs a few microseconds per request, and the kernel's real-time throttling
    bounds what any real-time task may take."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return
    except (OSError, AttributeError):
        pass
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)


def main(argv: list[str] | None = None) -> int:
    """``python -m nfvha.testbed.probe --addr IP:PORT --session S``: probe until
    standard input ends; one line per finished request on standard output."""
    parser = argparse.ArgumentParser(prog="nfvha.testbed.probe", description=main.__doc__)
    parser.add_argument("--addr", required=True, help="IP:PORT of the service")
    parser.add_argument("--session", required=True)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--timeout-ms", type=float, default=20.0)
    args = parser.parse_args(argv)
    host, _, port = str(args.addr).rpartition(":")
    if not host or not port.isdigit() or args.interval_ms <= 0 or args.timeout_ms <= 0:
        parser.error("--addr IP:PORT, and positive --interval-ms and --timeout-ms")
    prober = _Prober((host, int(port)), args.session, int(args.interval_ms * 1e6),
                     int(args.timeout_ms * 1e6), _LineOut(sys.stdout.fileno()))
    _take_priority()
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        prober.run(sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
