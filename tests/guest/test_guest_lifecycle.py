"""The guest's life: boot, console, crash (its VNFCs die with it), clean shutdown."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from guest_testutil import (
    GuestChannel,
    GuestLauncher,
    is_dead,
    udp_request,
    wait_until,
)

CONSOLE_LINE = re.compile(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00\] \S")

STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('stubborn ready', flush=True)\n"
    "time.sleep(600)\n"
)


def _console_has(path: Path, text: str) -> bool:
    try:
        return text in path.read_text()
    except FileNotFoundError:
        return False


def test_killing_the_guest_takes_its_vnfcs_down(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    vnfcs = guest.vnfcs()
    guest.proc.kill()  # a VM crash
    assert guest.proc.wait(timeout=5) == -signal.SIGKILL
    wait_until(
        lambda: all(is_dead(r["pid"], r["start_ticks"]) for r in vnfcs.values()),
        5.0,
        "the VNFCs to die with their guest (PR_SET_PDEATHSIG)",
    )


async def test_sigterm_stops_the_vnfcs_and_exits_0(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a", "gw-b"])
    for name, port in guest.ports.items():  # serving: their SIGTERM handlers are set
        assert udp_request(port, b"PING") == f"PONG {name}".encode()
    vnfcs = guest.vnfcs()
    channel = await GuestChannel.connect(guest.socket_path)
    try:
        _, events = await channel.hello()
        await channel.ack(events[-1]["seq"])
        guest.proc.terminate()
        exits = [await channel.recv(), await channel.recv()]
        assert {e["vnfc"] for e in exits} == {"gw-a", "gw-b"}
        for event in exits:
            assert event["kind"] == "vnfc-exited"
            assert event["expected"] is True
            assert event["exit_desc"] == "exit 0"
    finally:
        await channel.close()
    assert guest.proc.wait(timeout=10) == 0
    for record in vnfcs.values():
        assert is_dead(record["pid"], record["start_ticks"])
    final = json.loads((guest.vm_dir / "vnfcs.json").read_text())
    assert {r["state"] for r in final.values()} == {"stopped"}
    assert not guest.socket_path.exists()
    console = guest.console.read_text()
    assert "guest vm1 shutting down (SIGTERM)" in console
    assert console.rstrip().endswith("guest vm1 halted")


def test_sigterm_kills_a_vnfc_that_ignores_it_after_2s(guests: GuestLauncher) -> None:
    guest = guests.start(
        ["gw-a"],
        extra=[{"name": "stubborn", "argv": [sys.executable, "-c", STUBBORN], "env": None}],
    )
    wait_until(lambda: _console_has(guest.console, "stubborn ready"), 5.0, "stubborn to start")
    stubborn = guest.vnfcs()["stubborn"]
    guest.proc.terminate()
    assert guest.proc.wait(timeout=10) == 0
    assert is_dead(stubborn["pid"], stubborn["start_ticks"])
    final = json.loads((guest.vm_dir / "vnfcs.json").read_text())
    assert final["stubborn"]["state"] == "stopped"
    assert final["stubborn"]["exit_desc"] == "killed by SIGKILL"
    assert "vnfc stubborn still running after 2 s: SIGKILL" in guest.console.read_text()


def test_console_has_guest_lines_and_vnfc_output(guests: GuestLauncher) -> None:
    guest = guests.start(["gw-a"])
    port = guest.ports["gw-a"]
    udp_request(port, b"PING")  # its start line is written by now
    os.kill(guest.vnfcs()["gw-a"]["pid"], signal.SIGKILL)
    guest.wait_vnfc_state("gw-a", "exited")
    lines = guest.console.read_text().splitlines()
    guest_lines = [line for line in lines if line.startswith("[")]
    for line in guest_lines:
        assert CONSOLE_LINE.match(line), line
    text = "\n".join(lines)
    assert f"guest vm1 booting (pid {guest.proc.pid}, 1 vnfcs)" in text
    assert "guest vm1 up" in text
    assert re.search(r"vnfc gw-a started \(pid \d+\)", text)
    assert re.search(r"vnfc gw-a \(pid \d+\) exited: killed by SIGKILL$", text, re.M)
    # The VNFC's own stdout goes to the console too.
    assert f"counter gw-a serving udp+tcp on 127.0.0.1:{port}" in lines


def test_a_stale_socket_is_replaced(guests: GuestLauncher) -> None:
    vm_dir = guests.workdir / "vm"
    vm_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(vm_dir / "guest.sock"))
    stale.close()  # bound, never listening: connecting would be refused
    guest = guests.start(["gw-a"], vm_dir=vm_dir)
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(guest.socket_path))
        s.sendall(b'{"op":"ping","n":4}\n')
        assert s.makefile("rb").readline() == b'{"op":"pong","n":4}\n'


def test_a_vm_dir_path_longer_than_sun_path_works(guests: GuestLauncher) -> None:
    vm_dir = guests.workdir / ("d" * 60) / ("e" * 60) / "vm"
    assert len(str(vm_dir / "guest.sock")) > 108
    guest = guests.start(["gw-a"], vm_dir=vm_dir)
    dir_fd = os.open(vm_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(f"/proc/self/fd/{dir_fd}/guest.sock")
            s.sendall(b'{"op":"ping","n":8}\n')
            assert s.makefile("rb").readline() == b'{"op":"pong","n":8}\n'
    finally:
        os.close(dir_fd)
    assert guest.vnfcs()["gw-a"]["state"] == "running"


def test_a_bad_config_is_logged_and_exits_2(guests: GuestLauncher) -> None:
    vm_dir = guests.workdir / "vm"
    vm_dir.mkdir()
    (vm_dir / "guest.json").write_text('{"vm": "vm1", "vnfcs": [{"name": "x", "argv": []}]}')
    proc = guests.tracker.popen(
        [sys.executable, "-m", "nfvha.nfvi.guest", "--vm-dir", str(vm_dir)],
        stdin=subprocess.DEVNULL,
    )
    assert proc.wait(timeout=10) == 2
    assert "cannot boot, bad guest.json" in (vm_dir / "console.log").read_text()
