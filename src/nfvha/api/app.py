"""The controller's REST API: inventory, event log, VM/VNFC operations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from itertools import islice
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel

from nfvha.amf.manager import VnfAvailability
from nfvha.amf.ports import PerformedAction, RepairRefused
from nfvha.api.auth import Authenticator
from nfvha.api.doctor import doctor_router
from nfvha.api.limits import install_limits
from nfvha.api.masakari import masakari_router
from nfvha.api.problems import install_problem_handlers
from nfvha.api.tokens import tokens_router
from nfvha.api.vnffm import vnffm_router
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.correlator import Verdict
from nfvha.controller.health import HealthPublisher
from nfvha.controller.hostrepair import HostRepair
from nfvha.controller.view import HostView, InventoryView, StatusView, VmView, VnfcView
from nfvha.controller.vmrepair import VmRepairPolicy, VmRepairStatus
from nfvha.faults.manager import AlarmManager
from nfvha.faults.model import FmNotificationsFilter, HostHealth, NotificationType
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream, sse_response
from nfvha.model.api import ApiLimits
from nfvha.model.auth import AuthConfig
from nfvha.model.events import Event, Kind, StoredEvent
from nfvha.model.topology import Topology
from nfvha.store.tokens import MemoryTokenStore, TokenCheck
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.wire.frames import CommandOp


class OperationResult(BaseModel):
    ok: bool
    host: str
    result: dict[str, Any]


# The inventory listings are pages, in topology order: the next one is named by the
# ``Link: <...>; rel="next"`` header (RFC 8288, as ETSI SOL013 pages), the total is in
# ``X-Total-Count``. Bounded, so one request costs at most a page's work.
PAGE_DEFAULT = 500
PAGE_MAX = 2000
NOT_HEALTHY_DEFAULT = 20
NOT_HEALTHY_MAX = 200
# Names listed in a 404's "valid: ..." hint, at most.
HINT_NAMES = 20

Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1, description="items to skip")]
PAGED: dict[int | str, dict[str, Any]] = {200: {"headers": {
    "Link": {"description": "the next page: `<path?offset=...&limit=...>; rel=\"next\"`"
             " (absent on the last page)", "schema": {"type": "string"}},
    "X-Total-Count": {"description": "items in all pages", "schema": {"type": "integer"}},
}}}
T = TypeVar("T")


def _hint(names: Iterable[str], total: int) -> str:
    """The first few of ``total`` names (without walking the rest)."""
    more = total - HINT_NAMES
    return ", ".join(islice(names, HINT_NAMES)) + (f", ... ({more} more)" if more > 0 else "")


def _page_headers(request: Request, response: Response, total: int, offset: int,
                  limit: int) -> None:
    response.headers["X-Total-Count"] = str(total)
    if offset + limit < total:
        query = {**request.query_params, "offset": str(offset + limit), "limit": str(limit)}
        response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'


def create_app(run_id: str, topology: Topology, view: InventoryView, bus: EventBus,
               agents: AgentServer, alarms: AlarmManager, notifier: Notifier,
               stream: AlarmStream, fm_api_root: str, auth: AuthConfig,
               clock: Clock = SYSTEM_CLOCK, health: HealthPublisher | None = None,
               am_status: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
               host_repair: HostRepair | None = None, *,
               vm_repair: VmRepairPolicy | None = None,
               tokens: TokenCheck | None = None, limits: ApiLimits | None = None) -> FastAPI:
    """``tokens``: check API tokens against, and manage them in, the controller's token
    store (VNFHA-12); without one, an in-memory store of ``auth.tokens`` (not kept).
    ``am_status``: the availability manager's status, asked of the HA director
    (ADR 0014). ``limits``: what a request may be (body size per route, ADR 0016); the
    defaults without."""
    if tokens is None:
        tokens = TokenCheck(MemoryTokenStore(auth.tokens), auth.tokens, clock)
    app = FastAPI(title="nfvha controller", version="0.1.0")
    install_problem_handlers(app)
    app.middleware("http")(Authenticator(auth, tokens).middleware)
    install_limits(app, limits or ApiLimits())
    app.include_router(tokens_router(tokens), prefix="/v1/tokens", tags=["API tokens"])
    app.include_router(vnffm_router(alarms, notifier, fm_api_root), prefix="/vnffm/v1",
                       tags=["ETSI VNF FM"])

    async def ingest(events: list[Event]) -> None:
        # Stored before the monitor is answered; StoreUnavailable -> 503, it retries.
        await bus.publish(events)

    # Existing monitors report into nfvha unchanged: masakari-monitors (instance HA
    # API) and OPNFV Doctor monitors (inspector API at <url>/doctor/events).
    app.include_router(masakari_router(topology, ingest, clock), prefix="/v1",
                       tags=["Masakari-compatible"])
    app.include_router(doctor_router(topology, ingest, clock), prefix="/doctor",
                       tags=["Doctor-compatible"])

    @app.get("/v1/alarms/stream", response_model=None)
    async def alarm_stream() -> Response:
        """Live alarm changes as Server-Sent Events (``event:`` is the ETSI
        notification type, ``data:`` the alarm)."""
        return sse_response(stream, None)

    def host_of_vm(vm: str) -> str:
        try:
            static = topology.vm(vm).host
            # Where it runs now: evacuation moves VMs (ADR 0011).
            return host_repair.host_of(vm) if host_repair is not None else static
        except KeyError:
            valid = _hint((v.name for v in topology.vms), len(topology.vms))
            raise HTTPException(404, f"no VM named '{vm}'; valid: {valid}") from None

    def vm_of_vnfc(vnfc: str) -> str:
        try:
            return topology.component(vnfc)[1].vm
        except KeyError:
            valid = _hint((c.name for _, c in topology.components()), view.component_count())
            raise HTTPException(404, f"no VNFC named '{vnfc}'; valid: {valid}") from None

    async def operate(host: str, op: CommandOp, target: str) -> OperationResult:
        try:
            reply = await agents.command(host, op, target)
        except ConnectionError as e:
            raise HTTPException(503, str(e)) from None
        except TimeoutError:
            raise HTTPException(504, f"agent on {host} did not answer {op} in time") from None
        if not reply.ok:
            raise HTTPException(409, reply.error or "refused by the agent")
        return OperationResult(ok=True, host=host, result=reply.result)

    @app.get("/v1/health")
    async def api_health() -> dict[str, str]:
        return {"status": "ok", "run_id": run_id}

    # One summary at a time: concurrent asks share the one being built (keyed by its
    # limit), so a flood of status requests is not a flood of walks over the inventory.
    summaries: dict[int, asyncio.Future[StatusView]] = {}

    async def off_loop(build: Callable[[], T]) -> T:
        # Built in a worker thread: the views only look up single keys in what the
        # loop updates (see controller/view.py), and the loop goes on meanwhile.
        return await asyncio.to_thread(build)

    @app.get("/v1/status")
    async def status(not_healthy_limit: Annotated[int, Query(
            ge=0, le=NOT_HEALTHY_MAX,
            description="at most this many not-healthy hosts, VMs and VNFCs each")
            ] = NOT_HEALTHY_DEFAULT) -> StatusView:
        """The deployment at a glance: hosts, VMs and VNFCs counted per state, the first
        ones that are not healthy, and the last event id. The full lists are paged at
        ``/v1/hosts``, ``/v1/vms`` and ``/v1/vnfcs``."""
        pending = summaries.get(not_healthy_limit)
        if pending is None:
            pending = asyncio.ensure_future(off_loop(
                lambda: view.summary(run_id, bus.last_id, not_healthy_limit)))
            summaries[not_healthy_limit] = pending
            pending.add_done_callback(lambda _: summaries.pop(not_healthy_limit, None))
        return await asyncio.shield(pending)

    @app.get("/v1/hosts", responses=PAGED)
    async def hosts(request: Request, response: Response, limit: Limit = PAGE_DEFAULT,
                    offset: Offset = 0) -> list[HostView]:
        """Hosts in topology order, a page at a time."""
        _page_headers(request, response, view.host_count(), offset, limit)
        return await off_loop(lambda: view.hosts(offset, limit))

    @app.get("/v1/availability")
    async def availability() -> list[VnfAvailability]:
        """Per VNF (service group): its service units' readiness and who holds each
        service instance, at which epoch (ADR 0008). Kept by the HA director (ADR 0014)."""
        if am_status is None:
            return []
        try:
            found = await am_status()
        except (ConnectionError, TimeoutError) as e:
            raise HTTPException(503, f"the HA director does not answer: {e}") from None
        return [VnfAvailability.model_validate(v) for v in found]

    @app.get("/v1/hosts/health")
    async def hosts_health() -> list[HostHealth]:
        """Health of every compute node (FM-9); changes are notified to subscriptions
        that list HostHealthChangeNotification, and streamed at /v1/hosts/health/stream."""
        return list(health.current.values()) if health is not None else []

    @app.get("/v1/hosts/health/stream", response_model=None)
    async def hosts_health_stream() -> Response:
        return sse_response(stream, FmNotificationsFilter(
            notificationTypes=[NotificationType.HOST_HEALTH_CHANGE]))

    @app.get("/v1/hosts/{name}/health")
    async def host_health(name: str) -> HostHealth:
        if health is None or name not in health.current:
            raise HTTPException(404, f"no host named '{name}'")
        return health.current[name]

    @app.get("/v1/hosts/{name}")
    async def host(name: str) -> HostView:
        found = view.host(name)
        if found is None:
            raise HTTPException(404, f"no host named '{name}'")
        return found

    @app.get("/v1/hosts/{name}/conditions")
    async def conditions(name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
                         ) -> list[dict[str, Any]]:
        if not topology.has_host(name):
            raise HTTPException(404, f"no host named '{name}'")
        return bus.store.host_conditions(name, limit)

    @app.get("/v1/vms", responses=PAGED)
    async def vms(request: Request, response: Response, limit: Limit = PAGE_DEFAULT,
                  offset: Offset = 0,
                  vnf: Annotated[str | None, Query(
                      max_length=64, description="only the VMs of this VNF (its"
                      " components' VMs and their standby VMs)")] = None) -> list[VmView]:
        """VMs in topology order, a page at a time."""
        try:
            total = len(view.vm_specs(vnf))
        except KeyError:
            raise HTTPException(404, f"no VNF named '{vnf}'") from None
        _page_headers(request, response, total, offset, limit)
        return await off_loop(lambda: view.vms(offset, limit, vnf))

    @app.get("/v1/vms/{name}/last-words")
    async def last_words(name: str) -> dict[str, Any]:
        host_of_vm(name)
        ev = bus.store.latest(Kind.VM_LAST_WORDS.value, f"vm/{name}")
        if ev is None:
            raise HTTPException(404, f"VM '{name}' has no recorded last words")
        return ev.details

    @app.get("/v1/vm-repairs")
    async def vm_repairs() -> list[VmRepairStatus]:
        """Every VM's repair policy (its VNF's repair_action, ADR 0010), role in a
        failover pair, pending failure, last snapshot and last repair."""
        return vm_repair.status() if vm_repair is not None else []

    @app.get("/v1/vms/{name}/repair")
    async def vm_repair_status(name: str) -> VmRepairStatus:
        host_of_vm(name)
        if vm_repair is None:
            raise HTTPException(404, "no VM repair policy in this controller")
        return vm_repair.status_of(name)

    async def repair_by_policy(policy: VmRepairPolicy, name: str, host: str,
                               failure: int | None, how: PerformedAction | None
                               ) -> OperationResult:
        try:
            ticket = policy.repair_vm(name, requested_by="api", failure=failure, action=how)
        except RepairRefused as e:
            raise HTTPException(409, str(e)) from None
        if ticket.job is None:
            last = ticket.last.model_dump(mode="json") if ticket.last else None
            return OperationResult(ok=True, host=host, result={"how": ticket.how,
                                                               "outcome": last})
        outcome = await ticket.job.outcome()
        if not outcome.ok:
            raise HTTPException(409, f"repair of VM {name} ({outcome.action}) failed:"
                                     f" {outcome.error}")
        return OperationResult(ok=True, host=host, result={
            "how": ticket.how, "outcome": outcome.model_dump(mode="json")})

    @app.post("/v1/vms/{name}/{action}")
    async def vm_action(
        name: str, action: Literal["start", "stop", "repair", "snapshot"],
        failure: Annotated[int | None, Query(ge=1, description=(
            "repair: the id of the failure event it is about; a repair already under way"
            " is joined, one already done is not done again"))] = None,
        repair_action: Annotated[PerformedAction | None, Query(description=(
            "repair: how, instead of the VNF's configured repair_action"))] = None,
    ) -> OperationResult:
        """``repair`` (VNFHA-5, REC-2, for a VNF or its VNFM): by the VNF's repair
        policy (ADR 0010) - replaced in its initial state (killed first if hung or
        running), restarted from its last snapshot, or failed over to its standby VM;
        the answer says whether this ask ``started`` the repair, ``joined`` one under
        way or found its failure ``resolved``. ``snapshot``: copy its disk now. Repair
        requests are counted per host (UC-9): when several of a host's VMs are
        reported, the host is repaired instead (the answer carries the verdict)."""
        host = host_of_vm(name)
        if action != "repair" and (failure is not None or repair_action is not None):
            raise HTTPException(400, "'failure' and 'repair_action' are for 'repair' only")
        if action == "repair" and host_repair is not None:
            # UC-9: counted against its host; several of a host's VMs -> host repair.
            c = host_repair.vm_repair_requested(name, "api")
            if c.verdict is not Verdict.REPAIR_VM:
                return OperationResult(ok=True, host=host, result={
                    "verdict": c.verdict.value, "reason": c.reason, "vms": list(c.vms)})
        if action == "repair" and vm_repair is not None:
            return await repair_by_policy(vm_repair, name, host, failure, repair_action)
        if action == "start" and vm_repair is not None \
                and (st := vm_repair.status_of(name)).role == "standby":
            # Its VNFCs run in the other VM: a second copy must not start (ADR 0010).
            raise HTTPException(409, f"VM {name} is the cold standby of {st.standby}; it is"
                                     " started by a failover only")
        if action == "snapshot":
            if vm_repair is None:
                return await operate(host, "vm.snapshot", name)
            try:
                return OperationResult(ok=True, host=host, result=await vm_repair.snapshot(name))
            except ConnectionError as e:
                raise HTTPException(503, str(e)) from None
            except TimeoutError:
                raise HTTPException(504, f"agent on {host} did not snapshot in time") from None
            except RuntimeError as e:
                raise HTTPException(409, str(e)) from None
        if action == "repair":
            stopped = await operate(host, "vm.stop", name)
            started = await operate(host, "vm.start", name)
            return OperationResult(ok=True, host=host, result={
                "stopped": stopped.result, "started": started.result})
        op: CommandOp = "vm.start" if action == "start" else "vm.stop"
        return await operate(host, op, name)

    @app.get("/v1/placement")
    async def placement() -> dict[str, str]:
        """Where every VM runs now (VM -> host); evacuations change it (ADR 0011)."""
        if host_repair is None:
            return {v.name: v.host for v in topology.vms}
        return host_repair.placement.as_dict()

    @app.get("/v1/host-repairs")
    async def host_repairs() -> list[dict[str, Any]]:
        """Host repairs since the controller started: fenced, VMs moved or left."""
        return [asdict(r) for r in host_repair.history] if host_repair is not None else []

    @app.get("/v1/vnfcs", responses=PAGED)
    async def vnfcs(request: Request, response: Response, limit: Limit = PAGE_DEFAULT,
                    offset: Offset = 0,
                    vnf: Annotated[str | None, Query(
                        max_length=64, description="only the VNFCs of this VNF")] = None
                    ) -> list[VnfcView]:
        """VNFCs in topology order, a page at a time."""
        try:
            total = len(view.component_specs(vnf))
        except KeyError:
            raise HTTPException(404, f"no VNF named '{vnf}'") from None
        _page_headers(request, response, total, offset, limit)
        return await off_loop(lambda: view.vnfcs(offset, limit, vnf))

    @app.post("/v1/vnfcs/{name}/{action}")
    async def vnfc_action(name: str, action: Literal["start", "stop"]) -> OperationResult:
        op: CommandOp = "vnfc.start" if action == "start" else "vnfc.stop"
        vm = vm_of_vnfc(name)
        # After a failover its VNFCs run in the standby VM (ADR 0010).
        return await operate(host_of_vm(vm_repair.serving_vm(vm) if vm_repair else vm), op,
                             name)

    @app.get("/v1/events")
    async def events(
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=2000)] = 1000,
        kind: Kind | None = None,
        entity: str | None = None,
        host: str | None = None,
        wait: Annotated[float, Query(ge=0, le=60)] = 0,
    ) -> list[StoredEvent]:
        """The event log. With ``wait``, a long poll: returns as soon as there is
        anything after ``after`` (or when ``wait`` seconds have passed)."""
        def query() -> list[StoredEvent]:
            return bus.store.events(after=after, limit=limit,
                                    kind=kind.value if kind else None, entity=entity, host=host)

        found = query()
        end = asyncio.get_running_loop().time() + wait
        seen = max(after, bus.last_id)
        while not found:
            remaining = end - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await bus.wait_after(seen, remaining)
            seen = bus.last_id
            found = query()
        return found

    return app
