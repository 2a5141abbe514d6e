"""Handlers of the operator side: jobs, host bans, server status, health and metrics.

Every operator endpoint starts with ``authorize(request, scope)`` (``read`` for a GET,
``jobs`` to start or cancel, ``hosts`` to ban or unban) and every state-changing one records
an audit event (``services.audit``) in the action's transaction where the target is known
beforehand.
"""

from __future__ import annotations

import logging
import os
import time
from functools import partial

from aiohttp import web

from work_server import keys
from work_server.api.common import (
    int_param,
    json_body,
    json_response,
    model_download,
    wake_transitioner,
)
from work_server.api.operator_auth import authorize, request_ip
from work_server.job_spec import JobSpec
from work_server.job_status import JobList
from work_server.services import audit, hosts, jobs
from work_server.services.principal import Scope
from work_server.services.status import server_status
from yadml_common.wire import API_PREFIX, HostBanStatus

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.post(f"{API_PREFIX}/jobs")
async def submit_job(request: web.Request) -> web.Response:
    principal = await authorize(request, Scope.jobs)
    spec = await json_body(request, JobSpec)
    async with request.app[keys.SESSIONMAKER]() as session:
        job = await jobs.start_job(
            session,
            spec,
            max_running_jobs=request.app[keys.CONFIG].max_running_jobs,
            actor=principal,
            client_ip=request_ip(request),
            now=time.time(),
        )
        status = await jobs.job_status(session, job)
    return json_response(status, status=201)


@routes.get(f"{API_PREFIX}/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    await authorize(request, Scope.read)
    async with request.app[keys.SESSIONMAKER]() as session:
        items = [await jobs.job_status(session, j) for j in await jobs.list_jobs(session)]
    return json_response(JobList(jobs=items))


@routes.get(f"{API_PREFIX}/jobs/{{job_id}}")
async def get_job(request: web.Request) -> web.Response:
    await authorize(request, Scope.read)
    async with request.app[keys.SESSIONMAKER]() as session:
        job = await jobs.get_job(session, int_param(request, "job_id"))
        return json_response(await jobs.job_status(session, job))


@routes.post(f"{API_PREFIX}/jobs/{{job_id}}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    principal = await authorize(request, Scope.jobs)
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        audit.record(  # committed by cancel_job, with the cancellation
            session,
            actor=principal,
            action=audit.Action.job_cancel,
            target=f"job:{job_id}",
            client_ip=request_ip(request),
            now=time.time(),
        )
        job = await jobs.cancel_job(session, job_id, time.time())
        return json_response(await jobs.job_status(session, job))


@routes.get(f"{API_PREFIX}/jobs/{{job_id}}/model")
async def job_model(request: web.Request) -> web.StreamResponse:
    await authorize(request, Scope.read)
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        sha256 = await jobs.final_model_sha256(session, job_id)
    return model_download(request.app[keys.BLOBS].path(sha256), job_id)


@routes.get(f"{API_PREFIX}/jobs/{{job_id}}/report/{{name}}")
async def job_report_file(request: web.Request) -> web.StreamResponse:
    await authorize(request, Scope.read)
    runs_dir = request.app[keys.CONFIG].runs_dir
    path = await jobs.report_file(
        runs_dir, int_param(request, "job_id"), request.match_info["name"]
    )
    return web.FileResponse(path)


async def _set_banned(request: web.Request, banned: bool) -> web.Response:
    principal = await authorize(request, Scope.hosts)
    host_id = int_param(request, "host_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await hosts.ban_host(
            session,
            host_id,
            banned,
            actor=principal,
            client_ip=request_ip(request),
            now=time.time(),
            wake=partial(wake_transitioner, request.app),
        )
    verb = "banned" if banned else "unbanned"
    log.warning("host %d %s by %s (%s)", host_id, verb, principal.operator, principal.via)
    return json_response(HostBanStatus(host_id=host_id, banned=host.banned))


@routes.post(f"{API_PREFIX}/hosts/{{host_id}}/ban")
async def ban_host(request: web.Request) -> web.Response:
    return await _set_banned(request, True)


@routes.post(f"{API_PREFIX}/hosts/{{host_id}}/unban")
async def unban_host(request: web.Request) -> web.Response:
    return await _set_banned(request, False)


@routes.get(f"{API_PREFIX}/status")
async def status(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG]
    async with request.app[keys.SESSIONMAKER]() as session:
        result = await server_status(
            session, now=time.time(), active_window_s=config.host_active_window_s
        )
    return json_response(result)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness, and whether this process runs the daemons (``leader``), waits to take over
    (``standby``) or was started without them (``off``)."""
    scheduler = request.app.get(keys.SCHEDULER)
    role = "off" if scheduler is None else scheduler.role
    return web.json_response({"status": "ok", "daemons": role, "pid": os.getpid()})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG]
    metrics = request.app[keys.METRICS]
    async with request.app[keys.SESSIONMAKER]() as session:
        metrics.observe_status(
            await server_status(
                session, now=time.time(), active_window_s=config.host_active_window_s
            )
        )
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")
