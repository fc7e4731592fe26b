"""``nfvha bench abuse`` on the command line: its options, its tables, its JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from nfvha.bench.abuse import bench
from nfvha.bench.abuseplan import FIGURES, AbuseOptions
from nfvha.model.topology import load_topology


def _cell(v: object) -> str:
    return "-" if v is None else str(v)


def results_table(r: dict[str, Any], duration_s: float, lease_ms: int) -> Table:
    targets = {"actives_lost": "0", "probe_outage_ms": "0",
               "lease_late_max_ms": f"< {lease_ms} (the lease)",
               "detect_p99_ms": "<= 2 x idle", "detect_p99_idle_ms": "",
               "rss_growth_mb": "< 50"}
    table = Table(title=f"nfvha bench abuse: the API flooded for {duration_s:g} s")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for k in FIGURES:
        table.add_row(k, _cell(r.get(k)), targets[k])
    for k in ("lease_late_max_idle_ms", "probe_outage_idle_ms", "rss_before_mb",
              "rss_peak_mb", "rss_after_mb", "state_lost", "flood_cpu_pct"):
        if k in r:
            table.add_row(k, f"{r[k]}", "")
    # Where detection's time went, idle / flood: the agent, then the way to the store.
    for part in ("agent_p99_ms", "to_controller_p99_ms"):
        idle = (r.get("detect_split_idle") or {}).get(part)
        flood = (r.get("detect_split_flood") or {}).get(part)
        if idle is not None or flood is not None:
            table.add_row(f"detect: {part} (idle / flood)", f"{_cell(idle)} / {_cell(flood)}",
                          "")
    # Who got the CPU during the flood: % of one core used / spent waiting for one.
    for name, v in (r.get("sched_flood") or {}).items():
        table.add_row(f"{name}: CPU % / waiting %", f"{v['cpu_pct']} / {v['runqueue_wait_pct']}",
                      "")
    return table


_SHORT = {"unanswered at the end": "open", "held": "held"}


def _by_route(requests: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The flood's kinds of request summed per route (a body kind is "<route> <size>
    <shape>"): sent, answered, answers by status, the slowest answer."""
    out: dict[str, dict[str, Any]] = {}
    for kind, t in requests.items():
        words = kind.split()
        route = " ".join(words[:2]) if len(words) == 4 else kind
        r = out.setdefault(route, {"sent": 0, "answered": 0, "status": {}, "max_ms": 0.0})
        r["sent"] += t["sent"]
        r["answered"] += t["answered"]
        r["max_ms"] = max(r["max_ms"], t["max_ms"])
        for status, n in t["status"].items():
            r["status"][status] = r["status"].get(status, 0) + n
    return out


def flood_table(flood: dict[str, Any]) -> Table:
    """Per route (all sizes and shapes of body together; the JSON has each)."""
    table = Table(title="the flood: requests per route, answers by status")
    for col in ("route", "sent", "answered", "status", "max ms"):
        table.add_column(col, justify="left" if col in ("route", "status") else "right")
    for mode, stats in flood.items():
        if "error" in stats:
            table.add_row(mode, "-", "-", stats["error"], "")
            continue
        for route, t in _by_route(stats["requests"]).items():
            status = " ".join(f"{_SHORT.get(s, s)}:{n}" for s, n in sorted(t["status"].items()))
            table.add_row(route, str(t["sent"]), str(t["answered"]), status,
                          f"{t['max_ms']:.0f}")
        table.add_row(f"[b]{mode}[/b]", str(stats["sent"]), str(stats["answered"]),
                      f"{stats['sent_per_s']}/s, {stats['answered_per_s']}/s answered", "")
    return table


def options(args: argparse.Namespace) -> AbuseOptions:
    return AbuseOptions(vnf=args.vnf, duration_s=args.duration, faults=args.faults,
                        connections=args.connections, slow=args.slow,
                        body_workers=args.body_workers, flood_cpu=args.flood_cpu,
                        settle_s=args.settle)


def run_abuse_bench(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.faults < 1 or min(args.connections, args.slow,
                                                     args.body_workers) < 1:
        print("nfvha bench abuse: --duration must be > 0; --faults, --connections, --slow"
              " and --body-workers >= 1", file=sys.stderr)
        return 2
    if args.flood_cpu < 0 or args.settle < 0:
        print("nfvha bench abuse: --flood-cpu and --settle must be >= 0", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    topology = load_topology(args.file)
    try:
        result = asyncio.run(bench(topology, options(args),
                                   lambda line: err.print(f"  {line}")))
    except ValueError as e:  # the plan: the topology does not fit
        print(f"nfvha bench abuse: {e}", file=sys.stderr)
        return 2
    out = result.to_json()
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        console = Console()
        console.print(results_table(out, args.duration,
                                    topology.settings.amf_active_lease_ms))
        if "flood" in out:
            console.print(flood_table(out["flood"]))
        poll = out.get("availability_poll") or {}
        if (poll.get("p99_ms") or 0) > 1000 or poll.get("failed"):
            console.print(f"The API was slow under the flood: /v1/availability p99"
                          f" {poll.get('p99_ms')} ms, {poll.get('failed')} failed; the"
                          " actives were also watched at the components.")
        for error in result.errors:
            console.print(f"[red]error[/red] {error}")
    return 1 if result.errors else 0
