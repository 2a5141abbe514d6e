"""Handlers of the web pages (HTML, server-rendered with aiohttp-jinja2).

Public: ``/server-status`` (like BOINC's server status page), ``/login``.
Operator (web session): ``/dashboard``, ``/jobs``, ``/jobs/{id}``, ``/hosts`` and their forms.
Each live part of a page has a ``.../live`` twin that returns just that HTML fragment;
``static/live.js`` polls it and swaps it in, so the pages update without a reload and read
fine without JavaScript.

Access rules (``@operator``): a page without a session redirects to ``/login?next=...``;
a form post or a fragment without a session answers 401; a form post without the session's
CSRF token answers 403. Domain errors become HTML error pages here (the API's error
middleware only knows JSON).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy
from sqlmodel import select
from yarl import URL

from work_server import keys
from work_server.api.common import int_param
from work_server.db.models import Host, Operator, UploadedDataset
from work_server.errors import Conflict, DomainError, NotFound, Unprocessable
from work_server.ml.uploaded import DatasetLimits, InvalidDataset, encode_dataset, parse_upload
from work_server.rounds import ensure_blob_row
from work_server.services import jobs as job_service
from work_server.web import charts, forms, queries
from work_server.web.auth import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Access,
    LoggedIn,
    csrf_ok,
    current_login,
    end_session,
    new_login_csrf,
    safe_next,
    set_cookie,
    start_session,
    web_auth,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LoginHandler = Callable[[web.Request, LoggedIn], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


# ----------------------------------------------------------------------------- rendering


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    s = max(0.0, time.time() - ts)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


FILTERS: dict[str, Callable[..., str]] = {"ago": _ago, "when": _when, "filesize": _bytes}


def render(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    login: LoggedIn | None = None,
) -> web.Response:
    ctx: dict[str, Any] = {
        "login": login,
        "csrf_token": login.web_session.csrf_token if login else "",
        "csrf_field": CSRF_FIELD,
        "path": request.path,
        "now": time.time(),
    }
    ctx.update(context or {})
    response = aiohttp_jinja2.render_template(template, request, ctx, status=status)
    response.headers.update(SECURITY_HEADERS)
    if login is not None:
        response.headers["Cache-Control"] = "no-store"
    return response


def error_page(
    request: web.Request, status: int, title: str, detail: str, login: LoggedIn | None = None
) -> web.Response:
    return render(
        request,
        "error.html",
        {"title": title, "detail": detail, "status": status},
        status=status,
        login=login,
    )


def operator(access: Access) -> Callable[[LoginHandler], Handler]:
    """Require a web session (and, for forms, its CSRF token); domain errors become HTML."""

    def wrap(handler: LoginHandler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            login = await current_login(request)
            if login is None:
                if access == "page":
                    target = URL("/login").with_query(next=request.path_qs)
                    raise web.HTTPSeeOther(location=str(target))
                return error_page(request, 401, "Login required", "Log in to use this form.")
            if access == "form":
                sent = request.headers.get("X-CSRF-Token")
                if sent is None:
                    form = await _form(request)
                    sent = str(form.get(CSRF_FIELD, ""))
                if not csrf_ok(login.web_session.csrf_token, sent):
                    return error_page(
                        request,
                        403,
                        "Form refused",
                        "The form's security token is missing or stale. Reload the page and "
                        "try again.",
                        login,
                    )
            try:
                return await handler(request, login)
            except DomainError as exc:
                return error_page(
                    request, exc.status, exc.code.replace("_", " "), exc.detail, login
                )

        return wrapped

    return wrap


_FORM_KEY: web.RequestKey[MultiDictProxy[Any]] = web.RequestKey("yadml_web_form")


async def _form(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form (read once per request; multipart bodies included)."""
    if _FORM_KEY not in request:
        request[_FORM_KEY] = await request.post()
    form: MultiDictProxy[Any] = request[_FORM_KEY]
    return form


