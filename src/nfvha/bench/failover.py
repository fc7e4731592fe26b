"""``nfvha bench controller-failover``: the leading controller killed, with a VNF fault at
the same moment (ADR 0013).

Runs its own cluster test bed (3 controllers, 3 etcd members, PostgreSQL) and, per
run: waits for a healthy state (one leader deciding, every agent connected, the
VNF with an active and every unit in service), then SIGKILLs the leader and the
VNF's active component together. Measured on CLOCK_MONOTONIC (one clock for every
process of the machine) from the kill:

- failover: until another controller decides (its term's work is up);
- first recovery: until the first assignment record of the new term is written
  (seen by a watch on etcd from this process);
- double_active: records with more than one active for a single-active SI;
- lost: agent events acknowledged (the agents' spools) but not in PostgreSQL.

The killed controller is started again after each run, as a supervisor would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nfvha.amf.model import AssignmentRecord
from nfvha.bench.stats import percentile
from nfvha.model.topology import Topology, load_topology, parse_topology
from nfvha.store.etcd import EtcdAssignmentStore
from nfvha.store.pg import PgDatabase
from nfvha.store.pg_stores import PgEventStore
from nfvha.testbed.apiclient import failover_client, member_state
from nfvha.testbed.cluster import ClusterTestbed
from nfvha.testbed.faults import FaultInjector

SMALL: dict[str, Any] = {
    "name": "controller-failover",
    "settings": {"vm_record_interval_s": 0.2, "condition_report_interval_s": 5.0},
    "sites": [{"name": "s", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                      {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [{"name": "vm1", "host": "h1", "memory_mb": 128},
            {"name": "vm2", "host": "h2", "memory_mb": 128}],
    "vnfs": [{"name": "gw", "redundancy": "2n", "stateful": False,
              "components": [{"name": "gw-a", "vm": "vm1", "port": 7000},
                             {"name": "gw-b", "vm": "vm2", "port": 7000}]}],
}


class FailoverBench:
    def __init__(self, tb: ClusterTestbed, vnf: str) -> None:
        self.tb = tb
        self.vnf = vnf
        self.records: list[tuple[int, AssignmentRecord]] = []  # (seen mono ns, record)
        self.failover_ms: list[float] = []
        self.first_recovery_ms: list[float] = []
        self.double_active = 0

    def members(self) -> dict[str, dict[str, Any] | None]:
        return {m.name: member_state(m.front_url) for m in self.tb.members}

    async def _deciding(self, above: int = 0, timeout_s: float = 30.0) -> tuple[str, Any]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            found = [(n, s) for n, s in (await asyncio.to_thread(self.members)).items()
                     if s is not None and s["deciding"] and s["epoch"] > above]
            if len(found) == 1:
                return found[0]
            await asyncio.sleep(0.01)
        raise TimeoutError("no controller decides")

    async def _healthy(self, api: httpx.AsyncClient, timeout_s: float = 60.0) -> str:
        """Wait for the VNF's active, every unit in service, every agent connected."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError, KeyError, ValueError, StopIteration):
                hosts = (await api.get("/v1/hosts")).json()
                v = next(x for x in (await api.get("/v1/availability")).json()
                         if x["vnf"] == self.vnf)
                si = v["service_instances"][0]
                if all(h["agent"]["connected"] for h in hosts) and len(si["active"]) == 1 \
                        and all(u["readiness"] == "in-service" and u["connected"]
                                for u in v["service_units"]):
                    active: str = si["active"][0]
                    return active
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.vnf} not healthy after {timeout_s:g} s")

    async def watch_records(self) -> None:
        s = self.tb.member_config_path(self.tb.members[0].name)
        cfg = json.loads(s.read_text())["store"]
        # etcd itself, not a member's endpoints (they may be proxies a fault cuts)
        store = EtcdAssignmentStore.connect(self.tb.etcd.endpoints, prefix=cfg["etcd_prefix"])
        try:
            _, rev = await asyncio.to_thread(store.snapshot)
            async for rec in store.watch(rev):
                self.records.append((time.monotonic_ns(), rec))
                if len(rec.active) > 1:
                    self.double_active += 1
        finally:
            store.close()

    async def run_once(self, api: httpx.AsyncClient, fault: bool) -> None:
        active = await self._healthy(api)
        name, old = await self._deciding()
        faults = FaultInjector(self.tb.run, self.tb.topology)
        t0 = time.monotonic_ns()
        self.tb.kill_member(name, signal.SIGKILL)
        if fault:
            faults.inject("vnfc-crash", active)
        _, new = await self._deciding(above=old["epoch"])
        self.failover_ms.append((new["terms"][-1]["deciding_ns"] - t0) / 1e6)
        if fault:
            end = time.monotonic() + 30.0
            while not any(seen > t0 for seen, _ in self.records):
                if time.monotonic() > end:
                    raise TimeoutError("no recovery decision after the fault")
                await asyncio.sleep(0.01)
            first = min(seen for seen, _ in self.records if seen > t0)
            self.first_recovery_ms.append((first - t0) / 1e6)
        await asyncio.to_thread(self.tb.start_member, name)
        end = time.monotonic() + 30.0
        front = next(m.front_url for m in self.tb.members if m.name == name)
        while (s := await asyncio.to_thread(member_state, front)) is None \
                or s["leader"] is None:
            if time.monotonic() > end:
                raise TimeoutError(f"controller {name} did not come back")
            await asyncio.sleep(0.1)

    def lost_events(self) -> int:
        """Events each agent saw acknowledged (its spool's mark) that PostgreSQL lacks."""
        cfg = json.loads(self.tb.member_config_path(self.tb.members[0].name).read_text())
        store = PgEventStore(PgDatabase(cfg["store"]["pg_conninfo"],
                                        schema=cfg["store"]["pg_schema"]), owns_db=True)
        lost = 0
        try:
            for host in self.tb.topology.host_names():
                acked_file = self.tb.run.host_dir(host) / "spool" / "spool.acked"
                acked = int(acked_file.read_text().strip() or 0) if acked_file.exists() else 0
                seqs: set[int] = set()
                after = 0
                while batch := store.events(after=after, limit=1000, host=host):
                    seqs |= {e.seq for e in batch if e.seq > 0}
                    after = batch[-1].id
                lost += len(set(range(1, acked + 1)) - seqs)
        finally:
            store.close()
        return lost


