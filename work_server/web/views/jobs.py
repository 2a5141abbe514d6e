"""The jobs pages: the list with the start form, one job's page (and its live fragment),
cancelling, and the downloads (final model, report files).

Starting and cancelling go through ``services.jobs``, as the API's ``/api/v1/jobs`` does;
the form's strings become a ``JobSpec`` in ``web.forms``. A refused start re-renders the
form with the operator's values and the reasons (409 when the running-job limit is
reached, 422 for bad values).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from work_server import keys
from work_server.api.common import int_param, model_download
from work_server.errors import Conflict, Unprocessable
from work_server.services import audit
from work_server.services import jobs as job_service
from work_server.web import forms, queries
from work_server.web.audit_actor import request_ip, web_actor
from work_server.web.auth import CSRF_FIELD, LoggedIn
from work_server.web.guard import operator, posted_form
from work_server.web.render import job_charts, render

log = logging.getLogger(__name__)


async def render_jobs_page(
    request: web.Request,
    login: LoggedIn,
    *,
    status: int = 200,
    errors: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
    upload_error: str = "",
) -> web.Response:
    """The jobs page; also the answer to a refused job form or dataset upload."""
    async with request.app[keys.SESSIONMAKER]() as session:
        job_rows = await queries.jobs(session)
        datasets = await queries.uploaded_datasets(session)
    form_values = forms.defaults()
    if values:
        form_values.update(values)
    return render(
        request,
        "jobs.html",
        {
            "jobs": job_rows,
            "datasets": datasets,
            "builtin_datasets": forms.BUILTIN_DATASETS,
            "upload_prefix": forms.UPLOAD_PREFIX,
            "sections": forms.SECTIONS,
            "all_runtimes": forms.ALL_RUNTIMES,
            "values": form_values,
            "errors": errors or [],
            "upload_error": upload_error,
            "message": request.query.get("message", "")[:200],
            "max_running_jobs": request.app[keys.CONFIG].max_running_jobs,
        },
        status=status,
        login=login,
    )


@operator("page")
async def jobs_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await render_jobs_page(request, login)


@operator("form")
async def start_job(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    form = await posted_form(request)
    runtimes = [str(r) for r in form.getall("runtimes", [])]
    values: dict[str, Any] = {
        k: str(v) for k, v in form.items() if k not in (CSRF_FIELD, "runtimes")
    }
    values["runtimes"] = runtimes
    try:
        spec = forms.parse_job_form(form, runtimes)
    except forms.FormError as exc:
        return await render_jobs_page(
            request, login, status=422, errors=exc.messages, values=values
        )
    try:
        async with request.app[keys.SESSIONMAKER]() as session:
            job = await job_service.start_job(
                session,
                spec,
                max_running_jobs=request.app[keys.CONFIG].max_running_jobs,
                actor=web_actor(login),
                client_ip=request_ip(request),
                now=time.time(),
            )
    except Conflict as exc:
        message = (
            "A job is already running, so this one was not started. Wait for it to finish "
            f"or cancel it first. ({exc.detail})"
        )
        return await render_jobs_page(request, login, status=409, errors=[message], values=values)
    except Unprocessable as exc:
        return await render_jobs_page(
            request, login, status=422, errors=[exc.detail], values=values
        )
    log.info("job %s started from the web pages by %s", job.id, login.operator.username)
    raise web.HTTPSeeOther(location=f"/jobs/{job.id}")


async def _job_context(request: web.Request) -> dict[str, Any]:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        job = await job_service.get_job(session, job_id)
        view = await queries.job_view(session, job)
    runs_dir = request.app[keys.CONFIG].runs_dir / str(job_id)
    reports = [n for n in job_service.REPORT_FILES if (runs_dir / n).is_file()]
    ctx: dict[str, Any] = {
        "v": view,
        "reports": reports,
        "metric_columns": queries.METRIC_COLUMNS,
        "finished": view.job.state in job_service.FINISHED_JOB_STATES,
    }
    ctx.update(job_charts(view, prefix="job"))
    return ctx


@operator("page")
async def job_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "job.html", await _job_context(request), login=login)


@operator("fragment")
async def job_live(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "_job_live.html", await _job_context(request), login=login)


@operator("form")
async def cancel_job(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        audit.record(  # committed by cancel_job, with the cancellation
            session,
            actor=web_actor(login),
            action=audit.Action.job_cancel,
            target=f"job:{job_id}",
            client_ip=request_ip(request),
            now=time.time(),
        )
        await job_service.cancel_job(session, job_id, time.time())
    log.warning("job %s cancelled from the web pages by %s", job_id, login.operator.username)
    raise web.HTTPSeeOther(location=f"/jobs/{job_id}")


@operator("page")
async def job_model(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        sha256 = await job_service.final_model_sha256(session, job_id)
    return model_download(request.app[keys.BLOBS].path(sha256), job_id)


@operator("page")
async def job_report(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    name = request.match_info["name"]
    path = await job_service.report_file(request.app[keys.CONFIG].runs_dir, job_id, name)
    headers = {}
    if name == "report.json":
        headers["Content-Disposition"] = f'attachment; filename="job-{job_id}-report.json"'
    return web.FileResponse(path, headers=headers)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/jobs", jobs_page, name="web_jobs")
    app.router.add_post("/jobs", start_job, name="web_jobs_post")
    app.router.add_get("/jobs/{job_id}", job_page, name="web_job")
    app.router.add_get("/jobs/{job_id}/live", job_live, name="web_job_live")
    app.router.add_post("/jobs/{job_id}/cancel", cancel_job, name="web_job_cancel")
    app.router.add_get("/jobs/{job_id}/model", job_model, name="web_job_model")
    app.router.add_get("/jobs/{job_id}/report/{name}", job_report, name="web_job_report")
