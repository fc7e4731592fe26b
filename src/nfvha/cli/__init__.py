"""``nfvha``: the command line. The top layer: it may import everything."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nfvha.model.topology import TopologyError, default_topology_path, load_topology


def _cmd_up(args: argparse.Namespace) -> int:
    from nfvha.cli.live import run_up

    return run_up(args)


def _cmd_down(args: argparse.Namespace) -> int:
    from nfvha.nfvi.cleanup import find_runs, teardown_run
    from nfvha.testbed.deploy import run_owner_alive

    runs = args.runs or sorted(find_runs())
    if not runs:
        print("nothing to clean up: no nfvha run on this machine")
        return 0
    live = [r for r in runs if run_owner_alive(r)]
    if live and not args.force:
        for r in live:
            print(f"nfvha down: run {r} is still owned by a running 'nfvha up' (or test);"
                  " stop that with Ctrl-C, or use --force", file=sys.stderr)
        runs = [r for r in runs if r not in live]
        if not runs:
            return 1
    for run_id in runs:
        removed = teardown_run(run_id, keep_files=args.keep_files)
        print(f"run {run_id}: removed {len(removed)} object(s)")
        for line in removed:
            print(f"  {line}")
    return 0


_HEADERS: dict[str, str] = {}  # the run's API token, set by _api()


def _api(run_id: str | None) -> tuple[str, str]:
    from nfvha.testbed.deploy import RunInfo, find_active_run
    from nfvha.util.files import read_json

    run = find_active_run(run_id)
    info = RunInfo.load(run)
    _HEADERS.clear()
    _HEADERS.update(info.headers)
    # A cluster run (ADR 0013): every controller's front answers; use one that does.
    urls = read_json(run.run_file).get("api_urls") or [info.api_url]
    return run.run_id, _answering(urls)


def _answering(urls: list[str], timeout_s: float = 1.0) -> str:
    import httpx

    if len(urls) == 1:
        return urls[0]
    for url in urls:
        try:
            httpx.get(f"{url}/v1/cluster/self", timeout=timeout_s)
            return url
        except httpx.HTTPError:
            continue
    return urls[0]


def _get(url: str, timeout_s: float = 5.0) -> Any:
    import httpx

    r = httpx.get(url, timeout=timeout_s, headers=_HEADERS)
    r.raise_for_status()
    return r.json()


def _get_all(api: str, path: str, timeout_s: float = 10.0) -> list[Any]:
    """Every item of a paged listing, page after page (``Link: rel="next"``)."""
    import httpx

    from nfvha.testbed.apiclient import PAGE_LIMIT

    items: list[Any] = []
    url: str | None = f"{api}{path}?limit={PAGE_LIMIT}"
    while url is not None:
        r = httpx.get(url, timeout=timeout_s, headers=_HEADERS)
        r.raise_for_status()
        items.extend(r.json())
        following = r.links.get("next", {}).get("url")
        url = f"{api}{following}" if following else None
    return items


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    from nfvha.cli.render import list_everything, status_tables

    _run_id, api = _api(args.run)
    status = _get(f"{api}/v1/status")
    lists = None
    if args.all or (list_everything(status) and not args.json):
        lists = {kind: _get_all(api, f"/v1/{kind}") for kind in ("hosts", "vms", "vnfcs")}
    if args.json:
        print(json.dumps(status if lists is None else {
            "status": status, "run_id": status["run_id"],
            "last_event_id": status["last_event_id"], **lists}, indent=1))
        return 0
    events = _get(f"{api}/v1/events?after={max(0, status['last_event_id'] - 40)}")
    Console().print(status_tables(status, lists, events, api))
    return 0


def _cmd_fault(args: argparse.Namespace) -> int:
    from nfvha.testbed.deploy import find_active_run
    from nfvha.testbed.faults import FAULT_KINDS, FaultError, FaultInjector

    if args.kind not in FAULT_KINDS:
        print(f"nfvha fault: unknown fault '{args.kind}'; valid: {', '.join(FAULT_KINDS)}",
              file=sys.stderr)
        return 2
    inj = FaultInjector(find_active_run(args.run))
    opts: dict[str, Any] = {}
    if args.kind in ("link-down", "link-up"):
        opts["link"] = args.link
    if args.kind == "host-process-crash":
        opts["process"] = args.process
    if args.kind == "sensor":
        if args.clear:
            opts.update(clear=True, name=args.reading or "")
        else:
            name, sep, value = (args.reading or "").partition("=")
            try:
                opts.update(name=name, value=float(value) if sep else None, warn=args.warn,
                            crit=args.crit, unit=args.unit)
            except ValueError:
                print(f"nfvha fault sensor: '{value}' is not a number", file=sys.stderr)
                return 2
    try:
        done = inj.inject(args.kind, args.target, **opts)
    except FaultError as e:
        print(f"nfvha fault: {e}", file=sys.stderr)
        return 2
    print(done.detail)
    return 0


def _cmd_operate(args: argparse.Namespace) -> int:
    import httpx

    _, api = _api(args.run)
    r = httpx.post(f"{api}/v1/{args.what}s/{args.name}/{args.action}", timeout=30.0,
                   headers=_HEADERS)
    if r.status_code != 200:
        print(f"nfvha {args.what} {args.action}: {r.json().get('detail', r.text)}",
              file=sys.stderr)
        return 1
    print(json.dumps(r.json()["result"]))
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    _, api = _api(args.run)
    after = 0
    while True:
        evs = _get(f"{api}/v1/events?after={after}&wait={30 if args.follow else 0}",
                   timeout_s=40.0)
        for e in evs:
            print(json.dumps(e) if args.json else
                  f"{e['id']:>6} {e['severity']:<13} {e['kind']:<22} {e['entity']:<18}"
                  f" {e['description']}")
            after = e["id"]
        if not args.follow:
            return 0


def _cmd_alarms(args: argparse.Namespace) -> int:
    import httpx

    if args.action == "watch":
        return _watch_alarms(args)
    if args.action in ("show", "ack") and not args.id:
        print(f"nfvha alarms {args.action}: give the alarm id", file=sys.stderr)
        return 2
    _, api = _api(args.run)
    base = f"{api}/vnffm/v1/alarms"
    if args.id and len(args.id) < 36:  # the short id that `list` prints
        ids = [a["id"] for a in httpx.get(base, timeout=10.0, headers=_HEADERS).json()
               if a["id"].startswith(args.id)]
        if len(ids) != 1:
            print(f"nfvha alarms {args.action}: {len(ids)} alarms start with {args.id!r}",
                  file=sys.stderr)
            return 1
        args.id = ids[0]
    if args.action == "list":
        params = {"filter": args.filter} if args.filter else {}
        if args.active and not args.filter:
            params = {"filter": "(neq,perceivedSeverity,CLEARED)"}
        r = httpx.get(base, params=params, timeout=10.0, headers=_HEADERS)
    elif args.action == "show":
        r = httpx.get(f"{base}/{args.id}", timeout=10.0, headers=_HEADERS)
    else:
        state = "UNACKNOWLEDGED" if args.undo else "ACKNOWLEDGED"
        r = httpx.patch(f"{base}/{args.id}", content=json.dumps({"ackState": state}),
                        headers={**_HEADERS, "Content-Type": "application/merge-patch+json"},
                        timeout=10.0)
    if r.status_code >= 400:
        print(f"nfvha alarms {args.action}: {r.json().get('detail', r.text)}", file=sys.stderr)
        return 1
    if args.json or args.action != "list":
        print(json.dumps(r.json(), indent=1))
        return 0
    for a in r.json():
        res = a.get("rootCauseFaultyResource", {}).get("faultyResource", {}).get("resourceId")
        root = "root " if a["isRootCause"] else "conseq"
        print(f"{a['id'][:8]} {a['perceivedSeverity']:<9} {a['faultType']:<28} {res:<16}"
              f" {root} {a['ackState'][:5]} {a['probableCause']}")
    return 0


def _watch_alarms(args: argparse.Namespace) -> int:
    """Follow alarm changes live (Server-Sent Events) until Ctrl-C."""
    import httpx

    _, api = _api(args.run)
    event = ""
    with httpx.stream("GET", f"{api}/v1/alarms/stream", timeout=None,
                      headers=_HEADERS) as resp:
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                if args.json:
                    print(json.dumps({"notificationType": event, **data}), flush=True)
                    continue
                a = data.get("alarm")
                if a is None:
                    print(f"{event}", flush=True)
                    continue
                res = a.get("rootCauseFaultyResource", {}).get("faultyResource", {})
                print(f"{event:<26} {a['id'][:8]} {a['perceivedSeverity']:<9}"
                      f" {a['faultType']:<28} {res.get('resourceId', '')}", flush=True)
    return 0


def _cmd_subscribe(args: argparse.Namespace) -> int:
    import httpx

    _, api = _api(args.run)
    flt: dict[str, Any] = {}
    if args.severity:
        flt["perceivedSeverities"] = args.severity
    if args.notification_type:
        flt["notificationTypes"] = args.notification_type
    if args.event_type:
        flt["eventTypes"] = args.event_type
    if args.resource_type:
        flt["faultyResourceTypes"] = args.resource_type
    if args.vnf:
        flt["vnfInstanceSubscriptionFilter"] = {"vnfInstanceIds": args.vnf}
    if args.managed_object:
        flt["managedObjectIds"] = args.managed_object
    if args.resource:
        flt["resourceIds"] = args.resource
    body: dict[str, Any] = {"callbackUri": args.url}
    if flt:
        body["filter"] = flt
    if args.secret:
        body["authentication"] = {"secret": args.secret}
    r = httpx.post(f"{api}/vnffm/v1/subscriptions", json=body, timeout=10.0,
                   headers=_HEADERS)
    if r.status_code != 201:
        print(f"nfvha subscribe: {r.json().get('detail', r.text)}", file=sys.stderr)
        return 1
    print(json.dumps(r.json(), indent=1))
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    _run_id, api = _api(args.run)
    st = _get(f"{api}/v1/cluster")
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    leader = st.get("leader") or {}
    t = Table(title=f"controllers (leader: {leader.get('name', 'none')},"
                    f" epoch {leader.get('epoch', '-')})")
    for c in ("part", "state", "role / detail", "epoch"):
        t.add_column(c)
    for m in st["members"]:
        t.add_row(f"controller {m['name']}", m.get("state", "?"), str(m.get("role", "")),
                  str(m.get("epoch", "")))
    etcd = st["etcd"]
    detail = etcd.get("reason", "")
    if out := etcd.get("no_quorum"):  # nobody can lead meanwhile (ADR 0013)
        detail = f"NO QUORUM since {out['since']} ({out['for_s']:.0f} s): {detail}"
    t.add_row("etcd", etcd.get("state", "?"), detail, "")
    for m in etcd.get("members", []):
        t.add_row(f"  etcd {m['name']}", "up" if m.get("reachable") else "unreachable",
                  "leader" if m.get("is_leader") else "", "")
    t.add_row("postgresql", st["postgres"].get("state", "?"), "", "")
    Console().print(t)
    return 0


def _cmd_token(args: argparse.Namespace) -> int:
    """API tokens (VNFHA-12), through the API with the run's admin token."""
    import httpx

    _, api = _api(args.run)
    base = f"{api}/v1/tokens"
    if args.action == "add":
        body = {"role": args.role, **({"name": args.name} if args.name else {})}
        r = httpx.post(base, json=body, timeout=10.0, headers=_HEADERS)
    elif args.action == "list":
        r = httpx.get(base, timeout=10.0, headers=_HEADERS)
    else:
        r = httpx.delete(f"{base}/{args.sha256}", timeout=10.0, headers=_HEADERS)
    if r.status_code >= 300:
        print(f"nfvha token {args.action}: {r.json().get('detail', r.text)}", file=sys.stderr)
        return 1
    if args.action == "delete":
        print(f"deleted {args.sha256}")
    elif args.json:
        print(json.dumps(r.json(), indent=1))
    elif args.action == "add":
        t = r.json()
        print(t["token"])  # alone on stdout, for scripts
        print(f"role {t['role']}, sha256 {t['sha256']}: the secret is shown this once",
              file=sys.stderr)
    else:
        for t in r.json():
            print(f"{t['sha256']}  {t['role']:<8}  {t['name']}")
    return 0