async def run_bench(topology: Topology, runs: int, vnf: str, fault: bool,
                    log: Any) -> dict[str, Any]:
    tb = ClusterTestbed(topology, size=3)
    log(f"starting run {tb.run.run_id}: 3 controllers, 3 etcd members, PostgreSQL ...")
    await tb.start()
    bench = FailoverBench(tb, vnf)
    watcher = asyncio.create_task(bench.watch_records())
    try:
        async with failover_client(tb.api_urls, headers=tb.headers, timeout=5.0) as api:
            for i in range(runs):
                await bench.run_once(api, fault)
                log(f"run {i + 1}/{runs}: failover {bench.failover_ms[-1]:.0f} ms"
                    + (f", first recovery {bench.first_recovery_ms[-1]:.0f} ms"
                       if fault else ""))
            await bench._healthy(api)
        lost = await asyncio.to_thread(bench.lost_events)
    finally:
        watcher.cancel()
        await asyncio.to_thread(tb.down)
    f, r = bench.failover_ms, bench.first_recovery_ms
    return {
        "runs": runs,
        "failover_p50_ms": round(percentile(f, 50), 1),
        "failover_p99_ms": round(percentile(f, 99), 1),
        "failover_max_ms": round(max(f), 1),
        "first_recovery_p50_ms": round(percentile(r, 50), 1) if r else None,
        "first_recovery_p99_ms": round(percentile(r, 99), 1) if r else None,
        "lost": lost,
        "double_active": bench.double_active,
    }


def run_failover_bench(args: argparse.Namespace) -> int:
    topology = load_topology(args.file) if args.file else parse_topology(SMALL, "bench")
    err = Console(stderr=True)
    result = asyncio.run(run_bench(topology, args.runs, args.vnf, not args.no_fault,
                                   lambda line: err.print(line, markup=False)))
    if args.json:
        print(json.dumps(result))
    else:
        t = Table(title=f"controller failover ({result['runs']} runs; leader SIGKILLed"
                        + ("" if args.no_fault else f", {args.vnf}'s active with it") + ")")
        for k in result:
            t.add_column(k.replace("_ms", " ms").replace("_", " "), justify="right")
        t.add_row(*("-" if v is None else str(v) for v in result.values()))
        Console(width=max(Console().width, 140)).print(t)
    return 0 if result["lost"] == 0 and result["double_active"] == 0 else 1
