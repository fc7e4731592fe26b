"""``nfvha up``: start everything, show live status, clean up on Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import httpx
from rich.console import Console, Group
from rich.live import Live

from nfvha.cli.render import list_everything, status_tables
from nfvha.model.topology import TopologyError, load_topology
from nfvha.nfvi.fabric import topology_limit_problems
from nfvha.testbed.apiclient import FailoverTransport, get_all
from nfvha.testbed.deploy import Testbed


async def _live(tb: Testbed, console: Console, once: bool, stop: asyncio.Event) -> None:
    urls: list[str] = getattr(tb, "api_urls", None) or [tb.api_url]
    transport = FailoverTransport(urls) if len(urls) > 1 else None  # any controller answers
    async with httpx.AsyncClient(base_url=tb.api_url, timeout=2.0, headers=tb.headers,
                                 transport=transport) as client:
        async def fetch() -> Group:
            r = await client.get("/v1/status")
            r.raise_for_status()
            status = r.json()
            lists = None
            if list_everything(status):  # else the summary's not-healthy ones
                hosts, vms, vnfcs = await asyncio.gather(*(
                    get_all(client, f"/v1/{kind}") for kind in ("hosts", "vms", "vnfcs")))
                lists = {"hosts": hosts, "vms": vms, "vnfcs": vnfcs}
            after = max(0, status["last_event_id"] - 40)
            events = (await client.get(f"/v1/events?after={after}")).json()
            return status_tables(status, lists, events, tb.api_url)

        async def render() -> Group | str:
            # A busy controller (a big deployment just started) may answer late: the
            # run is up all the same, the table comes with the next refresh.
            try:
                return await fetch()
            except httpx.HTTPError as e:
                return f"nfvha: no status from the controller yet ({type(e).__name__})"

        if once:
            console.print(await render())
            await stop.wait()
            return
        with Live(await render(), console=console, refresh_per_second=4) as live:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    live.update(await fetch())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)


async def _main(args: argparse.Namespace) -> int:
    console = Console()
    topology = load_topology(args.file)
    problems = topology_limit_problems(topology)
    if problems:  # refused before anything is created
        raise TopologyError(str(args.file), [f"(top level): {p}" for p in problems])
    size = getattr(args, "cluster", None)
    if size:
        from nfvha.testbed.cluster import ClusterTestbed

        tb: Testbed = ClusterTestbed(topology, size=size)
    else:
        tb = Testbed(topology)
    problems = tb.hypervisor_problems()
    if problems:  # libvirt hosts this machine cannot run: refused before anything starts
        raise TopologyError(str(args.file), [f"on this machine: {p}" for p in problems])
    if not tb.namespaced:
        console.print(f"[yellow]nfvha: {tb.fallback_reason}; running everything on loopback"
                      " (127.0.0.1, distinct ports): no namespaces, cgroups or link faults[/]")
    console.print(f"nfvha: starting run {tb.run.run_id} from {args.file} ...")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await tb.start()
        console.print(f"nfvha: run {tb.run.run_id} is up. API: {tb.api_url}  (files:"
                      f" {tb.run.root}). 'nfvha status' in another terminal; Ctrl-C stops.")
        if size:
            console.print(f"nfvha: {size} controllers on etcd and PostgreSQL; any of"
                          f" {', '.join(getattr(tb, 'api_urls', []))} answers;"
                          " 'nfvha cluster' shows who leads.")
        await _live(tb, console, args.no_live, stop)
    finally:
        console.print(f"nfvha: stopping run {tb.run.run_id} and cleaning up ...")
        removed = await asyncio.to_thread(tb.down)
        console.print(f"nfvha: removed {len(removed)} object(s); bye.")
    return 0


def run_up(args: argparse.Namespace) -> int:
    return asyncio.run(_main(args))
