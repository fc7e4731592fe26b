"""ETSI NFV SOL002/003 VNF fault management interface, ``/vnffm/v1``.

GET /alarms (SOL013 ``filter``), GET /alarms/{id}, PATCH /alarms/{id}
(``application/merge-patch+json`` with ``{"ackState": ...}``; 409 if already in
that state). Methods the standard does not allow answer 405 (FastAPI does that
for every route below), and every error is ProblemDetails.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from nfvha.api.fmfilter import FilterError, matches, parse_filter
from nfvha.api.problems import describe_errors, problem
from nfvha.faults.manager import AlarmManager, AlarmNotFound, AlreadyInState
from nfvha.faults.model import AlarmModifications, FmSubscription, FmSubscriptionRequest
from nfvha.faults.notifier import Notifier
from nfvha.store.base import StoreUnavailable

ALARM_FILTER_ATTRIBUTES = {
    "id", "managedObjectId", "vnfcInstanceIds", "rootCauseFaultyResource/faultyResourceType",
    "rootCauseFaultyResource/faultyResource/resourceId", "eventType", "perceivedSeverity",
    "probableCause", "ackState", "isRootCause", "faultType", "alarmRaisedTime",
    "correlatedAlarmIds",
}
MERGE_PATCH = "application/merge-patch+json"


def _describe(e: ValidationError) -> str:
    return describe_errors(e.errors(include_url=False, include_input=False))


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def vnffm_router(manager: AlarmManager, notifier: Notifier, api_root: str) -> APIRouter:
    router = APIRouter()

    def sub_json(s: FmSubscription) -> dict[str, Any]:
        return s.model_dump(mode="json", by_alias=True, exclude_none=True)

    @router.post("/subscriptions", response_model=None)
    async def subscribe(request: Request) -> Response:
        try:
            req = FmSubscriptionRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return problem(400, _describe(e), "Bad Request")
        try:
            created = notifier.subscribe(req, api_root)
        except ValueError as e:
            return problem(400, str(e), "Bad Request")
        return JSONResponse(sub_json(created), status_code=201,
                            headers={"Location": created.links.self_.href})

    @router.get("/subscriptions", response_model=None)
    async def list_subscriptions() -> Response:
        return _json([sub_json(s) for s in notifier.subscriptions(api_root)])

    @router.get("/subscriptions/{subscription_id}", response_model=None)
    async def get_subscription(subscription_id: str) -> Response:
        found = notifier.get_subscription(subscription_id, api_root)
        if found is None:
            return problem(404, f"no subscription with id {subscription_id!r}", "Not Found")
        return _json(sub_json(found))

    @router.delete("/subscriptions/{subscription_id}", response_model=None)
    async def delete_subscription(subscription_id: str) -> Response:
        if not notifier.unsubscribe(subscription_id):
            return problem(404, f"no subscription with id {subscription_id!r}", "Not Found")
        return Response(status_code=204)

    @router.get("/alarms", response_model=None)
    async def list_alarms(filter: str | None = Query(None, max_length=4096)) -> Response:
        alarms = [a.model_dump(mode="json", by_alias=True, exclude_none=True)
                  for a in manager.all_alarms()]
        if filter:
            try:
                terms = parse_filter(filter, ALARM_FILTER_ATTRIBUTES)
            except FilterError as e:
                return problem(400, str(e), "Bad filter")
            alarms = [a for a in alarms if matches(a, terms)]
        return _json(alarms)

    @router.get("/alarms/{alarm_id}", response_model=None)
    async def get_alarm(alarm_id: str) -> Response:
        try:
            alarm = manager.get(alarm_id)
        except AlarmNotFound:
            return problem(404, f"no alarm with id {alarm_id!r}", "Not Found")
        return _json(alarm.model_dump(mode="json", by_alias=True, exclude_none=True))

    @router.patch("/alarms/{alarm_id}", response_model=None)
    async def patch_alarm(alarm_id: str, request: Request) -> Response:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        if ctype != MERGE_PATCH:
            return problem(415, f"use Content-Type {MERGE_PATCH}, not {ctype or 'none'}",
                           "Unsupported Media Type")
        try:
            # pydantic-core's parser: its limits are errors, where json's were a 500
            # (RecursionError, int_max_str_digits), ADR 0016.
            mods = AlarmModifications.model_validate_json(await request.body())
        except ValidationError as e:
            return problem(400, _describe(e), "Bad Request")
        try:
            manager.acknowledge(alarm_id, mods.ackState)
        except AlarmNotFound:
            return problem(404, f"no alarm with id {alarm_id!r}", "Not Found")
        except AlreadyInState as e:
            return problem(409, str(e), "Conflict")
        except StoreUnavailable as e:
            resp = problem(503, f"the alarm store does not answer: {e}; try again",
                           "Service Unavailable")
            resp.headers["Retry-After"] = "1"
            return resp
        return JSONResponse(mods.model_dump(mode="json"), media_type=MERGE_PATCH)

    return router
