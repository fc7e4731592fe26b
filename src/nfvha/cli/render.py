"""The status table shown by ``nfvha up`` (live) and ``nfvha status``."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "up": "green", "running": "green", "suspect": "yellow", "starting": "cyan",
    "hung": "red", "crashed": "red", "down": "red", "exited": "red", "failed": "red",
    "restarting": "yellow", "stopped": "dim",
}


def _state(s: str) -> Text:
    return Text(s, style=STATE_STYLE.get(s.split()[0], "white"))


def status_tables(status: dict[str, Any], events: list[dict[str, Any]], api_url: str) -> Group:
    hosts = Table(title=f"nfvha run {status['run_id']} — API {api_url}", expand=True)
    for col in ("host", "state", "agent", "processes", "links", "heartbeat"):
        hosts.add_column(col)
    for h in status["hosts"]:
        agent = h["agent"]
        hosts.add_row(
            h["name"], _state(h["state"]),
            _state(f"running pid {agent['pid']}" if agent["connected"] else "lost"),
            ", ".join(f"{p['name']}:{p['state']}" + (f"({p['restarts']}r)" if p["restarts"]
                                                      else "") for p in h["processes"]),
            " ".join(f"{k}:{'up' if v else 'DOWN'}" for k, v in h["links"].items()),
            f"{h['last_heartbeat_ms_ago']} ms ago" if h["last_heartbeat_ms_ago"] is not None
            else "-",
        )
    vms = Table(expand=True)
    for col in ("vm", "host", "state", "pid", "memory", "vnfcs"):
        vms.add_column(col)
    by_vm: dict[str, list[str]] = {}
    for c in status["vnfcs"]:
        by_vm.setdefault(c["vm"], []).append(f"{c['name']}:{c['state']}")
    for v in status["vms"]:
        mem = v.get("memory_bytes")
        vms.add_row(v["name"], v["host"], _state(v["state"]), str(v.get("pid") or "-"),
                    f"{mem / 2**20:.0f} MiB" if mem else "-", ", ".join(by_vm.get(v["name"], [])))
    log = Table(title="latest events", expand=True)
    for col in ("time", "severity", "entity", "what"):
        log.add_column(col)
    # Periodic condition reports are records, not news: they stay in the log only.
    for e in [e for e in events if e["kind"] != "host.condition"][-8:]:
        log.add_row(time.strftime("%H:%M:%S", time.localtime(e["event_time"]))
                    + f".{int(e['event_time'] * 1000) % 1000:03d}",
                    _state(e["severity"].lower()) if e["severity"] != "CLEARED"
                    else Text("CLEARED", style="green"),
                    e["entity"], e["description"])
    return Group(hosts, vms, log)
