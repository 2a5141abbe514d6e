"""Request parsing, JSON answers and the error middleware shared by all handlers."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from work_server import keys
from work_server.daemons import transitioner
from work_server.errors import (
    BadRequest,
    DomainError,
    PayloadTooLarge,
    TooManyRequests,
    Unprocessable,
)
from yadml_common.wire import ErrorBody

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_JSON_BYTES = 1 << 20


def error_response(status: int, error: str, detail: str) -> web.Response:
    body = ErrorBody(error=error, detail=detail).model_dump_json()
    return web.Response(status=status, text=body, content_type="application/json")


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=model.model_dump_json(), content_type="application/json"
    )


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) more than ``limit`` bytes before reading them all."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body of {request.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: web.Request, model: type[M], *, allow_empty: bool = False) -> M:
    raw = await read_limited(request, MAX_JSON_BYTES)
    if not raw.strip() and allow_empty:
        raw = b"{}"
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Unprocessable(f"{where}: {first['msg']}", code="invalid_body") from None


def int_param(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"{name} must be a positive integer")
    return int(raw)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = request.match_info.route.resource
    route_name = route.canonical if route is not None else "unmatched"
    metrics = request.app[keys.METRICS]
    try:
        response = await handler(request)
    except DomainError as exc:
        response = error_response(exc.status, exc.code, exc.detail)
        if exc.status == 413:
            response.force_close()  # do not drain the unread rest of the body
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        if request.path.startswith("/api/v1/results/"):
            metrics.rejected.labels(exc.code).inc()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        for h in ("Allow", "Retry-After"):
            if h in exc.headers:
                response.headers[h] = exc.headers[h]
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(500, "internal_error", "internal server error")
    metrics.requests.labels(route_name, str(response.status)).inc()
    metrics.latency.labels(route_name).observe(time.perf_counter() - started)
    return response


def model_download(path: Path, job_id: int) -> web.FileResponse:
    """A job's final weights as a file download (the API and the pages serve the same)."""
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="job-{job_id}-model.safetensors"',
        },
    )


def wake_transitioner(app: web.Application) -> None:
    """Work units were handed to the transitioner (``transition_time = now``): run it now
    rather than at its next interval (``DaemonScheduler.wake``); nothing without daemons."""
    scheduler = app.get(keys.SCHEDULER)
    if scheduler is not None:
        scheduler.wake(transitioner.NAME)
