"""Handlers of the volunteer side of the API: register, get work, download, upload, report."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from work_server import keys
from work_server.api.common import (
    int_param,
    json_body,
    json_response,
    read_limited,
    wake_transitioner,
)
from work_server.auth import bearer_token
from work_server.blobs import SHA256_RE
from work_server.db.models import Blob, Host
from work_server.errors import BadRequest, NotFound
from work_server.ratelimit import client_ip
from work_server.services import api_tokens, dispatch, hosts, uploads
from work_server.services.hosts import authenticate_host
from work_server.services.principal import Scope, require
from work_server.signing import UploadGrant
from yadml_common.wire import (
    API_PREFIX,
    INPUT_SHARD,
    INPUT_WEIGHTS,
    UPLOAD_GRANT_HEADER,
    FailureReport,
    HeartbeatRequest,
    HeartbeatResponse,
    HostRegisterRequest,
    HostRegisterResponse,
    ProjectInfo,
    TaskConfig,
    UploadAccepted,
    UploadSpec,
    WorkInput,
    WorkRequest,
    WorkResponse,
    WorkUnitAssignment,
)

routes = web.RouteTableDef()


def _url(request: web.Request, path: str) -> str:
    base = request.app[keys.CONFIG].public_url
    return f"{base.rstrip('/')}{path}" if base else path


async def _host(request: web.Request, session: AsyncSession) -> Host:
    return await authenticate_host(session, bearer_token(request), time.time())


def _rate_limit(request: web.Request, name: str, key: str, now: float) -> None:
    request.app[keys.RATE_LIMITS][name].hit(key, now)


def _ip(request: web.Request) -> str:
    return client_ip(request, request.app[keys.CONFIG].trusted_proxies)


@routes.get(f"{API_PREFIX}/project")
async def project(request: web.Request) -> web.Response:
    """The project's name and public keys: what ``yadml-client attach`` pins."""
    info: ProjectInfo = request.app[keys.SIGNER].project_info(time.time())
    return json_response(info)


@routes.post(f"{API_PREFIX}/hosts")
async def register(request: web.Request) -> web.Response:
    _rate_limit(request, "register_ip", _ip(request), time.monotonic())
    body = await json_body(request, HostRegisterRequest)
    async with request.app[keys.SESSIONMAKER]() as session:
        host, token = await hosts.register_host(session, body, time.time())
    assert host.id is not None
    return json_response(HostRegisterResponse(host_id=host.id, host_token=token), status=201)


@routes.post(f"{API_PREFIX}/work")
async def request_work(request: web.Request) -> web.Response:
    config = request.app[keys.CONFIG]
    _rate_limit(request, "work_ip", _ip(request), time.monotonic())
    body = await json_body(request, WorkRequest, allow_empty=True)
    now = time.time()
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await _host(request, session)
        assert host.id is not None
        _rate_limit(request, "work_host", str(host.id), time.monotonic())
        claimed = await dispatch.claim_work(
            session, host, max_units=body.max_units, runtimes=body.runtimes, now=now
        )
        retry_after = 0.0 if claimed else await request.app[keys.POLL_PACER].interval(session, now)
    blobs = request.app[keys.BLOBS]
    signer = request.app[keys.SIGNER]
    grants = request.app[keys.UPLOAD_GRANTS]
    units = []
    for c in claimed:
        wu = c.workunit
        inputs = [
            WorkInput(
                name=name,
                sha256=sha,
                size=blobs.size(sha),
                url=_url(request, f"{API_PREFIX}/blobs/{sha}"),
            )
            for name, sha in ((INPUT_SHARD, wu.shard_sha256), (INPUT_WEIGHTS, wu.weights_sha256))
        ]
        grant = grants.issue(
            UploadGrant(
                result_id=c.result_id,
                host_id=host.id,
                max_bytes=wu.max_output_bytes,
                expires=c.deadline + config.upload_grant_grace_s,
            )
        )
        assignment = WorkUnitAssignment(
            result_id=c.result_id,
            workunit_id=wu.id or 0,
            job_id=wu.job_id,
            round=c.round_number,
            deadline=datetime.fromtimestamp(c.deadline, tz=UTC),
            runtime=c.runtime,
            inputs=inputs,
            task=TaskConfig.model_validate(wu.task),
            # the grant is a credential: it travels in the X-Upload-Grant header, never in
            # the URL (URLs end up in proxy and access logs)
            upload=UploadSpec(
                url=_url(request, f"{API_PREFIX}/results/{c.result_id}"),
                grant=grant,
                max_bytes=wu.max_output_bytes,
            ),
            image={"docker": config.worker_image, "vm": config.vm_image}.get(c.runtime),
        )
        units.append(signer.sign(assignment))
    request.app[keys.METRICS].dispatched.inc(len(units))
    return json_response(WorkResponse(units=units, retry_after_s=retry_after))


