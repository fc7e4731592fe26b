"""One controller of N (ADR 0013): elect, lead for a term, follow, answer on the front.

Every member runs the HA loop (``leadership.LeaderElector`` over the etcd leader
lease) and its front API (``front.FrontApp``). The member that leads runs the
controller's work - the agent listener, host liveness, fault management, the VNFM,
VM and host repair: ``controller.main.serve`` - for one term: started when the term
starts (from the shared stores: nothing of an earlier term is kept in memory), torn
down when it ends. A term's work gets a ``TermContext``: the gate every action asks
at the moment it acts, the epoch its actions carry, the fence its etcd writes carry.

The members, etcd and PostgreSQL are watched from every member (VIM-4): ``GET
/v1/cluster`` on any front says who leads, each member's role and term, and the
state of etcd (MW-3: from its members) and of PostgreSQL. Also while etcd has no
quorum (nobody leads): since when, and which etcd members answer (``quorum``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from nfvha.controller.config import ControllerConfig
from nfvha.controller.directorlink import DirectorLink, director_socket
from nfvha.controller.fencing import Fencing
from nfvha.controller.front import FrontApp
from nfvha.controller.hoststates import HostStates
from nfvha.controller.httpserver import QuietServer, server_config
from nfvha.controller.leadership import LeaderElector, LeaderGate, LeaderTiming
from nfvha.controller.quorum import EtcdOutage, QuorumWatch
from nfvha.controller.stores import Stores, open_history, warm_up
from nfvha.nfvi.fence import FenceDriver, FenceError, PowerState
from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd import EtcdLeaderLease
from nfvha.store.etcd_client import EtcdClient
from nfvha.store.health import StoreHealth, etcd_health
from nfvha.store.leader import LeaderTerm
from nfvha.store.pg import PgDatabase
from nfvha.store.tokens import TokenCheck, seed_tokens
from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)


@dataclass
class TermContext:
    """What the leader's work is given for one term."""

    gate: LeaderGate  # asked at every action: False once the term is over
    epoch: int
    ready: Callable[[], None]  # the work calls it once it is up: deciding from then
    # The term's stores: the member's PostgreSQL stores (kept open across terms; the
    # term's closing them closes nothing).
    open_stores: Callable[[], Stores]
    # The member's latest look at the control plane (VIM-4): the leader raises and
    # clears its alarms (FM-2, ``controlplane.ControlPlaneAlarms``).
    watched: Callable[[], Watched] = lambda: Watched()
    member: str = ""  # this member's name
    # The member's channel to its HA director (ADR 0014): it outlives the term.
    link: DirectorLink | None = None


RunTerm = Callable[[TermContext, asyncio.Event], Coroutine[Any, Any, None]]


class GatedFence:
    """A fence device that powers nothing off or on once the term is over: fencing is
    the most drastic of a leader's actions, and a late one from a deposed leader would
    be a second recovery of one failure (VNFHA-10)."""

    def __init__(self, driver: FenceDriver, gate: LeaderGate) -> None:
        self._driver = driver
        self._gate = gate

    @property
    def description(self) -> str:
        return self._driver.description

    def quick_status(self) -> PowerState | None:
        return self._driver.quick_status()

    async def status(self) -> PowerState:
        return await self._driver.status()

    async def off(self) -> None:
        self._check("off")
        await self._driver.off()

    async def on(self) -> None:
        self._check("on")
        await self._driver.on()

    def _check(self, action: str) -> None:
        if not self._gate.is_leader():
            raise FenceError(f"power {action} refused: this controller does not lead")


def gate_fencing(fencing: Fencing, gate: LeaderGate) -> None:
    fencing.drivers = {h: GatedFence(d, gate) for h, d in fencing.drivers.items()}


@dataclass
class TermInfo:
    epoch: int
    elected_ns: int
    deciding_ns: int | None = None  # the work is up
    # When its actions stopped: the term's deadline by the clock (the gate refuses
    # from then on), or when the lease was found gone, whichever came first.
    stopped_ns: int | None = None
    ended_ns: int | None = None  # when the loop saw it end (its work is torn down)
    end_reason: str = ""


