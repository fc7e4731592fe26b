"""``nfvha bench alarms``: fault management under load.

- ingest: events/s from agent streams (TCP, one per host) through the group-committed
  store, alarm manager and durable notification queue, notifications flowing to a
  subscriber;
- notify: alarm change -> received by each of 100 webhook subscribers (in a
  separate receiver process), at a steady rate; again with one dead subscriber
  added, to see what it costs the others;
- e2e: VM crash on the real test bed -> AlarmNotification received.
All times are CLOCK_MONOTONIC, machine-wide.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nfvha.bench.stats import percentile
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.faults import FaultManagement
from nfvha.controller.hoststates import HostStates
from nfvha.faults.manager import AlarmManager
from nfvha.faults.model import FmSubscriptionRequest
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.model.topology import Topology, load_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.testbed.deploy import Testbed, free_tcp_port
from nfvha.testbed.faults import FaultInjector
from nfvha.testbed.observe import wait_serving
from nfvha.util.clock import SYSTEM_CLOCK
from nfvha.wire.frames import CONTROLLER_FRAME, Ack, EventFrame, Hello, encode


@dataclass
class Received:
    ns: int
    port: int
    kind: str
    alarm_id: str
    resource: str


@dataclass
class ReceiverProcess:
    proc: asyncio.subprocess.Process | None = None
    ports: list[int] = field(default_factory=list)
    got: list[Received] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def start(self, n: int) -> list[int]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nfvha.bench.receiver", str(n),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        first = (await self.proc.stdout.readline()).decode().split()
        self.ports = [int(p) for p in first[1:]]
        self._reader = asyncio.create_task(self._read())
        return self.ports

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            ns, port, kind, alarm_id, resource = line.decode().split()
            self.got.append(Received(int(ns), int(port), kind, alarm_id, resource))
            self.changed.set()

    async def wait_until(self, cond: Callable[[], bool], timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while not cond():
            self.changed.clear()
            remaining = end - loop.time()
            if remaining <= 0:
                raise TimeoutError("notifications did not all arrive")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    async def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


def dead_callback() -> str:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dead"


class Pipeline:
    """The controller's fault-management path, in process, on files in ``tmp``."""

    def __init__(self, topology: Topology, tmp: Path) -> None:
        self.store = SqliteEventStore(tmp / "events.db")
        self.alarm_store = SqliteAlarmStore(tmp / "events.db")
        self.ager = SqliteAlarmStore(tmp / "events.db")
        self.outbox = Outbox(tmp / "notifications.db")
        self.bus = EventBus(self.store, SYSTEM_CLOCK)
        self.manager = AlarmManager(topology, self.alarm_store, SYSTEM_CLOCK, topology.settings)
        self.faults = FaultManagement(self.manager, self.ager, topology.settings, SYSTEM_CLOCK)
        self.bus.subscribe(self.faults.on_events)
        self.notifier = Notifier(self.outbox, SYSTEM_CLOCK)
        self.seq: dict[str, int] = {}

    async def start(self, callbacks: list[str]) -> None:
        await self.notifier.start()
        self.faults.notify_through(self.notifier, AlarmStream(), "http://bench/vnffm/v1")
        for url in callbacks:
            self.notifier.subscribe(FmSubscriptionRequest(callbackUri=url), "http://bench")

    def event(self, kind: Kind, entity: str, host: str, clears: bool = False) -> Event:
        self.seq[host] = self.seq.get(host, 0) + 1
        return Event(host=host, seq=self.seq[host], kind=kind, entity=entity,
                     severity=Severity.CLEARED if clears else Severity.MAJOR,
                     event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="bench",
                     clears=clears, event_time=time.time(),
                     detected_mono_ns=time.monotonic_ns())

    async def close(self) -> None:
        self.bus.close()
        await self.notifier.close()
        for c in (self.outbox, self.ager, self.alarm_store, self.store):
            c.close()


@dataclass
class IngestResult:
    events_per_s: float
    commits: int
    notifications_delivered: int


