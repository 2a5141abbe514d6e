"""The OpenAPI 3.1 document of the HTTP API, built from the wire models themselves.

Schemas come from the pydantic models (``yadml_common.wire``, and the operator's job models
in ``work_server.job_spec`` and ``work_server.job_status``, whose ``merge`` is a union of the
policies' specs told apart by ``method``), so the document cannot drift from what the
handlers validate; paths and status codes are listed here as the contract.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

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
    HostList,
]

_ERRORS = {
    "400": "Malformed request (bad JSON, bad id, a credential in the URL)",
    "401": "Missing or invalid token",
    "403": "Forbidden (banned host, not your result, missing/invalid/foreign upload grant)",
    "404": "Not found",
    "409": "Conflict",
    "410": "Gone: no longer wanted, or the upload grant expired",
    "413": "Body too large",
    "422": "Body failed validation",
    "429": "Rate limited: retry after the Retry-After header's seconds",
}

HOST_AUTH: list[dict[str, list[str]]] = [{"hostToken": []}]
OPERATOR_AUTH: list[dict[str, list[str]]] = [{"operatorToken": []}]
ANY_AUTH: list[dict[str, list[str]]] = [{"hostToken": []}, {"operatorToken": []}]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _op(
    summary: str,
    *,
    ok: dict[str, Any],
    errors: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    security: list[dict[str, list[str]]] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": dict(ok)}
    for code in errors:
        op["responses"][code] = _json(w.ErrorBody, _ERRORS[code])
        if code == "429":
            op["responses"][code]["headers"] = {
                "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}
            }
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    op["security"] = security if security is not None else []
    if params:
        op["parameters"] = params
    return op


def _id_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    }


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(m, "validation") for m in _MODELS], ref_template="#/components/schemas/{model}"
    )
    p = w.API_PREFIX
    octets = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    paths: dict[str, Any] = {
        f"{p}/project": {
            "get": _op(
                "Project name and Ed25519 public keys (clients pin them when attaching)",
                ok={"200": _json(w.ProjectInfo)},
            )
        },
        f"{p}/hosts": {
            "post": _op(
                "Register a volunteer host",
                ok={"201": _json(w.HostRegisterResponse, "Registered")},
                errors=("400", "413", "422", "429"),
                body=_json_body(w.HostRegisterRequest),
            ),
            "get": _op(
                "Every host with its private name, counters and trust per runtime",
                ok={"200": _json(HostList)},
                errors=("401",),
                security=OPERATOR_AUTH,
            ),
        },
        f"{p}/hosts/me": {
            "get": _op(
                "The calling host's own record (its private name, counters, credit)",
                ok={"200": _json(w.HostRecord)},
                errors=("401", "403"),
                security=HOST_AUTH,
            )
        },
        f"{p}/hosts/{{host_id}}": {
            "get": _op(
                "One host with its private name, counters and trust per runtime",
                ok={"200": _json(HostDetail)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[_id_param("host_id")],
            )
        },
        f"{p}/work": {
            "post": _op(
                "Ask for work units (each signed; send upload.grant as X-Upload-Grant)",
                ok={"200": _json(w.WorkResponse)},
                errors=("400", "401", "403", "413", "422", "429"),
                body=_json_body(w.WorkRequest),
                security=HOST_AUTH,
            )
        },
        f"{p}/blobs/{{sha256}}": {
            "get": _op(
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
            "put": _op(
                "Upload trained weights (one safetensors file with a report in __metadata__)",
                ok={"200": _json(w.UploadAccepted)},
                errors=("400", "401", "403", "404", "409", "410", "413", "422"),
                body=octets,
                security=HOST_AUTH,
                params=[
                    _id_param("result_id"),
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
            "post": _op(
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
                body=_json_body(w.FailureReport),
                security=HOST_AUTH,
                params=[_id_param("result_id")],
            )
        },
        f"{p}/hosts/heartbeat": {
            "post": _op(
                "Report progress; learn which units to abort",
                ok={"200": _json(w.HeartbeatResponse)},
                errors=("400", "401", "403", "413", "422"),
                body=_json_body(w.HeartbeatRequest),
                security=HOST_AUTH,
            )
        },
        f"{p}/hosts/{{host_id}}/ban": {
            "post": _op(
                "Ban a host: revoke its unfinished work; 403 host_banned but on heartbeats",
                ok={"200": _json(w.HostBanStatus)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[_id_param("host_id")],
            )
        },
        f"{p}/hosts/{{host_id}}/unban": {
            "post": _op(
                "Lift a host's ban",
                ok={"200": _json(w.HostBanStatus)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[_id_param("host_id")],
            )
        },
        f"{p}/jobs": {
            "post": _op(
                "Start a training job",
                ok={"201": _json(JobStatus, "Created")},
                errors=("400", "401", "409", "413", "422"),
                body=_json_body(JobSpec),
                security=OPERATOR_AUTH,
            ),
            "get": _op(
                "List jobs", ok={"200": _json(JobList)}, errors=("401",), security=OPERATOR_AUTH
            ),
        },
        f"{p}/jobs/{{job_id}}": {
            "get": _op(
                "Job status with per-round metrics",
                ok={"200": _json(JobStatus)},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[_id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/cancel": {
            "post": _op(
                "Cancel a job",
                ok={"200": _json(JobStatus)},
                errors=("400", "401", "404", "409"),
                security=OPERATOR_AUTH,
                params=[_id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/model": {
            "get": _op(
                "Final model weights (safetensors)",
                ok={"200": {"description": "Weights", "content": octets}},
                errors=("400", "401", "404"),
                security=OPERATOR_AUTH,
                params=[_id_param("job_id")],
            )
        },
        f"{p}/jobs/{{job_id}}/report/{{name}}": {
            "get": _op(
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
                    _id_param("job_id"),
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
            )
        },
        f"{p}/status": {
            "get": _op("Server status: counts only, no host", ok={"200": _json(w.ServerStatus)})
        },
        "/healthz": {
            "get": _op(
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
            "get": _op(
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
                    "description": "operator token (YADML_OPERATOR_TOKEN)",
                },
            },
        },
    }


routes = web.RouteTableDef()


@routes.get(f"{w.API_PREFIX}/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())
