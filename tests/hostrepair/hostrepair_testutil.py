"""Shared pieces of the host-repair tests: a fake fence agent, a fake fence driver,
fake agents, small topologies."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nfvha.model.topology import Topology, parse_topology
from nfvha.wire.frames import CommandOp, Reply

# A fence agent as the FenceAgentAPI describes one: name=value lines on stdin, the
# answer in the exit status. Its "device" is a JSON file beside it: {"power": "on"}.
# It records every stdin it got (one JSON list per run) in calls.jsonl. Behaviour
# switches in the device file: "fail": [actions that exit 1], "sleep": seconds before
# answering, "stay_on": number of status queries that still say "on" after an off.
FAKE_AGENT = """#!{python}
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
dev_path = os.path.join(here, "device.json")
lines = sys.stdin.read().splitlines()
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(lines) + "\\n")
opts = dict(l.split("=", 1) for l in lines if "=" in l and not l.startswith("#"))
dev = json.load(open(dev_path))
time.sleep(dev.get("sleep", 0))
action = opts.get("action", "reboot")
if action in dev.get("fail", []):
    sys.stderr.write("device refused " + action + "\\n")
    sys.exit(1)
if action == "status":
    if dev["power"] == "off" and dev.get("stay_on", 0) > 0:
        dev["stay_on"] -= 1
        json.dump(dev, open(dev_path, "w"))
        sys.exit(0)
    sys.exit(0 if dev["power"] == "on" else 2)
if action in ("off", "on"):
    dev["power"] = action
    json.dump(dev, open(dev_path, "w"))
sys.exit(0)
"""


class FakeAgentDir:
    """A directory with ``fence_fake`` and its device file."""

    def __init__(self, root: Path, **device: Any) -> None:
        self.root = root
        self.agent = root / "fence_fake"
        self.agent.write_text(FAKE_AGENT.format(python=sys.executable))
        self.agent.chmod(0o755)
        self.set(power="on", **device)

    def set(self, **device: Any) -> None:
        current = self.device() if (self.root / "device.json").exists() else {}
        (self.root / "device.json").write_text(json.dumps({**current, **device}))

    def device(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "device.json").read_text())
        return data

    def calls(self) -> list[list[str]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@dataclass
class FakeDriver:
    """A fence driver that records, in ``log``, every action in order."""

    log: list[str]
    host: str
    state: Literal["on", "off"] = "on"
    fail_off: bool = False

    @property
    def description(self) -> str:
        return f"fake fence of {self.host}"

    def quick_status(self) -> Literal["on", "off"] | None:
        return self.state

    async def status(self) -> Literal["on", "off"]:
        return self.state

    async def off(self) -> None:
        from nfvha.nfvi.fence import FenceError

        if self.fail_off:
            raise FenceError("device unreachable")
        self.log.append(f"fence-off {self.host}")
        self.state = "off"

    async def on(self) -> None:
        self.log.append(f"power-on {self.host}")
        self.state = "on"


@dataclass
class FakeAgents:
    """Agent commands, recorded in the shared ``log``."""

    log: list[str]
    fail: set[str] = field(default_factory=set)  # hosts whose agent is gone
    args: dict[str, dict[str, object]] = field(default_factory=dict)

    async def command(self, host: str, op: CommandOp, target: str,
                      args: dict[str, object] | None = None, timeout_s: float = 20.0
                      ) -> Reply:
        await asyncio.sleep(0)
        if host in self.fail:
            raise ConnectionError(f"agent on {host} is not connected")
        self.log.append(f"{op} {target} on {host}")
        self.args[target] = dict(args or {})
        return Reply(id=1, ok=True, result={"vm": target, "ready": True})


THREE_RACKS: dict[str, Any] = {
    "name": "three",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
        {"name": "rack3", "hosts": [{"name": "h3"}]},
    ]}],
    "vms": [
        {"name": "vm-a", "host": "h1", "memory_mb": 96},
        {"name": "vm-b", "host": "h2", "memory_mb": 96},
        {"name": "vm-c", "host": "h1", "memory_mb": 96},
    ],
    "vnfs": [
        {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
         "anti_affinity": "host",
         "components": [{"name": "gw-a", "vm": "vm-a", "port": 7000},
                        {"name": "gw-b", "vm": "vm-b", "port": 7000}]},
        {"name": "db", "redundancy": "none", "stateful": True, "state": "checkpoint",
         "components": [{"name": "db-1", "vm": "vm-c", "port": 7200}]},
    ],
}


def three_racks(**changes: Any) -> Topology:
    return parse_topology({**THREE_RACKS, **changes}, "tests/hostrepair")
