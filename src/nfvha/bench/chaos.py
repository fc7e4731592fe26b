"""``nfvha bench cluster-chaos``: randomized control-plane faults during an alarm storm
and while a VNF fails over, with the invariants of the controller cluster checked
(ADR 0013).

One cluster test bed (3 controllers, 3 etcd members, PostgreSQL, the agents' hosts).
Throughout the run an alarm storm goes on: sensor alarms raised and cleared on every
host, without pause; an operator acknowledges alarms through the API; three webhook
subscribers (another process) take every notification. Each round, from a healthy
cluster, one control-plane fault drawn at random:

- ``leader-kill``: the leading controller SIGKILLed (started again once another leads);
- ``etcd-member-kill``: an etcd member SIGKILLed (the raft leader half of the time);
- ``postgres-restart``: PostgreSQL stopped for a random while and started again;
- ``leader-partition``: the leader's paths to etcd cut (healed once another leads);

and, at a random offset within the failover window, the VNF's active component
killed. The round ends when the VNF has one active and every unit in service again
and the part is back.

Invariants, counted over the whole run (each must be 0):

- lost_events: agent events acknowledged (the agents' spools) but not stored;
- lost_alarms: stored events that raise an alarm with no alarm of their key;
- lost_acks: alarms acknowledged with a 200 that are not acknowledged in the store;
- missed_notifications: (subscriber, alarm raised or cleared) never delivered;
- double_recovery: a failed VNFC started more than once for one failure, or the
  SI's active moved more than once (VNFHA-10);
- double_active: assignment records with two actives for one SI;
- overlapping_terms: a term elected before the one before it had stopped acting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from nfvha.bench.alarms import ReceiverProcess
from nfvha.bench.failover import SMALL, FailoverBench
from nfvha.bench.stats import percentile
from nfvha.faults.catalog import RAISES, alarm_key, part_of
from nfvha.model.events import Kind
from nfvha.model.topology import SAL_RECOVERY_MS, Topology, load_topology, parse_topology
from nfvha.store.pg import PgDatabase
from nfvha.store.pg_stores import PgAlarmStore, PgEventStore
from nfvha.testbed.apiclient import failover_client
from nfvha.testbed.cluster import ClusterTestbed
from nfvha.testbed.etcdpaths import EtcdPaths
from nfvha.testbed.faults import FaultInjector

FAULT_KINDS = ("leader-kill", "etcd-member-kill", "postgres-restart", "leader-partition")
SUBSCRIBERS = 3
STORM_SENSORS = 6  # per host
# The VNF fault lands this far (uniformly) after the control-plane fault: across
# the leaderless window of a failover (~1.2 s) and a little past it.
VNF_FAULT_WINDOW_S = 1.5
SETTLE_TIMEOUT_S = 60.0

# The benchmark's topology with the sensors read often, so the storm reaches the
# controllers while they fail over.
CHAOS: dict[str, Any] = {**SMALL, "name": "cluster-chaos",
                         "settings": {**SMALL["settings"], "sensor_poll_interval_s": 0.25}}


@dataclass
class RoundResult:
    kind: str
    crashed: str  # the VNFC killed
    vnf_fault_ns: int
    end_ns: int = 0
    failover_ms: float | None = None  # leader faults: until another decides
    vnf_recovery_ms: float | None = None  # until an SU other than the crashed is active


@dataclass
class Invariants:
    lost_events: int = 0
    lost_alarms: int = 0
    lost_acks: int = 0
    missed_notifications: int = 0
    double_recovery: int = 0
    double_active: int = 0
    overlapping_terms: int = 0
    unsettled: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if isinstance(v, int)}


class AlarmStorm:
    """Sensor alarms raised and cleared on every host without pause (the agents read
    their sensor files): the control-plane faults land in the middle of it."""

    def __init__(self, faults: FaultInjector, hosts: list[str], rng: random.Random,
                 sensors: int = STORM_SENSORS, period_s: float = 0.05) -> None:
        self._faults = faults
        self._hosts = hosts
        self._rng = rng
        self._names = [f"storm{j}" for j in range(sensors)]
        self._period_s = period_s
        self._raised: set[tuple[str, str]] = set()
        self.changes = 0

    async def run(self) -> None:
        while True:
            host, name = self._rng.choice(self._hosts), self._rng.choice(self._names)
            if (host, name) in self._raised:
                self._faults.inject("sensor", host, name=name, clear=True)
                self._raised.discard((host, name))
            else:
                self._faults.inject("sensor", host, name=name, value=99.0, warn=70.0,
                                    crit=90.0, unit="C")
                self._raised.add((host, name))
            self.changes += 1
            await asyncio.sleep(self._period_s)

    def calm(self) -> None:
        for host in self._hosts:
            self._faults.inject("sensor", host, clear=True)
        self._raised.clear()


class Operator:
    """Acknowledges alarms through the API, now and then, as an operator would; counts
    the answers (a refusal while nobody leads is fine, a lost 200 is not)."""

    def __init__(self, api: httpx.AsyncClient, rng: random.Random,
                 period_s: float = 0.3) -> None:
        self._api = api
        self._rng = rng
        self._period_s = period_s
        self.acknowledged: set[str] = set()  # answered 200
        self.answers: Counter[str] = Counter()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            try:
                r = await self._api.get("/vnffm/v1/alarms")
                if r.status_code != 200:
                    self.answers[f"list {r.status_code}"] += 1
                    continue
                todo = [a["id"] for a in r.json() if a["ackState"] == "UNACKNOWLEDGED"]
                if not todo:
                    continue
                alarm_id = self._rng.choice(todo)
                r = await self._api.patch(
                    f"/vnffm/v1/alarms/{alarm_id}", json={"ackState": "ACKNOWLEDGED"},
                    headers={"content-type": "application/merge-patch+json"})
                self.answers[str(r.status_code)] += 1
                if r.status_code == 200:
                    self.acknowledged.add(alarm_id)
            except httpx.HTTPError as e:
                self.answers[type(e).__name__] += 1


class ChaosBench(FailoverBench):
    def __init__(self, tb: ClusterTestbed, paths: EtcdPaths, vnf: str,
                 rng: random.Random, log: Callable[[str], None]) -> None:
        super().__init__(tb, vnf)
        self.paths = paths
        self.rng = rng
        self.log = log
        self.faults = FaultInjector(tb.run, tb.topology)
        self.rounds: list[RoundResult] = []
        self.terms: dict[int, dict[str, Any]] = {}  # epoch -> term, as members report them
        self.acknowledged = 0
        self.ack_answers: dict[str, int] = {}
        self.checked: dict[str, int] = {}  # how much the invariants were checked over

    # -- looking ----------------------------------------------------------------------
    async def _cluster_whole(self, api: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
        """Every controller up, etcd in sync, PostgreSQL up: faults never stack."""
        end = time.monotonic() + timeout_s
        st: Any = None
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                st = (await api.get("/v1/cluster")).json()
                if all(m["state"] == "up" for m in st["members"]) \
                        and st["etcd"]["state"] == "in-sync" and st["postgres"]["state"] == "up":
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"the cluster is not whole again: {st}")

    def note_terms(self) -> None:
        for s in self.members().values():
            for t in (s or {}).get("terms", []):
                self.terms[t["epoch"]] = t

    def overlapping_terms(self) -> list[str]:
        """A term elected while the one before it could still act (split brain)."""
        bad = []
        epochs = sorted(self.terms)
        for a, b in itertools.pairwise(epochs):
            stopped = self.terms[a]["stopped_ns"]
            if stopped is not None and self.terms[b]["elected_ns"] <= stopped:
                bad.append(f"term {b} elected before term {a} stopped")
        return bad

    # -- a round ----------------------------------------------------------------------
    async def run_round(self, api: httpx.AsyncClient, kind: str) -> RoundResult:
        await self._cluster_whole(api)
        active = await self._healthy(api)
        name, old = await self._deciding()
        offset_s = self.rng.uniform(0.0, VNF_FAULT_WINDOW_S)
        await asyncio.to_thread(self.note_terms)  # the leader's history, before it goes
        t0 = time.monotonic_ns()
        restore = await self._fault(kind, name)
        await asyncio.sleep(offset_s)  # the VNF fault's random place in the window
        vnf_ns = time.monotonic_ns()
        self.faults.inject("vnfc-crash", active)
        result = RoundResult(kind, active, vnf_ns)
        if kind in ("leader-kill", "leader-partition"):
            _, new = await self._deciding(above=old["epoch"])
            result.failover_ms = (new["terms"][-1]["deciding_ns"] - t0) / 1e6
        result.vnf_recovery_ms = await self._recovered_ms(active, vnf_ns)
        await restore()
        await self._healthy(api)
        await self._cluster_whole(api)
        await asyncio.to_thread(self.note_terms)
        result.end_ns = time.monotonic_ns()
        return result

    async def _fault(self, kind: str, leader: str) -> Callable[[], Any]:
        """Do the fault; return what undoes it (after the VNF is recovered)."""
        tb = self.tb
        if kind == "leader-kill":
            tb.kill_member(leader, signal.SIGKILL)

            async def restart() -> None:
                await asyncio.to_thread(tb.start_member, leader)
            return restart
        if kind == "leader-partition":
            self.paths.cut(leader)

            async def heal() -> None:
                self.paths.heal(leader)
            return heal
        if kind == "etcd-member-kill":
            raft_leader = await asyncio.to_thread(tb.etcd.leader_index)
            i = raft_leader if raft_leader is not None and self.rng.random() < 0.5 \
                else self.rng.randrange(len(tb.etcd.members))
            tb.etcd.kill_member(i)

            async def start_etcd() -> None:
                await asyncio.to_thread(tb.etcd.start_member, i)
            return start_etcd
        if kind == "postgres-restart":
            await asyncio.to_thread(tb.pg.stop)
            stopped = time.monotonic()
            down_s = self.rng.uniform(0.2, 2.0)

            async def start_pg() -> None:
                # down for at least down_s: the outage is the fault itself
                await asyncio.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
                await asyncio.to_thread(tb.pg.start)
            return start_pg
        raise ValueError(f"unknown fault {kind!r}; valid: {', '.join(FAULT_KINDS)}")

    def _restored_ns(self, crashed: str, since_ns: int, until_ns: int | None = None
                     ) -> int | None:
        """When a record after the fault gave the SI an active again: the first record
        with an active once one has dropped the failed one (the standby promoted, or
        - when a new AM heard the restarted SU first - that SU)."""
        dropped = False
        for seen, r in self.records:
            if seen <= since_ns or (until_ns is not None and seen > until_ns):
                continue
            dropped = dropped or crashed not in r.active
            if dropped and r.active:
                return seen
        return None

    async def _recovered_ms(self, crashed: str, since_ns: int, timeout_s: float = 30.0) -> float:
        end = time.monotonic() + timeout_s
        while (restored := self._restored_ns(crashed, since_ns)) is None:
            if time.monotonic() > end:
                raise TimeoutError(f"{self.vnf}: no active again after {crashed} failed")
            await asyncio.sleep(0.01)
        return (restored - since_ns) / 1e6

    # -- the invariants -------------------------------------------------------------
    def double_recoveries(self, events: PgEventStore) -> list[str]:
        bad = []
        started = _all(events, kind=Kind.VNFC_STARTED.value)
        for r in self.rounds:
            n = sum(1 for e in started if e.entity == f"vnfc/{r.crashed}"
                    and r.vnf_fault_ns < e.detected_mono_ns <= r.end_ns)
            if n != 1:
                bad.append(f"{r.kind}: {r.crashed} started {n} times for one failure")
            # once restored, the active stays where it is (no second recovery, no
            # fail-back in 2N)
            restored = self._restored_ns(r.crashed, r.vnf_fault_ns, r.end_ns)
            after = [rec for seen, rec in self.records
                     if restored is not None and restored <= seen <= r.end_ns and rec.active]
            moves = sum(1 for a, b in itertools.pairwise(after) if a.active != b.active)
            if restored is None or moves:
                trail = ", ".join(f"{rec.epoch}:{'+'.join(rec.active)}" for rec in after)
                bad.append(f"{r.kind}: the active of {self.vnf} moved again {moves} times"
                           f" after {r.crashed} failed (epoch:active {trail})" if restored else
                           f"{r.kind}: {self.vnf} never restored after {r.crashed} failed")
        return bad

    async def settle(self, rx: ReceiverProcess, operator: Operator, first_alarms: set[str],
                     inv: Invariants) -> None:
        """After the storm: wait (bounded) for the store and the subscribers to catch up,
        then count what is still missing."""
        end = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            missing = await asyncio.to_thread(self._check_store, rx, operator, first_alarms)
            if not any(missing.values()) or time.monotonic() > end:
                break
            await asyncio.sleep(0.5)
        inv.lost_alarms = len(missing["alarms"])
        inv.lost_acks = len(missing["acks"])
        inv.missed_notifications = len(missing["notifications"])
        inv.unsettled = [*missing["alarms"], *missing["acks"], *missing["notifications"]][:20]

    def _check_store(self, rx: ReceiverProcess, operator: Operator,
                     first_alarms: set[str]) -> dict[str, list[str]]:
        cfg = json.loads(self.tb.member_config_path(self.tb.members[0].name).read_text())
        db = PgDatabase(cfg["store"]["pg_conninfo"], schema=cfg["store"]["pg_schema"])
        events, alarms = PgEventStore(db), PgAlarmStore(db)
        try:
            rows = alarms.all()
            keys = {a.key for a in rows}
            raising = [(e, t) for e in _all(events) if not e.informational and not e.clears
                       and (t := RAISES.get(Kind(e.kind))) is not None]
            lost = [f"event {e.id} ({e.kind} {e.entity}): no alarm" for e, t in raising
                    if alarm_key(t, e.entity, part_of(t, e)) not in keys]
            by_id = {a.id: a for a in rows}
            acks = [f"alarm {i}: acknowledged (200) but not stored so"
                    for i in operator.acknowledged
                    if i not in by_id or json.loads(by_id[i].body)["ackState"] != "ACKNOWLEDGED"]
            got = {(g.port, g.kind, g.alarm_id) for g in rx.got}
            missed = [f"subscriber {p}: no {n} for {a.id}"
                      for a in rows if a.id not in first_alarms for p in rx.ports
                      for n in ("AlarmNotification",
                                *(() if a.active else ("AlarmClearedNotification",)))
                      if (p, n, a.id) not in got]
            self.checked = {"alarms_checked": sum(1 for a in rows if a.id not in first_alarms),
                            "events_checked": len(raising),
                            "notifications_received": len(rx.got)}
            return {"alarms": lost, "acks": acks, "notifications": missed}
        finally:
            db.close()


def _all(events: PgEventStore, **where: Any) -> list[Any]:
    out: list[Any] = []
    after = 0
    while batch := events.events(after=after, limit=5000, **where):
        out += batch
        after = batch[-1].id
    return out


async def run_chaos(topology: Topology, faults: int, seed: int, vnf: str,
                    log: Callable[[str], None],
                    tb: ClusterTestbed | None = None,
                    paths: EtcdPaths | None = None) -> dict[str, Any]:
    """The benchmark; ``tb`` and ``paths``: an already started cluster to use (a test's),
    else one of its own, torn down at the end."""
    own = tb is None
    if tb is None:
        tb = ClusterTestbed(topology, size=3)
        paths = EtcdPaths(tb.etcd.endpoints)
        tb.etcd_endpoints_of = paths.endpoints_for
        log(f"starting run {tb.run.run_id}: 3 controllers, 3 etcd members, PostgreSQL ...")
        await tb.start()
    assert paths is not None
    rng = random.Random(seed)
    bench = ChaosBench(tb, paths, vnf, rng, log)
    inv = Invariants()
    rx = ReceiverProcess()
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(bench.watch_records())]
    # the storm and the operator draw from their own generators: the faults' order
    # and places depend on the seed only
    storm = AlarmStorm(bench.faults, tb.topology.host_names(), random.Random(seed + 1))
    try:
        async with failover_client(tb.api_urls, headers=tb.headers, timeout=5.0) as api:
            await bench._cluster_whole(api)
            for port in await rx.start(SUBSCRIBERS):
                r = await api.post("/vnffm/v1/subscriptions",
                                   json={"callbackUri": f"http://127.0.0.1:{port}/n"})
                r.raise_for_status()
            # alarms from before the subscriptions: not owed to them (any change after
            # this listing is)
            first_alarms = {a["id"] for a in (await api.get("/vnffm/v1/alarms")).json()}
            operator = Operator(api, random.Random(seed + 2))
            tasks += [asyncio.create_task(storm.run()), asyncio.create_task(operator.run())]
            kinds = [FAULT_KINDS[i % len(FAULT_KINDS)] for i in range(faults)]
            rng.shuffle(kinds)
            for i, kind in enumerate(kinds):
                result = await bench.run_round(api, kind)
                bench.rounds.append(result)
                log(f"fault {i + 1}/{faults} {kind}: {vnf} recovered in"
                    f" {result.vnf_recovery_ms:.0f} ms"
                    + (f", failover {result.failover_ms:.0f} ms"
                       if result.failover_ms is not None else ""))
            for t in tasks[1:]:
                t.cancel()
            storm.calm()
            await bench._healthy(api)
            log("settling: the storm calmed, waiting for the store and the subscribers ...")
            await bench.settle(rx, operator, first_alarms, inv)
            bench.acknowledged = len(operator.acknowledged)
            bench.ack_answers = dict(operator.answers)
        inv.lost_events = await asyncio.to_thread(bench.lost_events)
        cfg = json.loads(tb.member_config_path(tb.members[0].name).read_text())["store"]
        events = PgEventStore(PgDatabase(cfg["pg_conninfo"], schema=cfg["pg_schema"]),
                              owns_db=True)
        try:
            doubles = await asyncio.to_thread(bench.double_recoveries, events)
        finally:
            events.close()
        inv.double_recovery = len(doubles)
        inv.unsettled += doubles
        inv.double_active = bench.double_active
        overlaps = bench.overlapping_terms()
        inv.overlapping_terms = len(overlaps)
        inv.unsettled += overlaps
    finally:
        for t in tasks:
            t.cancel()
        await rx.close()
        if own:
            await asyncio.to_thread(tb.down)
            paths.close()
    return _report(bench, inv, storm, vnf, seed)


def _report(bench: ChaosBench, inv: Invariants, storm: AlarmStorm, vnf: str,
            seed: int) -> dict[str, Any]:
    rec = [r.vnf_recovery_ms for r in bench.rounds if r.vnf_recovery_ms is not None]
    sal = SAL_RECOVERY_MS[next(v.sal for v in bench.tb.topology.vnfs if v.name == vnf)]
    by_kind: dict[str, Any] = {}
    for kind in FAULT_KINDS:
        rs = [r for r in bench.rounds if r.kind == kind]
        fo = [r.failover_ms for r in rs if r.failover_ms is not None]
        kr = [r.vnf_recovery_ms for r in rs if r.vnf_recovery_ms is not None]
        by_kind[kind] = {
            "faults": len(rs),
            "failover_p99_ms": round(percentile(fo, 99), 1) if fo else None,
            "vnf_recovery_p50_ms": round(percentile(kr, 50), 1) if kr else None,
            "vnf_recovery_p99_ms": round(percentile(kr, 99), 1) if kr else None,
        }
    return {
        "faults": len(bench.rounds), "seed": seed, "by_kind": by_kind,
        "vnf_recovery_p50_ms": round(percentile(rec, 50), 1) if rec else None,
        "vnf_recovery_p99_ms": round(percentile(rec, 99), 1) if rec else None,
        "sal_ms": sal, "sal_met": bool(rec) and max(rec) < sal,
        "storm_sensor_changes": storm.changes, "alarms_acknowledged": bench.acknowledged,
        "ack_answers": bench.ack_answers, **bench.checked,
        **inv.counts(), "problems": inv.unsettled,
    }


def run_chaos_bench(args: argparse.Namespace) -> int:
    topology = load_topology(args.file) if args.file else parse_topology(CHAOS, "bench")
    err = Console(stderr=True)
    result = asyncio.run(run_chaos(topology, args.faults, args.seed, args.vnf,
                                   lambda line: err.print(line, markup=False)))
    if args.json:
        print(json.dumps(result))
    else:
        t = Table(title=f"cluster chaos: {result['faults']} control-plane faults (seed"
                        f" {result['seed']}), each with {args.vnf}'s active killed")
        for col in ("fault", "faults", "failover p99 ms", "VNF recovery p50 ms",
                    "VNF recovery p99 ms"):
            t.add_column(col, justify="right")
        for kind, k in result["by_kind"].items():
            t.add_row(kind, *("-" if v is None else str(v) for v in k.values()))
        t.add_row("all", str(result["faults"]), "-", str(result["vnf_recovery_p50_ms"]),
                  str(result["vnf_recovery_p99_ms"]))
        con = Console(width=max(Console().width, 120))
        con.print(t)
        inv = Table(title=f"invariants (SAL {result['sal_ms']:.0f} ms met:"
                          f" {'yes' if result['sal_met'] else 'NO'})")
        for k in Invariants().counts():
            inv.add_column(k.replace("_", " "), justify="right")
        inv.add_row(*(str(result[k]) for k in Invariants().counts()))
        con.print(inv)
        for p in result["problems"]:
            con.print(f"  {p}", markup=False)
    ok = result["sal_met"] and not any(result[k] for k in Invariants().counts())
    return 0 if ok else 1
