"""A fake work server for the client tests: the volunteer API in a few lines of aiohttp.

It keeps everything in memory and lets tests script failures. It only mimics the HTTP
contract the client relies on; the real server (``work_server``) is covered by the
end-to-end tests.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from yadml_common.signing import b64encode, fingerprint, raw_public_key, sign_assignment
from yadml_common.wire import (
    API_PREFIX,
    INPUT_SHARD,
    INPUT_WEIGHTS,
    UPLOAD_GRANT_HEADER,
    FailureReport,
    HeartbeatRequest,
    HostRegisterRequest,
    HostRegisterResponse,
    ProjectInfo,
    ProjectKey,
    TaskConfig,
    UploadAccepted,
    UploadSpec,
    WorkInput,
    WorkRequest,
    WorkResponse,
    WorkUnitAssignment,
)

TOKEN = "secret-token"


def grant_for(result_id: int) -> str:
    """The fake's upload grant of a unit (shaped like the real ones: ``payload.mac``)."""
    return f"grant-{result_id}.fake-mac"


def _error(status: int, error: str, detail: str = "", **headers: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


class FakeWorkServer:
    """A fake work server with in-memory state (see the module docstring)."""

    def __init__(self) -> None:
        self.url = ""
        self.blobs: dict[str, bytes] = {}
        self.queue: list[WorkUnitAssignment] = []
        self.uploads: dict[int, bytes] = {}
        self.upload_attempts: dict[int, int] = {}
        #: the X-Upload-Grant header of each upload attempt, in order
        self.upload_grants: list[str | None] = []
        self.failures: dict[int, FailureReport] = {}
        self.heartbeats: list[HeartbeatRequest] = []
        #: notified after each heartbeat is recorded, so tests wait on it instead of polling
        self.heartbeat_arrived = asyncio.Condition()
        self.work_requests: list[WorkRequest] = []
        self.registered: list[HostRegisterRequest] = []
        self.abort: set[int] = set()
        self.retry_after_s = 5.0
        #: scripted answers, consumed one per request: (status, error, headers)
        self.work_script: list[tuple[int, str, dict[str, str]]] = []
        self.upload_script: list[tuple[int, str, dict[str, str]]] = []
        self.failure_script: list[tuple[int, str, dict[str, str]]] = []
        self.blob_corruption: set[str] = set()
        self.banned = False
        #: the project's signing key: every unit from add_unit is signed with it
        self.key = Ed25519PrivateKey.generate()
        self.fingerprint = fingerprint(self.key.public_key())
        self.project_keys: list[ProjectKey] = [
            ProjectKey(
                fingerprint=self.fingerprint,
                public_key=b64encode(raw_public_key(self.key.public_key())),
                current=True,
            )
        ]

    # ------------------------------------------------------------------ setup helpers

    def add_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def add_unit(
        self,
        result_id: int,
        *,
        shard: bytes = b"shard-bytes",
        weights: bytes = b"weights-bytes",
        deadline: datetime | None = None,
        max_bytes: int = 1 << 20,
        sign: bool = True,
    ) -> WorkUnitAssignment:
        inputs = []
        for name, data in ((INPUT_SHARD, shard), (INPUT_WEIGHTS, weights)):
            sha = self.add_blob(data)
            inputs.append(
                WorkInput(name=name, sha256=sha, size=len(data), url=f"{API_PREFIX}/blobs/{sha}")
            )
        unit = WorkUnitAssignment(
            result_id=result_id,
            workunit_id=result_id * 10,
            job_id=1,
            round=1,
            deadline=deadline or datetime.now(UTC) + timedelta(hours=1),
            runtime="process",
            inputs=inputs,
            task=TaskConfig(seed=result_id),
            upload=UploadSpec(
                url=f"{API_PREFIX}/results/{result_id}",
                grant=grant_for(result_id),
                max_bytes=max_bytes,
            ),
        )
        if sign:
            unit = sign_assignment(unit, self.key)
        self.queue.append(unit)
        return unit

    # ------------------------------------------------------------------ handlers

    def _authorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "bad token")
        if self.banned:
            return _error(403, "forbidden", "host banned")
        return None

    async def project(self, request: web.Request) -> web.Response:
        info = ProjectInfo(name="fake", fingerprint=self.fingerprint, public_keys=self.project_keys)
        return web.Response(body=info.model_dump_json(), content_type="application/json")

    async def register(self, request: web.Request) -> web.Response:
        body = HostRegisterRequest.model_validate_json(await request.read())
        self.registered.append(body)
        answer = HostRegisterResponse(host_id=len(self.registered), host_token=TOKEN)
        return web.json_response(answer.model_dump(), status=201)

    async def work(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        self.work_requests.append(WorkRequest.model_validate_json(await request.read()))
        if self.work_script:
            status, error, headers = self.work_script.pop(0)
            return _error(status, error, "scripted", **headers)
        wanted = self.work_requests[-1].max_units
        units, self.queue = self.queue[:wanted], self.queue[wanted:]
        answer = WorkResponse(units=units, retry_after_s=self.retry_after_s)
        return web.Response(body=answer.model_dump_json(), content_type="application/json")

    async def blob(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        sha = request.match_info["sha256"]
        if sha not in self.blobs:
            return _error(404, "not_found", sha)
        data = self.blobs[sha]
        if sha in self.blob_corruption:
            data = b"X" + data[1:]
        return web.Response(body=data, headers={"ETag": sha})

    async def upload(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        rid = int(request.match_info["rid"])
        self.upload_attempts[rid] = self.upload_attempts.get(rid, 0) + 1
        self.upload_grants.append(request.headers.get(UPLOAD_GRANT_HEADER))
        if request.query_string:  # like the real server: no credential in a URL
            return _error(400, "credential_in_url", request.query_string)
        if request.headers.get(UPLOAD_GRANT_HEADER) != grant_for(rid):
            return _error(403, "invalid_upload_grant", "send it in X-Upload-Grant")
        data = await request.read()
        if self.upload_script:
            status, error, headers = self.upload_script.pop(0)
            return _error(status, error, "scripted", **headers)
        duplicate = rid in self.uploads
        if duplicate and self.uploads[rid] != data:
            return _error(409, "conflict", "different bytes")
        self.uploads[rid] = data
        answer = UploadAccepted(
            result_id=rid, sha256=hashlib.sha256(data).hexdigest(), duplicate=duplicate
        )
        return web.Response(body=answer.model_dump_json(), content_type="application/json")

    async def failure(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        rid = int(request.match_info["rid"])
        report = FailureReport.model_validate_json(await request.read())
        if self.failure_script:
            status, error, headers = self.failure_script.pop(0)
            return _error(status, error, "scripted", **headers)
        self.failures[rid] = report
        return web.json_response({})

    async def heartbeat(self, request: web.Request) -> web.Response:
        if (denied := self._authorized(request)) is not None:
            return denied
        body = HeartbeatRequest.model_validate_json(await request.read())
        self.heartbeats.append(body)
        async with self.heartbeat_arrived:
            self.heartbeat_arrived.notify_all()
        abort = sorted(u.result_id for u in body.running if u.result_id in self.abort)
        return web.json_response({"abort": abort})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"{API_PREFIX}/project", self.project)
        app.router.add_post(f"{API_PREFIX}/hosts", self.register)
        app.router.add_post(f"{API_PREFIX}/work", self.work)
        app.router.add_get(f"{API_PREFIX}/blobs/{{sha256}}", self.blob)
        app.router.add_put(f"{API_PREFIX}/results/{{rid}}", self.upload)
        app.router.add_post(f"{API_PREFIX}/results/{{rid}}/failure", self.failure)
        app.router.add_post(f"{API_PREFIX}/hosts/heartbeat", self.heartbeat)
        return app


async def serve(fake: FakeWorkServer) -> AsyncIterator[FakeWorkServer]:
    """Run ``fake`` on a loopback port for the duration of a fixture."""
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("/")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()
