"""The sample programs: the counter VNFC and the vswitch host process, as real processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from guest_testutil import LOOPBACK, ProcessTracker, counter_argv, free_port, udp_request

from nfvha.samples.counter import CounterService


def test_counter_protocol_logic() -> None:
    service = CounterService("c1")
    assert service.handle("PING") == "PONG c1"
    assert service.handle("INC s1\n") == "OK s1 1 c1"
    assert service.handle("INC s1") == "OK s1 2 c1"
    assert service.handle("GET s1") == "VAL s1 2 c1"
    assert service.handle("GET s2") == "VAL s2 0 c1"
    assert service.handle("inc s2") == "OK s2 1 c1"
    for bad in ("", "   ", "FOO", "INC", "GET a b", "PING x"):
        assert service.handle(bad).startswith("ERR "), bad


def _start_counter(procs: ProcessTracker, name: str, port: int) -> subprocess.Popen[bytes]:
    proc = procs.popen(counter_argv(name, port), stdout=subprocess.PIPE)
    assert udp_request(port, b"PING") == f"PONG {name}".encode()  # up and serving
    return proc


def test_counter_udp_round_trips_keep_per_session_state(procs: ProcessTracker) -> None:
    port = free_port()
    _start_counter(procs, "c1", port)
    assert udp_request(port, b"INC alice") == b"OK alice 1 c1"
    assert udp_request(port, b"INC alice") == b"OK alice 2 c1"
    assert udp_request(port, b"INC bob") == b"OK bob 1 c1"
    assert udp_request(port, b"GET alice") == b"VAL alice 2 c1"
    assert udp_request(port, b"GET carol") == b"VAL carol 0 c1"
    assert udp_request(port, b"BOGUS").startswith(b"ERR ")


def test_counter_tcp_one_reply_line_per_request_on_one_connection(
    procs: ProcessTracker,
) -> None:
    port = free_port()
    _start_counter(procs, "c2", port)
    with socket.create_connection((LOOPBACK, port), timeout=5) as conn:
        stream = conn.makefile("rwb")
        for request, reply in [
            (b"PING", b"PONG c2"),
            (b"INC s", b"OK s 1 c2"),
            (b"INC s", b"OK s 2 c2"),
            (b"GET s", b"VAL s 2 c2"),
            (b"NOPE", None),
        ]:
            stream.write(request + b"\n")
            stream.flush()
            line = stream.readline()
            assert line.endswith(b"\n")
            if reply is None:
                assert line.startswith(b"ERR ")
            else:
                assert line == reply + b"\n"
    # TCP and UDP share one state.
    assert udp_request(port, b"GET s") == b"VAL s 2 c2"


def test_counter_logs_start_line_and_exits_0_on_sigterm(procs: ProcessTracker) -> None:
    port = free_port()
    proc = _start_counter(procs, "c3", port)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert out.decode().splitlines()[0] == f"counter c3 serving udp+tcp on {LOOPBACK}:{port}"


def test_vswitch_forwards_udp_with_prefix_and_exits_0_on_sigterm(
    procs: ProcessTracker,
) -> None:
    port = free_port()
    proc = procs.popen(
        [
            sys.executable,
            "-m",
            "nfvha.samples.vswitch",
            "--name",
            "vs1",
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
        ],
        stdout=subprocess.PIPE,
    )
    assert udp_request(port, b"hello") == b"FWD vs1 hello"
    assert udp_request(port, b"\x00\x01bin") == b"FWD vs1 \x00\x01bin"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert out.decode().splitlines()[0] == f"vswitch vs1 forwarding udp on {LOOPBACK}:{port}"


def test_programs_import_only_the_standard_library() -> None:
    """They run as many small processes: nothing beyond the stdlib (and nfvha.util)."""
    check = (
        "import sys\n"
        "before = set(sys.modules)\n"  # what site and .pth files loaded is not ours
        "import nfvha.nfvi.guest, nfvha.samples.counter, nfvha.samples.vswitch\n"
        "top = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(top - set(sys.stdlib_module_names) - {'nfvha', '__main__'}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('nfvha.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=30
    ).stdout.splitlines()
    assert out[0] == "[]"
    allowed = {"nfvha.nfvi", "nfvha.nfvi.guest", "nfvha.nfvi.guestwatchdog", "nfvha.samples",
               "nfvha.samples.counter"}
    allowed |= {"nfvha.samples.vswitch", "nfvha.util", "nfvha.util.files", "nfvha.util.procs"}
    assert set(eval(out[1])) <= allowed
