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


# Up to this many of each kind the status shows every host, VM and VNFC; past it,
# only what is not healthy (``nfvha status --all`` lists every one).
FULL_LISTING_MAX = 100


def list_everything(status: dict[str, Any]) -> bool:
    """Whether a deployment is small enough to show item by item."""
    return all(int(status[k]["total"]) <= FULL_LISTING_MAX for k in ("hosts", "vms", "vnfcs"))


def _counts(label: str, kind: dict[str, Any]) -> str:
    by_state = ", ".join(f"{state} {n}" for state, n in sorted(
        kind["by_state"].items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{label} {kind['total']}" + (f" ({by_state})" if by_state else "")


def status_tables(status: dict[str, Any], lists: dict[str, list[dict[str, Any]]] | None,
                  events: list[dict[str, Any]], api_url: str) -> Group:
    """``status``: the API's summary; ``lists``: every host, VM and VNFC (``hosts``,
    ``vms``, ``vnfcs``), or None to show only the ones the summary lists as not
    healthy."""
    bad = status["not_healthy"]
    rows = lists if lists is not None else bad
    summary = Text(" · ".join([
        _counts("hosts", status["hosts"])
        + f", agents {status['agents_connected']}/{status['hosts']['total']}",
        _counts("VMs", status["vms"]), _counts("VNFCs", status["vnfcs"]),
        f"last event {status['last_event_id']}"]))
    hosts = Table(title=f"nfvha run {status['run_id']} — API {api_url}", expand=True,
                  caption=None if lists is not None else _partial(status, "hosts"))
    for col in ("host", "state", "agent", "processes", "links", "heartbeat"):
        hosts.add_column(col)
    for h in rows["hosts"]:
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
    vms = Table(expand=True, caption=None if lists is not None else _partial(status, "vms"))
    for col in ("vm", "host", "hypervisor", "state", "pid", "memory", "vnfcs"):
        vms.add_column(col)
    by_vm: dict[str, list[str]] = {}
    for c in rows["vnfcs"]:
        by_vm.setdefault(c["vm"], []).append(f"{c['name']}:{c['state']}")
    for v in rows["vms"]:
        mem = v.get("memory_bytes")
        # An old controller's VMs have no hypervisor: they can only be process VMs.
        vms.add_row(v["name"], v["host"], v.get("hypervisor") or "process",
                    _state(v["state"]), str(v.get("pid") or "-"),
                    f"{mem / 2**20:.0f} MiB" if mem else "-", ", ".join(by_vm.get(v["name"], [])))
    parts: list[Any] = [summary, hosts, vms]
    if lists is None:  # VNFCs not healthy in VMs that are: a table of their own
        vnfcs = Table(expand=True, caption=_partial(status, "vnfcs"))
        for col in ("vnfc", "vnf", "vm", "host", "state"):
            vnfcs.add_column(col)
        for c in bad["vnfcs"]:
            vnfcs.add_row(c["name"], c["vnf"], c["vm"], c["host"], _state(c["state"]))
        parts.append(vnfcs)
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
    parts.append(log)
    return Group(*parts)


def _partial(status: dict[str, Any], kind: str) -> str:
    shown = len(status["not_healthy"][kind])
    total, bad = status[kind]["total"], status[kind]["not_healthy"]
    more = f", the first {shown} shown" if shown < bad else ""
    return (f"{kind}: only the {bad} of {total} not healthy{more};"
            " 'nfvha status --all' lists every one")