@dataclass
class Watched:
    """The last look at the control plane's parts (VIM-4)."""

    etcd: StoreHealth | None = None
    postgres: dict[str, Any] = field(default_factory=lambda: {"state": "unknown"})
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    at_ns: int = 0
    # etcd without a quorum as this member saw it: going on, and the last ones that
    # ended (what the next leader raises and clears, ``controlplane``).
    etcd_outage: EtcdOutage | None = None
    etcd_outages: tuple[EtcdOutage, ...] = ()


class ClusterController:
    def __init__(self, cfg: ControllerConfig, run_term: RunTerm, clock: Clock = SYSTEM_CLOCK,
                 *, monitor_interval_s: float = 1.0, peer_timeout_s: float = 0.5) -> None:
        if cfg.cluster is None:
            raise ValueError("not a cluster member: the configuration has no 'cluster'")
        self.cfg = cfg
        self.c = cfg.cluster
        self._run_term = run_term
        self._clock = clock
        self._monitor_interval_s = monitor_interval_s
        self._peer_timeout_s = peer_timeout_s
        s, c = cfg.store, self.c
        # The lease's own client: every call bounded by the retry timeout, so that a
        # renewal can fail and be retried twice within the TTL (checked below).
        self._lease_client = EtcdClient(
            s.etcd_endpoints, op_timeout_s=c.retry_timeout_s,
            request_timeout_s=c.retry_timeout_s,
            connect_timeout_s=min(0.3, c.retry_timeout_s))
        self.lease = EtcdLeaderLease(self._lease_client, c.leader_key, c.name, c.lease_ttl_s,
                                     prefix=s.etcd_prefix, clock=clock)
        self.elector = LeaderElector(
            self.lease, LeaderTiming(ttl_s=self.lease.ttl_s, renew_interval_s=c.renew_interval_s,
                                     retry_timeout_s=c.retry_timeout_s,
                                     follow_interval_s=c.follow_interval_s, margin_s=c.margin_s),
            clock, watch=self.lease.watch)
        self.elector.on_elected(self._elected)
        self.elector.on_demoted(self._demoted)
        self.terms: list[TermInfo] = []
        self.watched = Watched()
        self.quorum = QuorumWatch(c.name, clock)
        self._term_lock = asyncio.Lock()
        self._term_stop: asyncio.Event | None = None
        self._term_tasks: set[asyncio.Task[None]] = set()
        # Kept open across terms: a new leader's work starts on warm connections.
        self._history = open_history(cfg, clock)
        assert self._history.tokens is not None
        self._tokens = TokenCheck(self._history.tokens, cfg.auth.tokens, clock)
        self.front = FrontApp(self.leader_url, self.status, self.local_status,
                              reader=self._reader, limits=cfg.api)
        # The member's HA director (ADR 0014), and its host states as the director says.
        self.hosts = HostStates([h.name for h in cfg.hosts], clock)
        self.link = DirectorLink(director_socket(cfg), cfg.run_id, self.hosts, clock)

    async def _reader(self, token: str | None) -> bool:
        """Any API token of the shared store may read the cluster's state (no token
        configured: open)."""
        return not self.cfg.auth.tokens or await self._tokens.role_of(token) is not None

    # -- who leads ------------------------------------------------------------------------
    def leader_url(self) -> str | None:
        term = self.elector.leader()
        member = self.c.member(term.holder) if term is not None else None
        return member.api_url if member is not None else None

    def local_status(self) -> dict[str, Any]:
        leader = self.elector.leader()
        return {
            "name": self.c.name, "role": self.elector.role.value, "epoch": self.elector.epoch,
            "leader": None if leader is None else {"name": leader.holder,
                                                    "epoch": leader.epoch},
            "deciding": self.deciding(),
            "valid_until_mono_ns": self.elector.valid_until_ns,
            "terms": [asdict(t) for t in self.terms],
            "etcd": self._etcd_status(full=False),
        }

    def _etcd_status(self, *, full: bool) -> dict[str, Any]:
        h = self.watched.etcd
        if h is None:
            return {"state": "unknown"}
        seen = h.model_dump() if full else \
            h.model_dump(include={"state", "reason", "quorum", "answering", "leader"})
        return {**seen, **self.quorum.status()}

    def deciding(self) -> bool:
        """Leading, with the term's work up."""
        return self.elector.is_leader() and bool(self.terms) and \
            self.terms[-1].epoch == self.elector.epoch and self.terms[-1].deciding_ns is not None

    def status(self) -> dict[str, Any]:
        w = self.watched
        return {
            **self.local_status(),
            "members": [{"name": m.name, "front_url": m.front_url,
                         **w.members.get(m.name, {"state": "unknown"})}
                        for m in self.c.members],
            "etcd": self._etcd_status(full=True),
            "postgres": w.postgres,
            "checked_mono_ns": w.at_ns,
        }

    # -- terms ----------------------------------------------------------------------------
    def _elected(self, term: LeaderTerm) -> None:
        task = asyncio.get_running_loop().create_task(self._lead(term), name="leader-term")
        self._term_tasks.add(task)
        task.add_done_callback(self._term_tasks.discard)

    def _demoted(self, term: LeaderTerm, why: str) -> None:
        now = self._clock.mono_ns()
        deadline = self.lease.valid_until_ns - int(self.elector.timing.margin_s * 1e9) \
            if self.lease.term == term else now
        for info in self.terms:
            if info.epoch == term.epoch and info.ended_ns is None:
                info.ended_ns, info.end_reason = now, why
                info.stopped_ns = min(now, deadline)
        self._announce_term()
        if self._term_stop is not None:
            self._term_stop.set()

    async def _lead(self, term: LeaderTerm) -> None:
        """Run the work for ``term``: after the previous term's work is down, and only
        while the term lasts."""
        async with self._term_lock:
            if self.elector.epoch != term.epoch:
                return  # over before it could start
            stop = asyncio.Event()
            self._term_stop = stop
            info = TermInfo(term.epoch, self._clock.mono_ns())
            self.terms.append(info)
            up = asyncio.Event()

            def ready() -> None:
                info.deciding_ns = self._clock.mono_ns()
                up.set()
                log.info("%s decides (epoch %d), %.0f ms after its election", self.c.name,
                         term.epoch, (info.deciding_ns - info.elected_ns) / 1e6)

            ctx = TermContext(self.elector, term.epoch, ready, self._term_stores,
                              lambda: self.watched, self.c.name, self.link)
            self._announce_term()
            work = asyncio.create_task(self._run_term(ctx, stop), name=f"term-{term.epoch}")
            started = asyncio.create_task(up.wait())
            done, _ = await asyncio.wait({work, started}, timeout=self.c.start_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if not done:
                self.elector.resign(f"the leader's work did not start in"
                                    f" {self.c.start_timeout_s:g} s", 2 * self.lease.ttl_s)
            try:
                await work
            except Exception as e:
                log.exception("the leader's work of epoch %d failed", term.epoch)
                if self.elector.epoch == term.epoch:
                    self.elector.resign(f"the leader's work failed: {e}", 2 * self.lease.ttl_s)
            finally:
                self._term_stop = None

    def _term_stores(self) -> Stores:
        """The member's stores for one term: closing them at its end closes nothing."""
        h = self._history
        return Stores(h.events, h.alarms, h.ager, h.outbox, [], h.tokens)

    def _announce_term(self) -> None:
        """Tell the HA director whether and until when this member may decide: with
        every renewal (``_announce_loop``), and at once on a change."""
        if self.elector.is_leader():
            until = self.elector.valid_until_ns - int(self.elector.timing.margin_s * 1e9)
            self.link.send_term(self.elector.epoch, until, self.lease.key)
        else:
            self.link.send_term(0, 0, self.lease.key)

    async def _announce_loop(self) -> None:
        # Several times per renewal: the director's deadline moves on soon after the
        # lease's, so a healthy leader's director never reaches it.
        while True:
            self._announce_term()
            await asyncio.sleep(self.c.renew_interval_s / 4)

    async def _seed_tokens(self) -> None:
        """The configuration's API tokens into the shared store (VNFHA-12). Every member
        does it at start (a token deleted from the store comes back with a member's
        restart while it is still configured). Without the database, the configured
        ones are accepted anyway (``TokenCheck``'s fallback)."""
        assert self._history.tokens is not None
        try:
            added = await asyncio.to_thread(seed_tokens, self._history.tokens,
                                            self.cfg.auth.tokens)
        except StoreUnavailable as e:
            log.warning("API tokens not seeded into the store: %s", e)
            return
        if added:
            log.info("%d configured API token(s) put in the shared store", added)

    # -- watching the control plane (VIM-4) -----------------------------------------------------
    async def _monitor(self) -> None:
        s = self.cfg.store
        etcd = EtcdClient(s.etcd_endpoints, op_timeout_s=0.5, request_timeout_s=0.5,
                          connect_timeout_s=0.3)
        pg = PgDatabase(s.pg_conninfo or "", schema=s.pg_schema, connect_timeout_s=1.0,
                        statement_timeout_s=1.0, tcp_user_timeout_s=1.0)
        try:
            async with httpx.AsyncClient(timeout=self._peer_timeout_s, trust_env=False) as http:
                while True:
                    health, pg_ok, members = await asyncio.gather(
                        asyncio.to_thread(etcd_health, etcd),
                        asyncio.to_thread(pg.ping), self._look_at_members(http))
                    self.quorum.look(health)
                    self.watched = Watched(
                        etcd=health, members=members, at_ns=self._clock.mono_ns(),
                        etcd_outage=self.quorum.current, etcd_outages=self.quorum.ended,
                        postgres={"state": "up" if pg_ok else "unavailable",
                                  "conninfo": _without_password(s.pg_conninfo or "")})
                    await asyncio.sleep(self._monitor_interval_s)
        finally:
            etcd.close()
            pg.close()

    async def _look_at_members(self, http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        async def one(url: str) -> dict[str, Any]:
            try:
                r = await http.get(url.rstrip("/") + "/v1/cluster/self")
                body: dict[str, Any] = r.json()
                return {"state": "up", "role": body.get("role"), "epoch": body.get("epoch")}
            except (httpx.HTTPError, ValueError) as e:
                return {"state": "unreachable", "error": str(e) or type(e).__name__}

        others = [m for m in self.c.members if m.name != self.c.name]
        found = await asyncio.gather(*(one(m.front_url) for m in others))
        out = {m.name: r for m, r in zip(others, found, strict=True)}
        out[self.c.name] = {"state": "up", "role": self.elector.role.value,
                            "epoch": self.elector.epoch}
        return out

    # -- the process ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve the front, elect, lead or follow, until ``stop``; then hand over."""
        # What a member's first term would otherwise pay for: connections, and the
        # module FastAPI imports at its first route (~50 ms, measured).
        with contextlib.suppress(ImportError):
            importlib.import_module("pydantic.v1")
        if not await asyncio.to_thread(warm_up, self._history):
            log.warning("PostgreSQL does not answer yet; a term would start without it")
        await self._seed_tokens()
        server = QuietServer(server_config(self.front, self.c.front_host, self.c.front_port,
                                           self.cfg.api, timeout_graceful_shutdown=1))
        api = asyncio.create_task(server.serve(), name="front")
        self.link.start()
        announcer = asyncio.create_task(self._announce_loop(), name="term-announcer")
        elector = asyncio.create_task(self.elector.run(), name="leader-loop")
        monitor = asyncio.create_task(self._monitor(), name="control-plane-monitor")
        log.info("controller %s: front on http://%s:%d, agents on %s:%d", self.c.name,
                 self.c.front_host, self.c.front_port, self.cfg.listen_ip, self.cfg.port)
        await stop.wait()
        self.elector.stop()
        await elector  # ends our term (its work is stopped) and releases the lease
        for t in list(self._term_tasks):
            await t
        announcer.cancel()
        self._announce_term()
        await self.link.close()
        monitor.cancel()
        server.should_exit = True
        await api
        await self.front.aclose()
        self._lease_client.close()
        self._history.close()


def _without_password(conninfo: str) -> str:
    return " ".join(p for p in conninfo.split() if not p.startswith("password="))