@routes.get(f"{API_PREFIX}/blobs/{{sha256}}")
async def get_blob(request: web.Request) -> web.StreamResponse:
    sha = request.match_info["sha256"]
    if not SHA256_RE.match(sha):
        raise BadRequest("blob names are 64 lowercase hex digits (sha256)", code="bad_blob_name")
    token = bearer_token(request)
    config = request.app[keys.CONFIG]
    async with request.app[keys.SESSIONMAKER]() as session:
        if api_tokens.is_operator_token(token, bootstrap_token=config.operator_token):
            operator = await api_tokens.authenticate(
                session, token, bootstrap_token=config.operator_token, now=time.time()
            )
            require(operator, Scope.read)
        else:
            await authenticate_host(session, token, time.time())
        known = await session.get(Blob, sha)
    path = request.app[keys.BLOBS].path(sha)
    if known is None or not path.is_file():
        raise NotFound(f"no blob {sha}")
    etag = f'"{sha}"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    response = web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})
    response[BLOB_ETAG] = etag  # set by blob_etag_hook once FileResponse has chosen its own
    response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


BLOB_ETAG = web.ResponseKey("blob_etag", str)


async def blob_etag_hook(request: web.Request, response: web.StreamResponse) -> None:
    """Blobs are content-addressed, so their strong validator is the sha256 itself
    (aiohttp's FileResponse would otherwise send one made of mtime and size)."""
    etag = response.get(BLOB_ETAG)
    if etag is not None:
        response.headers["ETag"] = etag


@routes.put(f"{API_PREFIX}/results/{{result_id}}")
async def upload_result(request: web.Request) -> web.Response:
    result_id = int_param(request, "result_id")
    app = request.app
    async with app[keys.SESSIONMAKER]() as session:
        host = await _host(request, session)
        assert host.id is not None
        # only from the header: a ``?grant=`` never gets here (url_credentials refuses it)
        grant = app[keys.UPLOAD_GRANTS].check(
            request.headers.get(UPLOAD_GRANT_HEADER),
            result_id=result_id,
            host_id=host.id,
            content_length=request.content_length,
            now=time.time(),
        )
        target = await uploads.prepare_upload(session, host, result_id)
        limit = min(grant.max_bytes, target.workunit.max_output_bytes)
        # free the (single, for SQLite) connection while the body arrives: a slow volunteer
        # must not hold the database. Nothing is written yet; keep the loaded rows detached.
        session.expunge_all()
        await session.rollback()
        body = await read_limited(request, limit)
        sha, duplicate, late = await uploads.accept_upload(
            session,
            target,
            body,
            blobs=app[keys.BLOBS],
            specs=app[keys.WEIGHTS_SPECS],
            now=time.time(),
        )
    if not duplicate:
        wake_transitioner(app)
        app[keys.METRICS].uploaded.labels(str(late).lower()).inc()
        app[keys.METRICS].upload_bytes.inc(len(body))
    return json_response(
        UploadAccepted(result_id=result_id, sha256=sha, duplicate=duplicate, late=late)
    )


@routes.post(f"{API_PREFIX}/results/{{result_id}}/failure")
async def report_failure(request: web.Request) -> web.Response:
    result_id = int_param(request, "result_id")
    body = await json_body(request, FailureReport)
    async with request.app[keys.SESSIONMAKER]() as session:
        host = await _host(request, session)
        recorded = await uploads.report_failure(session, host, result_id, body, time.time())
    if recorded:
        wake_transitioner(request.app)
        request.app[keys.METRICS].failures.labels(body.reason).inc()
    return web.json_response({"result_id": result_id, "recorded": recorded})


@routes.post(f"{API_PREFIX}/hosts/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    body = await json_body(request, HeartbeatRequest, allow_empty=True)
    async with request.app[keys.SESSIONMAKER]() as session:
        # a banned host is answered here (and only here): abort everything, its work is revoked
        host = await authenticate_host(
            session, bearer_token(request), time.time(), allow_banned=True
        )
        abort = await hosts.heartbeat(session, host, body, time.time())
    return json_response(HeartbeatResponse(abort=abort))
