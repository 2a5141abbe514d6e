"""The OpenAPI 3.1 document of the HTTP API, built from the wire models themselves.

Schemas come from the pydantic models (``yadml_common.wire``, and the operator's job models
in ``work_server.job_spec`` and ``work_server.job_status``, whose ``merge`` is a union of the
policies' specs told apart by ``method``), so the document cannot drift from what the
handlers validate; paths and status codes are listed here as the contract (the building
blocks in ``api.openapi_parts``; the token and audit paths in ``api.openapi_access``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from work_server.api.openapi_access import ACCESS_MODELS, access_paths
from work_server.api.openapi_parts import (
    ANY_AUTH,
    HOST_AUTH,
    HOSTS_AUTH,
    JOBS_AUTH,
    OPERATOR_AUTH,
    id_param,
    json_content,
    json_request,
    operation,
)
from work_server.host_status import HostDetail, HostList
from work_server.job_spec import JobSpec
from work_server.job_status import JobList, JobStatus
from yadml_common import __version__
from yadml_common import wire as w

_MODELS: list[type[BaseModel]] = [
    w.ErrorBody,
    w.HostRegisterRequest,
    w.HostRegisterResponse,
    w.WorkRequest,
    w.WorkResponse,
    w.FailureReport,
    w.HeartbeatRequest,
    w.HeartbeatResponse,
    w.UploadAccepted,
    JobSpec,
    JobStatus,
    JobList,
    w.ServerStatus,
    w.TrainReport,
    w.ProjectInfo,
    w.HostBanStatus,
    w.HostRecord,
    w.DisplayNameUpdate,
    HostList,
    *ACCESS_MODELS,
]


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    p = w.API_PREFIX
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    paths: dict[str, Any] = {
        f"{p}/project": {
            "get": operation(
                "Project name and Ed25519 public keys (clients pin them when attaching)",
                ok={"200": json_content(w.ProjectInfo)},
            )
        },
        f"{p}/hosts": {
            "post": operation(
                "Register a volunteer host",
                ok={"201": json_content(w.HostRegisterResponse, "Registered")},
                errors=("400", "413", "422", "429"),
                body=json_request(w.HostRegisterRequest),
            ),
            "get": operation(
                "Every host with its private name, counters and trust per runtime",
                ok={"200": json_content(HostList)},
                errors=("401",),
                security=OPERATOR_AUTH,
            ),
        },
        f"{p}/hosts/me": {
            "get": operation(
                "The calling host's own record (its private name, counters, credit)",
                ok={"200": json_content(w.HostRecord)},
                errors=("401", "403"),
                security=HOST_AUTH,
            ),
            "patch": operation(
                "Choose, change or (null) withdraw the calling host's public display name",
                ok={"200": json_content(w.HostRecord)},
                errors=("400", "401", "403", "413", "422"),
                body=json_request(w.DisplayNameUpdate),
                security=HOST_AUTH,
            ),
        },
        f"{p}/hosts/{{host_id}}": {
            "get": operation(
                "One host with its private name, counters and trust per runtime",
                ok={"200": json_content(HostDetail)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[id_param("host_id")],
            )
        },
        f"{p}/work": {
            "post": operation(
                "Ask for work units (each signed; send upload.grant as X-Upload-Grant)",
                ok={"200": json_content(w.WorkResponse)},
                errors=("400", "401", "403", "413", "422", "429"),
                body=json_request(w.WorkRequest),
                security=HOST_AUTH,
            )
        },
        f"{p}/blobs/{{sha256}}": {
            "get": operation(
                "Download an input blob (content-addressed; ETag, Range)",
                ok={
                    "200": {"description": "The blob", "content": octets},
                    "206": {"description": "Part of the blob", "content": octets},
                    "304": {"description": "Not modified"},
                },
                errors=("400", "401", "403", "404"),
                security=ANY_AUTH,
                params=[
                    {
                        "name": "sha256",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    }
                ],
            )
        },
        f"{p}/results/{{result_id}}": {
            "put": operation(
                "Upload trained weights (one safetensors file with a report in __metadata__)",
                ok={"200": json_content(w.UploadAccepted)},
                errors=("400", "401", "403", "404", "409", "410", "413", "422"),
                body=octets,
                security=HOST_AUTH,
                params=[
                    id_param("result_id"),
                    {
                        # a header, never a query parameter: URLs end up in logs
                        "name": w.UPLOAD_GRANT_HEADER,
                        "in": "header",
                        "required": True,
                        "description": "the work unit's upload.grant",
                        "schema": {"type": "string", "maxLength": 512},
                    },
                ],
            )
        },
        f"{p}/results/{{result_id}}/failure": {
            "post": operation(
                "Report that a result could not be computed",
                ok={
                    "200": {
                        "description": "Recorded",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "result_id": {"type": "integer"},
                                        "recorded": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    }
                },
                errors=("400", "401", "403", "404", "409", "410", "413", "422"),
                body=json_request(w.FailureReport),
                security=HOST_AUTH,
                params=[id_param("result_id")],
            )
        },
        f"{p}/hosts/heartbeat": {
            "post": operation(
                "Report progress; learn which units to abort",
                ok={"200": json_content(w.HeartbeatResponse)},
                errors=("400", "401", "403", "413", "422"),
                body=json_request(w.HeartbeatRequest),
                security=HOST_AUTH,
            )
        },
        f"{p}/hosts/{{host_id}}/ban": {
            "post": operation(
                "Ban a host: revoke its unfinished work; 403 host_banned but on heartbeats",
                ok={"200": json_content(w.HostBanStatus)},
                errors=("400", "401", "404"),
                security=HOSTS_AUTH,
                params=[id_param("host_id")],
            )
        },
        f"{p}/hosts/{{host_id}}/unban": {
            "post": operation(
                "Lift a host's ban",
                ok={"200": json_content(w.HostBanStatus)},
                errors=("400", "401", "404"),
                security=HOSTS_AUTH,
                params=[id_param("host_id")],
            )
        },
        f"{p}/jobs": {
            "post": operation(
                "Start a training job",
                ok={"201": json_content(JobStatus, "Created")},
                errors=("400", "401", "409", "413", "422"),
                body=json_request(JobSpec),
                security=JOBS_AUTH,
            ),
            "get": operation(
                "List jobs",
                ok={"200": json_content(JobList)},
                errors=("401",),
                security=OPERATOR_AUTH,
            ),
        },
        f"{p}/jobs/{{job_id}}": {
            "get": operation(
                "Job status with per-round metrics",
                ok={"200": json_content(JobStatus)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/cancel": {
            "post": operation(
                "Cancel a job",
                ok={"200": json_content(JobStatus)},
                errors=("400", "401", "404", "409"),
                security=JOBS_AUTH,
                params=[id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/model": {
            "get": operation(
                "Final model weights (safetensors)",
                ok={"200": {"description": "Weights", "content": octets}},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/report/{{name}}": {
            "get": operation(
                "A report file: report.json, accuracy.png or confusion.png",
                ok={
                    "200": {
                        "description": "The file",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                        },
                    }
                },
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[
                    id_param("job_id"),
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            )
        },
        f"{p}/status": {
            "get": operation(
                "Server status: counts, and the top volunteers by the display names they chose",
                ok={"200": json_content(w.ServerStatus)},
            )
        },
        "/healthz": {
            "get": operation(
                "Liveness",
                ok={
                    "200": {
                        "description": "Alive",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics",
                ok={
                    "200": {
                        "description": "Text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
    }
    paths.update(access_paths(p))  # /tokens, /audit
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "YADML work-unit API",
            "version": __version__,
            "description": "BOINC-style work distribution for deep learning.",
        },
        "paths": paths,
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {
                "hostToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "host token from POST /api/v1/hosts",
                },
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an operator's personal API token (yadml-server token "
                    "create; scopes read, jobs, hosts, admin), or the bootstrap operator token "
                    "(YADML_OPERATOR_TOKEN: admin)",
                },
            },
        },
    }


routes = web.RouteTableDef()


@routes.get(f"{w.API_PREFIX}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())
