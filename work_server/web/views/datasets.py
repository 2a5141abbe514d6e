"""Uploading a dataset from the jobs page (``POST /datasets``, a multipart form).

The page only unpacks the form; ``services.datasets.store_uploaded_dataset`` validates,
encodes and stores the file off the event loop. A refused file re-renders the jobs page
with the reason next to the upload form (422); a stored one redirects back to the jobs
page, where it is offered as ``upload:<sha256>`` in the dataset list.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from yarl import URL

from work_server import keys
from work_server.errors import Unprocessable
from work_server.ml.uploaded import DatasetLimits
from work_server.services import audit
from work_server.services.datasets import store_uploaded_dataset
from work_server.web.audit_actor import request_ip, web_actor
from work_server.web.auth import LoggedIn
from work_server.web.guard import operator, posted_form
from work_server.web.views.jobs import render_jobs_page

log = logging.getLogger(__name__)


@operator("form")
async def upload_dataset(request: web.Request, login: LoggedIn) -> web.StreamResponse:
    form = await posted_form(request)
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return await render_jobs_page(request, login, status=422, upload_error="Choose a file.")
    filename = (upload.filename or "upload")[:128]
    label = str(form.get("name", "")).strip()[:64] or filename
    config = request.app[keys.CONFIG]
    try:
        async with request.app[keys.SESSIONMAKER]() as session:
            stored = await store_uploaded_dataset(
                session,
                upload.file,
                filename=filename,
                name=label,
                blobs=request.app[keys.BLOBS],
                limits=DatasetLimits(max_bytes=config.max_request_bytes),
                now=time.time(),
            )
            audit.record(  # the dataset's hash is known once it is stored
                session,
                actor=web_actor(login),
                action=audit.Action.dataset_upload,
                target=f"dataset:{stored.sha256}",
                detail={"name": label, "train": stored.num_train, "test": stored.num_test},
                client_ip=request_ip(request),
                now=time.time(),
            )
            await session.commit()
    except Unprocessable as exc:
        return await render_jobs_page(
            request, login, status=422, upload_error=f"{filename} was refused: {exc.detail}"
        )
    log.info("dataset %s (%s) uploaded by %s", stored.sha256, label, login.operator.username)
    target = URL("/jobs").with_query(
        message=f"Dataset {label} stored: {stored.num_train} train and "
        f"{stored.num_test} test samples."
    )
    raise web.HTTPSeeOther(location=str(target))


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/datasets", upload_dataset, name="web_dataset_upload")
