"""``nfvha bench scale`` end to end, small: the real controller and HA director against
20 simulated hosts, twice in a row. Loopback only (no namespaces, no root needed).

No timing thresholds: the figures must be there and sane - every host came up, every
injected crash was received, the silenced host was confirmed down, nobody else was
suspected - and the run must leave nothing behind. Suspicion is set to 2 s (20 x
100 ms) so a loaded machine's stall of a process is not taken for a dead host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

KEYS = ["hosts", "vms", "all_up_s", "false_suspects", "vm_crash_receipt_p50_ms",
        "vm_crash_receipt_p99_ms", "host_down_confirm_p99_ms", "heartbeats_dropped",
        "controller_cpu_cores", "controller_rss_mb"]
HOSTS, VMS_PER_HOST, CRASHES, SILENCES = 20, 2, 2, 1


def bench(run_root: Path) -> dict[str, Any]:
    argv = [sys.executable, "-m", "nfvha.cli", "bench", "scale", "--hosts", str(HOSTS),
            "--vms-per-host", str(VMS_PER_HOST), "--duration", "5", "--crashes",
            str(CRASHES), "--silences", str(SILENCES), "--heartbeat-misses", "20",
            "--settle", "60", "--json"]
    done = subprocess.run(argv, env={**os.environ, "NFVHA_RUN_ROOT": str(run_root)},
                          capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, f"rc {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def marked_processes(run_id: str) -> list[int]:
    marker = f"NFVHA_RUN={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                env = Path(entry.path, "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in env:
                found.append(int(entry.name))
    return found


def check(r: dict[str, Any]) -> None:
    assert list(r)[:len(KEYS)] == KEYS
    assert "error" not in r, r["error"]
    assert (r["hosts"], r["vms"]) == (HOSTS, HOSTS * VMS_PER_HOST)
    assert r["hosts_up"] == HOSTS and r["all_up_s"] > 0
    assert r["false_suspects"] == 0, r.get("false_suspect_examples")
    assert r["crashes"] == {"injected": CRASHES, "received": CRASHES}
    assert 0 <= r["vm_crash_receipt_p50_ms"] <= r["vm_crash_receipt_p99_ms"]
    assert r["silences"]["injected"] == SILENCES
    assert r["silences"]["confirmed"] == SILENCES
    assert r["host_down_confirm_p99_ms"] > 0
    assert isinstance(r["heartbeats_dropped"], int) and r["heartbeats_dropped"] >= 0
    assert r["controller_cpu_cores"] > 0 and r["controller_rss_mb"] > 0
    assert set(r["processes"]) == {"controller", "director"}
    sim = r["simulator"]
    assert sim["processes"] == 2 and sim["heartbeats_sent"] > 0  # supervisors, agents
    assert sim["probes_witnessed"] >= 1  # the silenced host's witnesses were asked


@pytest.mark.timeout(900)
def test_bench_scale_twice_small(tmp_path: Path) -> None:
    for _ in range(2):
        r = bench(tmp_path)
        check(r)
        assert not list(tmp_path.glob("nfvha-*")), "the run directory was left behind"
        assert marked_processes(r["run_id"]) == []