# ----------------------------------------------------------------------------- public pages


@routes.get("/", name="web_root")
async def root(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    raise web.HTTPSeeOther(location="/dashboard" if login else "/server-status")


@routes.get("/login", name="web_login")
async def login_page(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    if login is not None:
        raise web.HTTPSeeOther(location=safe_next(request.query.get("next")))
    return _login_form(request, status=200)


def _login_form(
    request: web.Request, *, status: int, error: str = "", username: str = ""
) -> web.Response:
    token = new_login_csrf()
    response = render(
        request,
        "login.html",
        {
            "login_csrf": token,
            "error": error,
            "username": username,
            "next": safe_next(request.query.get("next")),
            "logged_out": "logged_out" in request.query,
        },
        status=status,
    )
    response.headers["Cache-Control"] = "no-store"
    set_cookie(response, request, LOGIN_CSRF_COOKIE, token)
    return response


@routes.post("/login", name="web_login_post")
async def login_post(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), form.get(CSRF_FIELD)):
        return error_page(
            request,
            403,
            "Form refused",
            "The login form's security token is missing or stale. Reload the page and retry.",
        )
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    auth = web_auth(request)
    throttle = auth.throttle
    login_keys = [f"user:{username.lower()}", f"addr:{request.remote or '?'}"]
    owed = throttle.delay_for(login_keys)
    if owed > 0:  # earlier failures: every further attempt waits first
        await throttle.sleep(owed)
    sessionmaker = request.app[keys.SESSIONMAKER]
    async with sessionmaker() as session:
        op = (
            await session.exec(select(Operator).where(Operator.username == username))
        ).one_or_none()
        ok = await auth.passwords.verify(op.password_hash if op else None, password)
        if not ok or op is None:
            delay = throttle.failed(login_keys)
            log.warning("failed web login for %r from %s", username, request.remote)
            await throttle.sleep(delay)
            return _login_form(
                request, status=401, error="Wrong user name or password.", username=username
            )
        throttle.succeeded(username.lower())
        config = request.app[keys.CONFIG]
        token, _ = await start_session(session, op, time.time(), config.web_session_ttl_s)
    response = web.HTTPSeeOther(location=safe_next(str(form.get("next", "")) or None))
    set_cookie(response, request, SESSION_COOKIE, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/")
    raise response


@routes.post("/logout", name="web_logout")
@operator("form")
async def logout(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    await end_session(request)
    response = web.HTTPSeeOther(location="/login?logged_out=1")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def _status_context(request: web.Request) -> dict[str, Any]:
    async with request.app[keys.SESSIONMAKER]() as session:
        page = await queries.status_page(session, now=time.time())
    return {"status": page}


@routes.get("/server-status", name="web_status")
async def server_status_page(request: web.Request) -> web.StreamResponse:
    login = await current_login(request)
    return render(request, "status.html", await _status_context(request), login=login)


@routes.get("/server-status/live", name="web_status_live")
async def server_status_live(request: web.Request) -> web.StreamResponse:
    return render(request, "_status_live.html", await _status_context(request))


# ----------------------------------------------------------------------------- dashboard


async def _dashboard_context(request: web.Request) -> dict[str, Any]:
    async with request.app[keys.SESSIONMAKER]() as session:
        data = await queries.dashboard(session, now=time.time())
    ctx: dict[str, Any] = {"d": data, "metric_columns": queries.METRIC_COLUMNS}
    ctx.update(_charts(data.view, prefix="dash"))
    return ctx


def _charts(view: queries.JobView | None, *, prefix: str) -> dict[str, Any]:
    if view is None:
        return {"chart": None, "heatmap": None}
    ev = view.evaluated
    chart = charts.accuracy_loss_chart(
        [r.number for r in ev],
        [r.metrics.get("accuracy", 0.0) for r in ev],
        [r.metrics.get("loss", 0.0) for r in ev],
        total_rounds=view.spec.rounds,
        chart_id=f"{prefix}-accuracy-chart",
    )
    heatmap = (
        charts.confusion_heatmap(view.confusion, chart_id=f"{prefix}-confusion-heatmap")
        if view.confusion
        else None
    )
    return {"chart": chart, "heatmap": heatmap}


@routes.get("/dashboard", name="web_dashboard")
@operator("page")
async def dashboard(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "dashboard.html", await _dashboard_context(request), login=login)


@routes.get("/dashboard/live", name="web_dashboard_live")
@operator("fragment")
async def dashboard_live(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "_dashboard_live.html", await _dashboard_context(request), login=login)


# ----------------------------------------------------------------------------- hosts


@routes.get("/hosts", name="web_hosts")
@operator("page")
async def hosts_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    async with request.app[keys.SESSIONMAKER]() as session:
        rows = await queries.hosts(session)
    return render(
        request,
        "hosts.html",
        {"hosts": rows, "message": request.query.get("message", "")[:200]},
        login=login,
    )


async def _set_banned(request: web.Request, banned: bool) -> web.StreamResponse:
    host_id = int_param(request, "host_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await session.get(Host, host_id)
        if host is None:
            raise NotFound(f"no host {host_id}")
        host.banned = banned
        session.add(host)
        await session.commit()
        name = host.name
    verb = "banned" if banned else "unbanned"
    log.warning("host %s (%s) %s from the web pages", host_id, name, verb)
    target = URL("/hosts").with_query(message=f"Host {host_id} ({name}) {verb}.")
    raise web.HTTPSeeOther(location=str(target))


@routes.post("/hosts/{host_id}/ban", name="web_host_ban")
@operator("form")
async def ban_host(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _set_banned(request, True)


@routes.post("/hosts/{host_id}/unban", name="web_host_unban")
@operator("form")
async def unban_host(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _set_banned(request, False)


# ----------------------------------------------------------------------------- jobs


async def _jobs_page(
    request: web.Request,
    login: LoggedIn,
    *,
    status: int = 200,
    errors: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
    upload_error: str = "",
) -> web.Response:
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


@routes.get("/jobs", name="web_jobs")
@operator("page")
async def jobs_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return await _jobs_page(request, login)


@routes.post("/jobs", name="web_jobs_post")
@operator("form")
async def start_job(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    form = await _form(request)
    runtimes = [str(r) for r in form.getall("runtimes", [])]
    values: dict[str, Any] = {
        k: str(v) for k, v in form.items() if k not in (CSRF_FIELD, "runtimes")
    }
    values["runtimes"] = runtimes
    try:
        spec = forms.parse_job_form(form, runtimes)
    except forms.FormError as exc:
        return await _jobs_page(request, login, status=422, errors=exc.messages, values=values)
    try:
        async with request.app[keys.SESSIONMAKER]() as session:
            job = await job_service.submit_job(
                session,
                spec,
                max_running_jobs=request.app[keys.CONFIG].max_running_jobs,
                now=time.time(),
            )
    except Conflict as exc:
        message = (
            "A job is already running, so this one was not started. Wait for it to finish "
            f"or cancel it first. ({exc.detail})"
        )
        return await _jobs_page(request, login, status=409, errors=[message], values=values)
    except Unprocessable as exc:
        return await _jobs_page(request, login, status=422, errors=[exc.detail], values=values)
    log.info("job %s started from the web pages by %s", job.id, login.operator.username)
    raise web.HTTPSeeOther(location=f"/jobs/{job.id}")


async def _job_context(request: web.Request) -> dict[str, Any]:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        job = await job_service.get_job(session, job_id)
        view = await queries.job_view(session, job)
    runs_dir = request.app[keys.CONFIG].runs_dir / str(job_id)
    reports = [
        n for n in ("report.json", "accuracy.png", "confusion.png") if (runs_dir / n).is_file()
    ]
    ctx: dict[str, Any] = {
        "v": view,
        "reports": reports,
        "metric_columns": queries.METRIC_COLUMNS,
        "finished": view.job.state in ("completed", "failed", "cancelled"),
    }
    ctx.update(_charts(view, prefix="job"))
    return ctx


@routes.get("/jobs/{job_id}", name="web_job")
@operator("page")
async def job_page(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "job.html", await _job_context(request), login=login)


@routes.get("/jobs/{job_id}/live", name="web_job_live")
@operator("fragment")
async def job_live(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    return render(request, "_job_live.html", await _job_context(request), login=login)


@routes.post("/jobs/{job_id}/cancel", name="web_job_cancel")
@operator("form")
async def cancel_job(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        await job_service.cancel_job(session, job_id, time.time())
    log.warning("job %s cancelled from the web pages by %s", job_id, login.operator.username)
    raise web.HTTPSeeOther(location=f"/jobs/{job_id}")


@routes.get("/jobs/{job_id}/model", name="web_job_model")
@operator("page")
async def job_model(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    async with request.app[keys.SESSIONMAKER]() as session:
        job = await job_service.get_job(session, job_id)
    if job.state != "completed" or job.model_sha256 is None:
        raise NotFound(f"job {job_id} has no final model (state {job.state})", code="no_model")
    return web.FileResponse(
        request.app[keys.BLOBS].path(job.model_sha256),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="job-{job_id}-model.safetensors"',
        },
    )


@routes.get("/jobs/{job_id}/report/{name}", name="web_job_report")
@operator("page")
async def job_report(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    job_id = int_param(request, "job_id")
    name = request.match_info["name"]
    if name not in ("report.json", "accuracy.png", "confusion.png"):
        raise NotFound("report files are report.json, accuracy.png and confusion.png")
    path = request.app[keys.CONFIG].runs_dir / str(job_id) / name
    if not path.is_file():
        raise NotFound(f"job {job_id} has no {name} yet")
    headers = {}
    if name == "report.json":
        headers["Content-Disposition"] = f'attachment; filename="job-{job_id}-report.json"'
    return web.FileResponse(path, headers=headers)


# ----------------------------------------------------------------------------- datasets


@routes.post("/datasets", name="web_dataset_upload")
@operator("form")
async def upload_dataset(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    form = await _form(request)
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return await _jobs_page(request, login, status=422, upload_error="Choose a file.")
    config = request.app[keys.CONFIG]
    limits = DatasetLimits(max_bytes=config.max_request_bytes)
    data = upload.file.read(limits.max_bytes + 1)
    filename = (upload.filename or "upload")[:128]
    label = str(form.get("name", "")).strip()[:64] or filename
    try:
        dataset = parse_upload(filename, data, limits)
    except InvalidDataset as exc:
        return await _jobs_page(
            request, login, status=422, upload_error=f"{filename} was refused: {exc}"
        )
    blob = encode_dataset(dataset)
    blobs = request.app[keys.BLOBS]
    sha = blobs.put(blob)
    now = time.time()
    async with request.app[keys.SESSIONMAKER]() as session:
        await ensure_blob_row(session, sha, len(blob), "dataset", now)
        if await session.get(UploadedDataset, sha) is None:
            session.add(
                UploadedDataset(
                    sha256=sha,
                    name=label,
                    size=len(blob),
                    num_train=len(dataset.train_labels),
                    num_test=len(dataset.test_labels),
                    created_at=now,
                )
            )
        await session.commit()
    log.info("dataset %s (%s) uploaded by %s", sha, label, login.operator.username)
    target = URL("/jobs").with_query(
        message=f"Dataset {label} stored: {len(dataset.train_labels)} train and "
        f"{len(dataset.test_labels)} test samples."
    )
    raise web.HTTPSeeOther(location=str(target))