def _cmd_openapi(args: argparse.Namespace) -> int:
    from nfvha.api.openapi import main as print_openapi

    return print_openapi()


def _cmd_validate(args: argparse.Namespace) -> int:
    from nfvha.nfvi.fabric import topology_limit_problems
    from nfvha.testbed.deploy import namespaces_available
    from nfvha.testbed.hypervisors import hypervisor_problems

    try:
        t = load_topology(args.file)
        problems = topology_limit_problems(t)
        if problems:
            # The test bed's fabric (one run's addresses and links) cannot hold it.
            raise TopologyError(str(args.file), [f"(top level): {p}" for p in problems])
        # The test bed runs on this machine: what 'nfvha up' would refuse here.
        ok, why = namespaces_available()
        problems = hypervisor_problems(t, namespaced=ok, why_not=why)
        if problems:
            raise TopologyError(str(args.file), [f"on this machine: {p}" for p in problems])
    except TopologyError as e:
        print(e, file=sys.stderr)
        return 1
    libvirt = len(t.hosts_with("libvirt"))
    print(f"{args.file}: ok ({len(t.host_names())} hosts"
          + (f" ({libvirt} libvirt)" if libvirt else "")
          + f", {len(t.vms)} VMs, {len(t.vnfs)} VNFs; within the fabric's limits)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from nfvha.bench.detect import run_detect_bench

    return run_detect_bench(args)


def _cmd_bench_failover(args: argparse.Namespace) -> int:
    from nfvha.bench.failover import run_failover_bench

    return run_failover_bench(args)


def _cmd_bench_chaos(args: argparse.Namespace) -> int:
    from nfvha.bench.chaos import run_chaos_bench

    return run_chaos_bench(args)


def _cmd_bench_abuse(args: argparse.Namespace) -> int:
    from nfvha.bench.abusereport import run_abuse_bench

    return run_abuse_bench(args)


def _cmd_bench_alarms(args: argparse.Namespace) -> int:
    from nfvha.bench.alarms import run_alarms_bench

    return run_alarms_bench(args)


def _cmd_bench_scale(args: argparse.Namespace) -> int:
    from nfvha.bench.scale import run_scale_bench

    return run_scale_bench(args)


def _cmd_availability(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    _run_id, api = _api(args.run)
    vnfs = _get(f"{api}/v1/availability")
    if args.json:
        print(json.dumps(vnfs, indent=1))
        return 0
    t = Table(title="availability (service instances)")
    for c in ("VNF", "model", "SI", "epoch", "active", "standby", "service units"):
        t.add_column(c)
    for v in vnfs:
        units = ", ".join(f"{u['name']} {u['readiness']}" for u in v["service_units"])
        for si in v["service_instances"]:
            t.add_row(v["vnf"], v["redundancy"], si["si"], str(si["epoch"]),
                      ", ".join(si["active"]) or "-", ", ".join(si["standby"]) or "-", units)
    Console().print(t)
    return 0


def _cmd_scenario_run(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from nfvha.scenarios.runner import SCENARIOS, STAGES, expand, run_scenarios

    try:
        names = expand(args.names)
    except ValueError as e:
        print(f"nfvha scenario run: {e}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("nfvha scenario run: --repeat must be >= 1", file=sys.stderr)
        return 2
    err = Console(stderr=True)
    topology = load_topology(args.file)
    results = asyncio.run(run_scenarios(topology, names, args.repeat,
                                        lambda line: err.print(line, markup=False),
                                        seed=args.seed))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        what = (f"{args.repeat} random faults, seed {args.seed}" if names == ["random"]
                else f"{args.repeat} run(s) each")
        t = Table(title=f"nfvha scenario run ({what}; times in ms)")
        cols = ("scenario", "runs", "detection_p99_ms", "notification_p99_ms",
                "outage_p50_ms", "outage_p99_ms", "state_lost", "restored_p99_ms",
                "sal_met", "double_active", "failed_pct")
        for c in cols:
            t.add_column(c.replace("_ms", "").replace("_", " "),
                         justify="left" if c == "scenario" else "right")
        for r in results:
            t.add_row(*("-" if r.get(c) is None else str(r[c]) for c in cols))
        Console(width=max(Console().width, 140)).print(t)
        _print_stages(results, STAGES)
        for r in results:
            what = (SCENARIOS[r["scenario"]].what if r["scenario"] in SCENARIOS
                    else "all faults of the randomized run")
            err.print(f"{r['scenario']}: {what}"
                      + (f"  ERRORS: {r['errors']}" if r["errors"] else ""), markup=False)
    return 0 if all(not r["errors"] for r in results) else 1


def _print_stages(results: list[dict[str, Any]], stages: tuple[str, ...]) -> None:
    """The failover path of the scenarios that measured one: p50 / p99 of each stage."""
    from rich.console import Console
    from rich.table import Table

    rows = [r for r in results if any(r.get(f"{s}_p50_ms") is not None for s in stages)]
    if not rows:
        return
    t = Table(title="failover stages (ms from the fault: p50 / p99)")
    t.add_column("scenario", justify="left")
    for stage in stages:
        t.add_column(stage.replace("_", " "), justify="right")
    t.add_column("outage", justify="right")

    def cell(r: dict[str, Any], key: str) -> str:
        p50, p99 = r.get(f"{key}_p50_ms"), r.get(f"{key}_p99_ms")
        return "-" if p50 is None else f"{p50} / {p99}"

    for r in rows:
        t.add_row(r["scenario"], *(cell(r, s) for s in stages), cell(r, "outage"))
    Console(width=max(Console().width, 140)).print(t)


def _cmd_vnf_am(args: argparse.Namespace) -> int:
    from nfvha.amf.own.main import run

    return run(args)


def _internal(module: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        import importlib

        rc: int = importlib.import_module(module).main(["--config", str(args.config)])
        return rc

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nfvha", description="coordinated multi-layer HA for NFV")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a whole local deployment (default topology)")
    up.add_argument("-f", "--file", type=Path, default=default_topology_path())
    up.add_argument("--no-live", action="store_true", help="print status once, no live table")
    up.add_argument("--cluster", type=int, metavar="N",
                    help="N controllers on a 3-member etcd cluster and PostgreSQL (ADR 0013)")
    up.set_defaults(func=_cmd_up)

    down = sub.add_parser("down", help="remove every namespace, bridge, cgroup and process"
                                       " of runs (all runs if none is named)")
    down.add_argument("runs", nargs="*")
    down.add_argument("--keep-files", action="store_true")
    down.add_argument("--force", action="store_true",
                      help="also runs whose 'nfvha up' is still running")
    down.set_defaults(func=_cmd_down)

    st = sub.add_parser("status", help="show hosts, VMs, VNFCs of a running deployment:"
                        " every one in a small deployment, else counts per state and what"
                        " is not healthy")
    st.add_argument("--run")
    st.add_argument("--json", action="store_true",
                    help="the API's summary (with --all: and every host, VM and VNFC, as"
                    " 'hosts', 'vms', 'vnfcs')")
    st.add_argument("--all", action="store_true",
                    help="list every host, VM and VNFC, however many (page by page)")
    st.set_defaults(func=_cmd_status)

    f = sub.add_parser("fault", help="inject a fault into the running test bed")
    f.add_argument("kind", help="vnfc-crash, vm-crash (SIGKILL of the VM's process: its"
                                " guest program or QEMU), vm-hang (cgroup freeze; SIGSTOP of"
                                " QEMU on a libvirt host), vm-thaw, vm-memory-exhaust"
                                " (process VMs), guest-panic (libvirt VMs: an NMI their kernel"
                                " panics on), watchdog (VMs with a watchdog: its VNFC stops"
                                " kicking it), agent-crash, host-process-crash, host-down,"
                                " host-up, link-down, link-up, sensor, controller-crash")
    f.add_argument("target", help="the VNFC, VM or host; for controller-crash 'controller',"
                                  " or in a cluster run a member (c1, c2, ...) or 'leader'"
                                  " (the member deciding now)")
    f.add_argument("reading", nargs="?", help="for 'sensor': NAME=VALUE, e.g. temp1=95")
    f.add_argument("--run")
    f.add_argument("--link", default="data0", help="mgmt0 or data0 (link faults)")
    f.add_argument("--process", default="vswitch", help="host process (host-process-crash)")
    f.add_argument("--warn", type=float)
    f.add_argument("--crit", type=float)
    f.add_argument("--unit", default="")
    f.add_argument("--clear", action="store_true", help="sensor: remove injected reading(s)")
    f.set_defaults(func=_cmd_fault)

    for what in ("vm", "vnfc"):
        op = sub.add_parser(what, help=f"start or stop a {what.upper()}")
        op.add_argument("action", choices=["start", "stop"])
        op.add_argument("name")
        op.add_argument("--run")
        op.set_defaults(func=_cmd_operate, what=what)

    ev = sub.add_parser("events", help="print the controller's event log")
    ev.add_argument("--run")
    ev.add_argument("--follow", "-F", action="store_true")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=_cmd_events)

    al = sub.add_parser("alarms", help="list, show or acknowledge alarms (ETSI VNF FM)")
    al.add_argument("action", choices=["list", "show", "ack", "watch"])
    al.add_argument("id", nargs="?", help="alarm id (show, ack)")
    al.add_argument("--run")
    al.add_argument("--filter", help="SOL013 filter, e.g. '(eq,perceivedSeverity,CRITICAL)'")
    al.add_argument("--active", action="store_true", help="list: only alarms not cleared")
    al.add_argument("--undo", action="store_true", help="ack: set back to UNACKNOWLEDGED")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=_cmd_alarms)

    sb = sub.add_parser("subscribe", help="subscribe a webhook to alarm notifications")
    sb.add_argument("url", help="callback URI (http or https)")
    sb.add_argument("--run")
    sb.add_argument("--secret", help="HMAC-SHA256 key (>= 16 chars) to sign bodies with")
    sb.add_argument("--severity", action="append", help="CRITICAL, MAJOR, ... (repeatable)")
    sb.add_argument("--notification-type", action="append",
                    help="AlarmNotification, AlarmClearedNotification,"
                         " AlarmListRebuiltNotification")
    sb.add_argument("--event-type", action="append", help="e.g. EQUIPMENT_ALARM")
    sb.add_argument("--resource-type", action="append", help="COMPUTE, STORAGE, NETWORK")
    sb.add_argument("--vnf", action="append", help="VNF instance (managed object)")
    sb.add_argument("--managed-object", action="append", help="e.g. host/host1")
    sb.add_argument("--resource", action="append", help="faulty resource, e.g. vm/gw-vm1")
    sb.set_defaults(func=_cmd_subscribe)

    cl = sub.add_parser("cluster", help="controllers, etcd and PostgreSQL of a cluster run"
                                        " (who leads, each one's state)")
    cl.add_argument("--run")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func=_cmd_cluster)

    tk = sub.add_parser("token", help="add, list or delete API tokens (admin)")
    tksub = tk.add_subparsers(dest="action", required=True)
    ta = tksub.add_parser("add", help="a new token; its secret is printed this once")
    ta.add_argument("--role", required=True, choices=["reader", "operator", "admin"])
    ta.add_argument("--name", default="", help="a short label: who or what it is for")
    tl = tksub.add_parser("list", help="every token's SHA-256, role and label")
    td = tksub.add_parser("delete", help="delete a token by its SHA-256")
    td.add_argument("sha256")
    for t in (ta, tl, td):
        t.add_argument("--run")
        t.add_argument("--json", action="store_true")
        t.set_defaults(func=_cmd_token)

    oa = sub.add_parser("openapi", help="print the controller's OpenAPI document")
    oa.set_defaults(func=_cmd_openapi)

    val = sub.add_parser("validate", help="check a topology file")
    val.add_argument("file", type=Path)
    val.set_defaults(func=_cmd_validate)

    av = sub.add_parser("availability", help="who is active/standby per service instance")
    av.add_argument("--run")
    av.add_argument("--json", action="store_true")
    av.set_defaults(func=_cmd_availability)

    sc = sub.add_parser("scenario", help="fault scenarios (the use cases), measured")
    scsub = sc.add_subparsers(dest="scenario", required=True)
    sr = scsub.add_parser("run", help="run scenarios on a fresh test bed: UC-1 ... | all")
    sr.add_argument("names", nargs="+",
                    help="scenario names, 'all', or 'random' (--repeat random faults)")
    sr.add_argument("--repeat", type=int, default=1)
    sr.add_argument("--seed", type=int, default=1, help="for 'random'")
    sr.add_argument("--json", action="store_true")
    sr.add_argument("-f", "--file", type=Path, default=default_topology_path())
    sr.set_defaults(func=_cmd_scenario_run)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", required=True)
    bd = bsub.add_parser("detect", help="fault -> controller detection latency per kind")
    bd.add_argument("--runs", type=int, default=20)
    bd.add_argument("--json", action="store_true")
    bd.add_argument("-f", "--file", type=Path, default=default_topology_path())
    bd.add_argument("--kinds", default=None,
                    help="comma-separated (default: every kind the topology can show:"
                    " vnfc-crash, vm-crash, vm-hang, agent-crash, host-down, and"
                    " guest-panic with libvirt hosts, watchdog with kicked watchdogs)")
    bd.set_defaults(func=_cmd_bench)
    ba = bsub.add_parser("alarms", help="alarm ingest rate, notification fan-out latency,"
                                        " VM crash -> subscriber")
    ba.add_argument("--json", action="store_true")
    ba.add_argument("-f", "--file", type=Path, default=default_topology_path())
    ba.add_argument("--events", type=int, default=20_000, help="ingest: events to feed")
    ba.add_argument("--subscribers", type=int, default=100)
    ba.add_argument("--rate", type=float, default=5.0,
                    help="fan-out: new alarms per second (each also cleared: 2 changes)")
    ba.add_argument("--duration", type=float, default=20.0,
                    help="fan-out: seconds for each condition, over all rounds")
    ba.add_argument("--rounds", type=int, default=6,
                    help="fan-out: alternate without/with the dead subscriber this often")
    ba.add_argument("--runs", type=int, default=20, help="end to end: VM crashes")
    ba.set_defaults(func=_cmd_bench_alarms)
    bb = bsub.add_parser("abuse", help="the API flooded (large bodies, many connections, slow"
                                       " clients) while a 2N VNF serves: actives lost, probe"
                                       " outage, lease lateness, detection, controller RSS")
    bb.add_argument("--duration", type=float, default=30.0, help="seconds of flood")
    bb.add_argument("--faults", type=int, default=10,
                    help="VNFC crashes of other VNFs, idle and again during the flood")
    bb.add_argument("--json", action="store_true")
    bb.add_argument("-f", "--file", type=Path, default=default_topology_path())
    bb.add_argument("--vnf", default="gw", help="the 2N VNF that must keep serving")
    bb.add_argument("--connections", type=int, default=300,
                    help="keep-alive connections doing cheap GETs")
    bb.add_argument("--slow", type=int, default=100, help="slow clients")
    bb.add_argument("--body-workers", type=int, default=4,
                    help="senders of large bodies, one request after another")
    bb.add_argument("--flood-cpu", type=float, default=1.0,
                    help="cores the flood processes may use together (0: no cap)")
    bb.add_argument("--settle", type=float, default=3.0,
                    help="seconds after the flood before the controller's RSS is read")
    bb.set_defaults(func=_cmd_bench_abuse)
    bf = bsub.add_parser("controller-failover",
                         help="leader controller killed -> another deciding, and -> first"
                              " recovery of a VNF fault injected at the same moment")
    bf.add_argument("--runs", type=int, default=20)
    bf.add_argument("--json", action="store_true")
    bf.add_argument("-f", "--file", type=Path, default=None,
                    help="topology (default: 2 hosts, one 2N VNF 'gw')")
    bf.add_argument("--vnf", default="gw", help="the VNF whose active dies with the leader")
    bf.add_argument("--no-fault", action="store_true", help="kill only the leader")
    bf.set_defaults(func=_cmd_bench_failover)
    bc = bsub.add_parser("cluster-chaos",
                         help="randomized control-plane faults (leader killed or cut off from"
                              " etcd, etcd member killed, PostgreSQL restarted) during an alarm"
                              " storm, each with a VNF failing over; invariants counted")
    bc.add_argument("--faults", type=int, default=100)
    bc.add_argument("--seed", type=int, default=1)
    bc.add_argument("--json", action="store_true")
    bc.add_argument("-f", "--file", type=Path, default=None,
                    help="topology (default: 2 hosts, one 2N VNF 'gw')")
    bc.add_argument("--vnf", default="gw", help="the VNF whose active is killed each round")
    bc.set_defaults(func=_cmd_bench_chaos)
    bs = bsub.add_parser("scale",
                         help="the real controller and its HA director against N simulated"
                              " hosts of M VMs (loopback): time until all are up, false"
                              " suspects, VM crash receipt, host silence -> down, heartbeats"
                              " dropped, the controller's CPU and memory")
    bs.add_argument("--hosts", type=int, required=True)
    bs.add_argument("--vms-per-host", type=int, required=True)
    bs.add_argument("--duration", type=float, default=60.0,
                    help="seconds watched once every host is up (the issue's run: 600)")
    bs.add_argument("--crashes", type=int, default=20,
                    help="VM crashes injected, spread over the watch")
    bs.add_argument("--silences", type=int, default=3,
                    help="hosts powered off, spread over the watch (each powered on again"
                         " once confirmed down)")
    bs.add_argument("--json", action="store_true")
    bs.add_argument("--sim-procs", type=int, default=0,
                    help="host simulator shards, each a process for the hosts'"
                         " supervisors and one for their agents (default: one per 600"
                         " hosts)")
    bs.add_argument("--up-timeout", type=float, default=300.0,
                    help="seconds from the controller's start to wait for every host to be up")
    bs.add_argument("--settle", type=float, default=10.0,
                    help="seconds to wait after the watch for the injected faults' events")
    bs.add_argument("--heartbeat-interval-ms", type=int, default=0,
                    help="host_heartbeat_interval_ms of the deployment (default: the"
                         " setting's default)")
    bs.add_argument("--heartbeat-misses", type=int, default=0,
                    help="host_heartbeat_misses (default: the setting's default)")
    bs.add_argument("--keep", action="store_true",
                    help="keep the run directory (logs, configuration) for a post-mortem")
    bs.set_defaults(func=_cmd_bench_scale)

    from nfvha.amf.own.options import add_options as vnf_am_options

    va = sub.add_parser("vnf-am", help="run a VNF's own availability manager over the VIM's"
                                       " API (vnfm: own; started by 'nfvha up')")
    vnf_am_options(va)
    va.set_defaults(func=_cmd_vnf_am)

    for name, module in (("agent", "nfvha.agent.main"), ("hostd", "nfvha.agent.hostd"),
                         ("controller", "nfvha.controller.main"),
                         ("director", "nfvha.director.main"),
                         ("front", "nfvha.controller.frontmain")):
        ip = sub.add_parser(name, help=f"run the {name} (started by 'nfvha up')")
        ip.add_argument("--config", type=Path, required=True)
        ip.set_defaults(func=_internal(module))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except TopologyError as e:
        print(e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        import httpx

        from nfvha.testbed.deploy import TestbedError

        if isinstance(e, httpx.ConnectError):
            print(f"nfvha: the controller does not answer ({e}); is the run up?",
                  file=sys.stderr)
            return 1
        if isinstance(e, TestbedError | httpx.HTTPError | ValueError | RuntimeError):
            print(f"nfvha: {e}", file=sys.stderr)
            return 1
        raise
    return rc


if __name__ == "__main__":
    sys.exit(main())
