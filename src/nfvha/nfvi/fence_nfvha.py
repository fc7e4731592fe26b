"""``fence_nfvha``: a fence agent (ClusterLabs FenceAgentAPI) for the local test bed.

It drives the test bed's power device (``nfvi.power``) through the interface every
``fence_*`` agent has, so the VIM's agent driver is exercised for real:

    printf 'action=status\\nplug=h1\\n' | fence_nfvha; echo $?   # 0 on, 2 off, 1 error
    fence_nfvha -o off -n h1 --run abcde                         # command-line mode

Options (stdin ``name=value`` lines, ``#`` comments ignored, the last of a name wins):
``action`` (off, on, reboot, status, monitor, list, metadata; default reboot),
``plug`` (or ``port``, ``nodename``): the host; ``run``: the run id (default
``$NFVHA_RUN``); ``power_timeout``: seconds to wait for the power state to change
(default 20). Unknown options are ignored, as the API asks.
Every action is appended to ``<run>/hosts/<host>/fence.log`` (one JSON line, with
CLOCK_MONOTONIC times) so tests can order fencing against the VIM's other actions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.fabric import FabricPlan
from nfvha.nfvi.power import LocalPowerDevice, PowerError
from nfvha.util.files import read_json
from nfvha.util.runpaths import RunPaths

EC_OK, EC_ERROR, EC_OFF = 0, 1, 2
POLL_S = 0.02
METADATA = """<?xml version="1.0" ?>
<resource-agent name="fence_nfvha" shortdesc="Fence agent for the nfvha local test bed">
<longdesc>Powers a test-bed host (its network namespace links and cgroup) off and on.</longdesc>
<parameters>
  <parameter name="action" unique="0" required="1"><content type="string" default="reboot"/>
    <shortdesc lang="en">Fencing action</shortdesc></parameter>
  <parameter name="plug" unique="0" required="1"><content type="string"/>
    <shortdesc lang="en">Host name</shortdesc></parameter>
  <parameter name="run" unique="0" required="0"><content type="string"/>
    <shortdesc lang="en">Run id (default: $NFVHA_RUN)</shortdesc></parameter>
  <parameter name="power_timeout" unique="0" required="0"><content type="second" default="20"/>
    <shortdesc lang="en">Seconds to wait for the power state to change</shortdesc></parameter>
</parameters>
<actions>
  <action name="on"/><action name="off"/><action name="reboot"/><action name="status"/>
  <action name="monitor"/><action name="list"/><action name="metadata"/>
</actions>
</resource-agent>
"""


def parse_stdin(text: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        opts[name.strip()] = value.strip()
    return opts


def parse_argv(argv: list[str]) -> dict[str, str]:
    p = argparse.ArgumentParser(prog="fence_nfvha", description="fence agent of the test bed")
    p.add_argument("-o", "--action", default="reboot")
    p.add_argument("-n", "--plug")
    p.add_argument("--run")
    p.add_argument("--power-timeout", dest="power_timeout")
    args = p.parse_args(argv)
    return {k: str(v) for k, v in vars(args).items() if v is not None}


def _fail(message: str) -> int:
    print(f"fence_nfvha: {message}", file=sys.stderr)
    return EC_ERROR


def _log(run: RunPaths, host: str, entry: dict[str, Any]) -> None:
    path = run.host_dir(host) / "fence.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"mono_ns": time.monotonic_ns(), "time": time.time(), **entry})
                + "\n")


def _wait_for(dev: LocalPowerDevice, state: str, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while dev.status() != state:
        if time.monotonic() > end:
            return False
        time.sleep(POLL_S)
    return True


def run_action(opts: dict[str, str]) -> int:
    action = opts.get("action", opts.get("option", "reboot")).lower()
    if action == "metadata":
        sys.stdout.write(METADATA)
        return EC_OK
    run_id = opts.get("run") or os.environ.get("NFVHA_RUN")
    if not run_id:
        return _fail("no run: give run=<id> or set NFVHA_RUN")
    try:
        run = RunPaths(run_id)
        plan = FabricPlan.from_json(read_json(run.run_file)["plan"])
        cgroups = detect_cgroups()
    except (ValueError, KeyError, TypeError, OSError) as e:
        return _fail(f"run {run_id} cannot be reached: {e}")
    if action == "list":
        for h in plan.hosts:
            print(f"{h.name},{h.name}")
        return EC_OK
    host = opts.get("plug") or opts.get("port") or opts.get("nodename")
    if action == "monitor" and not host:
        return EC_OK  # the device (this run) answers
    if not host:
        return _fail("no plug given")
    try:
        dev = LocalPowerDevice(run, plan, host, cgroups)
    except KeyError as e:
        return _fail(str(e).strip("'\""))
    timeout = float(opts.get("power_timeout", "20"))
    try:
        return _act(run, dev, host, action, timeout)
    except (PowerError, OSError, RuntimeError) as e:
        _log(run, host, {"action": action, "result": "error", "error": str(e)})
        return _fail(f"{action} {host}: {e}")


def _act(run: RunPaths, dev: LocalPowerDevice, host: str, action: str, timeout: float) -> int:
    if action in ("status", "monitor"):
        state = dev.status()
        _log(run, host, {"action": action, "result": state})
        return EC_OK if state == "on" else EC_OFF
    if action in ("off", "reboot"):
        dev.off()
        # Verified, as the API asks of power fencing: off means no process of it left.
        if not _wait_for(dev, "off", timeout):
            _log(run, host, {"action": action, "result": "still on"})
            return _fail(f"{host} still has processes after {timeout:g} s")
        _log(run, host, {"action": "off", "result": "off"})
    if action in ("on", "reboot"):
        if dev.status() == "off":
            dev.on()
        _log(run, host, {"action": "on", "result": dev.status()})
        return EC_OK
    if action == "off":
        return EC_OK
    return _fail(f"unknown action {action!r}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    opts = parse_argv(args) if args else parse_stdin(sys.stdin.read())
    return run_action(opts)


if __name__ == "__main__":
    sys.exit(main())
