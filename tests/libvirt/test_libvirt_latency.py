"""Benchmark-ish: event latencies on the private daemon, p50/p99 (printed, and written to
``bench-results/libvirt-latency.json``; not asserted tightly: two shared cores).

- QEMU SIGKILLed (right after STARTED) -> STOPPED/FAILED, and -> its pidfd readable;
- guest kernel panic ('Kernel panic' seen on the live console) -> CRASHED/PANICKED;
- createXML (transient domain) duration, QEMU RSS of a booted stand-in guest.

Runs: ``NFVHA_LIBVIRT_BENCH_KILLS`` (default 20), ``NFVHA_LIBVIRT_BENCH_PANICS`` (default
5: each boots a guest to its panic, ~3 s under TCG).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from libvirt_testutil import (
    EVENT_TIMEOUT_S,
    LvHost,
    Recorder,
    is_ev,
    pct,
    read_until,
    rss_mib,
    spec,
)

import libvirt
from nfvha.nfvi.libvirt_domain import domain_xml
from nfvha.nfvi.libvirt_events import DomainEvent, LibvirtEvents
from nfvha.nfvi.libvirtd import qemu_pid

pytestmark = [pytest.mark.libvirt, pytest.mark.timeout(600)]

KILLS = int(os.environ.get("NFVHA_LIBVIRT_BENCH_KILLS", "20"))
PANICS = int(os.environ.get("NFVHA_LIBVIRT_BENCH_PANICS", "5"))
OUT = Path(__file__).resolve().parents[2] / "bench-results" / "libvirt-latency.json"


def summary(values_ms: list[float]) -> dict[str, float | int]:
    return {"runs": len(values_ms), "p50_ms": round(pct(values_ms, 50), 1),
            "p99_ms": round(pct(values_ms, 99), 1), "max_ms": round(max(values_ms), 1)}


async def pidfd_fired(pid: int) -> asyncio.Future[int]:
    loop = asyncio.get_running_loop()
    fd = os.pidfd_open(pid)
    fut: asyncio.Future[int] = loop.create_future()

    def ready() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not fut.done():
            fut.set_result(time.monotonic_ns())

    loop.add_reader(fd, ready)
    return fut


async def test_latencies(lvhost: LvHost, guest: tuple[Path, Path]) -> None:
    events = Recorder()
    w = LibvirtEvents(lvhost.daemon.uri, events)
    await w.start()
    kill_ev, kill_pidfd, create, panic_ev = [], [], [], []
    qemu_rss = 0.0
    try:
        for i in range(KILLS):
            name = f"{lvhost.run.tag}-k{i}"
            first = i == 0  # memory of a booted guest: read its console until init speaks
            sock = lvhost.vm_dir / f"k{i}.sock" if first else None
            t = time.monotonic()
            xml = domain_xml(spec(lvhost, guest, name, console_socket=sock))
            await asyncio.to_thread(w.conn.createXML, xml, 0)
            create.append((time.monotonic() - t) * 1000)
            await events.wait_for(is_ev(name, libvirt.VIR_DOMAIN_EVENT_STARTED), EVENT_TIMEOUT_S)
            pid = qemu_pid(lvhost.paths, name)
            assert pid is not None
            if sock is not None:
                reader, writer = await asyncio.open_unix_connection(str(sock))
                await read_until(reader, b"nfvha-standin: ready", EVENT_TIMEOUT_S)
                writer.close()
                qemu_rss = rss_mib(pid)
            gone = await pidfd_fired(pid)
            t0 = time.monotonic_ns()
            os.kill(pid, signal.SIGKILL)
            ev = await events.wait_for(
                is_ev(name, libvirt.VIR_DOMAIN_EVENT_STOPPED,
                      libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED), EVENT_TIMEOUT_S)
            assert isinstance(ev, DomainEvent)
            kill_ev.append((ev.at_ns - t0) / 1e6)
            kill_pidfd.append((await gone - t0) / 1e6)
        for i in range(PANICS):
            name = f"{lvhost.run.tag}-p{i}"
            s = spec(lvhost, guest, name, mode="panic",
                     console_socket=lvhost.vm_dir / f"p{i}.sock")
            await asyncio.to_thread(w.conn.createXML, domain_xml(s), 0)
            reader, writer = await asyncio.open_unix_connection(str(s.console_socket))
            said = await read_until(reader, b"Kernel panic", EVENT_TIMEOUT_S)
            writer.close()
            ev = await events.wait_for(
                is_ev(name, libvirt.VIR_DOMAIN_EVENT_CRASHED,
                      libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED), EVENT_TIMEOUT_S)
            assert isinstance(ev, DomainEvent)
            panic_ev.append((ev.at_ns - said) / 1e6)
    finally:
        await w.stop()
    result = {
        "vm-crash (SIGKILL -> STOPPED/FAILED)": summary(kill_ev),
        "vm-crash (SIGKILL -> pidfd readable)": summary(kill_pidfd),
        "guest-panic ('Kernel panic' on console -> CRASHED/PANICKED)": summary(panic_ev),
        "createXML (transient, TCG)": summary(create),
        "qemu_rss_mib (256 MiB guest, booted stand-in)": round(qemu_rss, 1),
        "libvirtd_started_in_ms": round(lvhost.daemon.started_in_s * 1000, 1),
        "libvirtd_rss_mib (after the runs)": round(rss_mib(lvhost.daemon.pid), 1),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print("\n" + json.dumps(result, indent=2))
    assert pct(kill_ev, 50) < 1000  # a reaper is in place (pid 1 here reaps ~2 s late)
