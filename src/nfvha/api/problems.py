"""Every error as RFC 7807 ProblemDetails (SOL013), never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from nfvha.faults.model import ProblemDetails
from nfvha.model.topology import format_loc

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# A body can hold thousands of mistakes; the first few say what is wrong.
MAX_PROBLEMS = 5


def summarize(lines: Iterable[str], total: int) -> str:
    """The first ``MAX_PROBLEMS`` of ``lines``, and how many more there are of ``total``."""
    shown = list(islice(lines, MAX_PROBLEMS))
    more = f" (and {total - len(shown)} more)" if total > len(shown) else ""
    return "; ".join(shown) + more


def describe_errors(errors: Sequence[Any]) -> str:
    """pydantic's (or FastAPI's) validation errors as one line: field and message."""
    return summarize((f"{format_loc(e['loc'])}: {e['msg']}" for e in errors), len(errors))


def problem(status: int, detail: str, title: str | None = None) -> JSONResponse:
    body = ProblemDetails(status=status, detail=detail, title=title)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        resp = problem(exc.status_code, str(exc.detail))
        if exc.headers:
            resp.headers.update(exc.headers)
        return resp

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400, describe_errors(exc.errors()) or "malformed request",
                       "Bad Request")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, f"internal error: {type(exc).__name__}")