async def _agent_stream(port: int, host: str, frames: list[bytes], last_seq: int
                        ) -> asyncio.StreamWriter:
    """One agent: hello, then every event frame as fast as TCP takes them (the real
    agent sends each event the moment it happens and keeps it until acknowledged);
    returns when the controller has acknowledged the last one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Hello(host=host, agent_pid=0, incarnation=f"bench-{host}",
                              started_time=time.time())))
    await reader.readline()  # welcome
    for f in frames:
        writer.write(f)
    await writer.drain()
    acked, tail = 0, b""
    while acked < last_seq:
        chunk = await reader.read(1 << 16)
        if not chunk:
            raise ConnectionError(f"controller closed {host}'s stream at ack {acked}")
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        for line in reversed(lines):
            frame = CONTROLLER_FRAME.validate_json(line)
            if isinstance(frame, Ack):
                acked = frame.seq
                break
    return writer  # closed after the controller: an agent leaving is not what is measured


async def ingest(topology: Topology, n_events: int) -> IngestResult:
    """Events/s from agent streams to stored events, decided alarms and durably queued
    notifications (an event is acknowledged only after all three), one stream per
    host of the topology, with a subscriber receiving meanwhile. Each VNFC crashes
    three times (one alarm, two collapsed into it) and is restarted (cleared)."""
    rx = ReceiverProcess()
    ports = await rx.start(1)
    by_host: dict[str, list[bytes]] = {h: [] for h in topology.host_names()}
    with tempfile.TemporaryDirectory(prefix="nfvha-bench-") as tmp:
        p = Pipeline(topology, Path(tmp))
        await p.start([f"http://127.0.0.1:{ports[0]}/n"])
        comps = [(c.name, topology.vm(c.vm).host) for _, c in topology.components()]
        for i in range(n_events):
            name, host = comps[i % len(comps)]
            step = (i // len(comps)) % 4
            ev = p.event(Kind.VNFC_STARTED if step == 3 else Kind.VNFC_CRASHED,
                         f"vnfc/{name}", host, clears=step == 3)
            by_host[host].append(encode(EventFrame(event=ev)))
        liveness = HostStates(topology.host_names(), SYSTEM_CLOCK)
        port = free_tcp_port()
        server = AgentServer(("127.0.0.1", port), p.bus, liveness, SYSTEM_CLOCK)
        await server.start()
        flushes0 = p.bus.flushes
        t0 = time.perf_counter()
        streams = await asyncio.gather(*(_agent_stream(port, h, frames, len(frames))
                                         for h, frames in by_host.items() if frames))
        elapsed = time.perf_counter() - t0
        commits = p.bus.flushes - flushes0
        delivered = len(rx.got)
        await server.close()
        for w in streams:
            w.close()
        await p.close()
    await rx.close()
    return IngestResult(n_events / elapsed, commits, delivered)


async def fan_out(topology: Topology, subscribers: int, rate_per_s: float, duration_s: float,
                  dead: bool) -> list[float]:
    """Alarm raised -> received, per subscriber, at a steady rate of new alarms."""
    rx = ReceiverProcess()
    ports = await rx.start(subscribers)
    callbacks = [f"http://127.0.0.1:{port}/n" for port in ports]
    if dead:
        callbacks.append(dead_callback())
    comps = [(c.name, topology.vm(c.vm).host) for _, c in topology.components()]
    sent: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="nfvha-bench-") as tmp:
        p = Pipeline(topology, Path(tmp))
        await p.start(callbacks)
        # Warm-up, not timed: the first notification opens every subscriber's
        # connection; steady-state latency is what is measured.
        warm_host = topology.host_names()[0]
        await p.bus.publish([p.event(Kind.SENSOR, f"host/{warm_host}", warm_host)])
        await rx.wait_until(lambda: len({r.port for r in rx.got}) >= len(ports), 30)
        rx.got.clear()
        # The previous run's garbage is collected now, not as a pause inside this one.
        gc.collect()
        n = int(rate_per_s * duration_s)
        start = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate_per_s - time.monotonic()))
            name, host = comps[i % len(comps)]
            if i >= len(comps):  # clear the previous alarm of this VNFC first (not timed)
                await p.bus.publish([p.event(Kind.VNFC_STARTED, f"vnfc/{name}", host, True)])
            t = time.monotonic_ns()
            await p.bus.publish([p.event(Kind.VNFC_CRASHED, f"vnfc/{name}", host)])
            [alarm] = p.manager.active_for(f"vnfc/{name}", "vnfc-failure")
            sent[alarm.id] = t

        def complete() -> bool:
            got = {(r.alarm_id, r.port) for r in rx.got if r.kind == "AlarmNotification"}
            return all((a, port) in got for a in sent for port in ports)

        await rx.wait_until(complete, 60)
        await p.close()
    await rx.close()
    return [(r.ns - sent[r.alarm_id]) / 1e6 for r in rx.got
            if r.kind == "AlarmNotification" and r.alarm_id in sent]


async def e2e_vm_crash(topology: Topology, runs: int) -> list[float]:
    rx = ReceiverProcess()
    [port] = await rx.start(1)
    # The VIM's path (detection -> alarm -> subscriber); the bench repairs the VM.
    tb = Testbed(topology.without_vnfm())
    await tb.start()
    out: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=30,
                                     headers=tb.headers) as c:
            r = await c.post("/vnffm/v1/subscriptions",
                             json={"callbackUri": f"http://127.0.0.1:{port}/n"})
            r.raise_for_status()
            faults = FaultInjector(tb.run, topology)
            for i in range(runs):
                vm = topology.vms[i % len(topology.vms)].name
                inj = faults.inject("vm-crash", vm)
                t0 = inj.injected_mono_ns

                def arrived(t0: int = t0, vm: str = vm) -> bool:
                    return any(x.ns > t0 and x.resource == f"vm/{vm}"
                               and x.kind == "AlarmNotification" for x in rx.got)

                await rx.wait_until(arrived, 15)
                got = min(x.ns for x in rx.got if x.ns > t0 and x.resource == f"vm/{vm}"
                          and x.kind == "AlarmNotification")
                out.append((got - t0) / 1e6)
                (await c.post(f"/v1/vms/{vm}/start")).raise_for_status()
                if topology.components_on(vm):
                    await wait_serving(tb.vm_address(vm))
    finally:
        await asyncio.to_thread(tb.down)
        await rx.close()
    return out


async def bench(args: argparse.Namespace, err: Console) -> dict[str, Any]:
    topology = load_topology(args.file)
    err.print("ingest ...")
    ing = await ingest(topology, args.events)
    err.print(f"  {ing.events_per_s:.0f} events/s in {ing.commits} group commits"
              f" ({ing.notifications_delivered} notifications delivered meanwhile)")
    # Without and with a dead subscriber, alternating: a 2-core machine drifts (other
    # load, CPU frequency) between two long runs more than a dead subscriber costs, so
    # the two conditions share every stretch of time and their samples are pooled.
    # The figure is the median of the rounds' paired changes, so that one noisy
    # round (a burst of other load) cannot decide it either way.
    base: list[float] = []
    with_dead: list[float] = []
    changes: list[float] = []
    rounds = max(1, args.rounds)
    for r in range(rounds):
        # ABBA order: whichever condition runs first in a round pays for what the
        # previous run left behind (connections closing, files going).
        err.print(f"fan-out to {args.subscribers} subscribers without and with a dead one,"
                  f" round {r + 1}/{rounds} ...")
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {dead: await fan_out(topology, args.subscribers, args.rate,
                                   args.duration / rounds, dead=dead) for dead in order}
        b, d = got[False], got[True]
        base += b
        with_dead += d
        changes.append((percentile(d, 99) - percentile(b, 99)) / percentile(b, 99) * 100)
        err.print(f"  p99 {percentile(b, 99):.1f} -> {percentile(d, 99):.1f} ms"
                  f" ({changes[-1]:+.1f} %)")
    err.print(f"end to end, VM crash -> subscriber, {args.runs} runs ...")
    e2e = await e2e_vm_crash(topology, args.runs)
    p99, p99_dead = percentile(base, 99), percentile(with_dead, 99)
    return {
        "ingest_events_per_s": round(ing.events_per_s, 1),
        "notify_p50_ms": round(percentile(base, 50), 2),
        "notify_p99_ms": round(p99, 2),
        "e2e_vm_crash_p99_ms": round(percentile(e2e, 99), 2),
        "dead_subscriber_p99_change_pct": round(percentile(changes, 50), 1),
        "details": {
            "subscribers": args.subscribers, "notifications_timed": len(base),
            "fan_out_rounds": rounds,
            "dead_subscriber_p99_change_pct_per_round": [round(c, 1) for c in changes],
            "dead_subscriber_pooled_p99_change_pct": round((p99_dead - p99) / p99 * 100, 1),
            "notify_with_dead_p50_ms": round(percentile(with_dead, 50), 2),
            "notify_with_dead_p99_ms": round(p99_dead, 2),
            "e2e_vm_crash_p50_ms": round(percentile(e2e, 50), 2), "e2e_runs": len(e2e),
            "ingest_events": args.events, "ingest_commits": ing.commits,
            "ingest_notifications_delivered": ing.notifications_delivered,
        },
    }


def run_alarms_bench(args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    result = asyncio.run(bench(args, err))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    t = Table(title="nfvha bench alarms")
    t.add_column("measure")
    t.add_column("value", justify="right")
    for k, v in result.items():
        if k != "details":
            t.add_row(k, str(v))
    for k, v in result["details"].items():
        t.add_row(f"  {k}", str(v))
    Console().print(t)
    return 0
